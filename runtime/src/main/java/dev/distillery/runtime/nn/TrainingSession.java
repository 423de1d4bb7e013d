package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.kernels.DType;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.distill.TeacherStaging;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * One model, its optimizer, a workspace and a tape: the training step (forward, fused loss,
 * backward, clipping, AdamW) and evaluation on a fixed (batch, time) shape. Token and target
 * batches live in persistent buffers, so a steady loop allocates no native memory.
 *
 * <p>Everything lives where the model's kernels compute. Inputs are written on the host and
 * copied over ({@link #setSequences}, {@link #setWindows}); teacher targets go through a
 * {@link TeacherStaging}; what the caller reads back (losses, logits, sums) comes through the
 * kernels' copies, so the same code trains on the CPU and on a GPU.
 */
public final class TrainingSession implements AutoCloseable {

    /** What one step did. */
    public record StepResult(int step, double loss, double gradNorm, double lr) {
    }

    private final Transformer model;
    private final Kernels kernels;
    private final AdamW optimizer;
    private final LearningRateSchedule schedule;
    private final double maxGradNorm;
    private final int batch;
    private final int time;
    private final Workspace workspace;
    private final Tape tape = new Tape();
    private final DifferentiableOps ops;
    private final Arena ioArena = Arena.ofShared();
    private final Tensor tokens;
    private final Tensor targets;
    private final MemorySegment hostTokens;
    private final MemorySegment hostTargets;
    private final TeacherStaging teacherStaging;
    private MemorySegment hostLogits;
    private Tensor lastLogits;

    public TrainingSession(Transformer model, Kernels kernels, AdamW.Config adam, LearningRateSchedule schedule,
                           double maxGradNorm, int batch, int time) {
        if (time > model.config().contextLength()) {
            throw new IllegalArgumentException("sequence length " + time + " exceeds the model's context " + model.config().contextLength());
        }
        if (model.parameters().kernels() != kernels) {
            throw new IllegalArgumentException("the model's parameters live in the memory of " + model.parameters().kernels().describe()
                    + ", not of " + kernels.describe());
        }
        this.model = model;
        this.kernels = kernels;
        this.workspace = new Workspace(kernels, 1 << 20);
        this.optimizer = new AdamW(model.parameters(), kernels, adam);
        this.schedule = schedule;
        this.maxGradNorm = maxGradNorm;
        this.batch = batch;
        this.time = time;
        this.ops = new DifferentiableOps(kernels, workspace, tape);
        Device device = Device.of(kernels);
        this.tokens = new Tensor("tokens", new int[]{batch, time}, DType.I32, device, kernels.allocate(ioArena, 4L * batch * time), false);
        this.targets = new Tensor("targets", new int[]{batch * time}, DType.I32, device, kernels.allocate(ioArena, 4L * batch * time), false);
        this.hostTokens = ioArena.allocate(4L * batch * time, 64);
        this.hostTargets = ioArena.allocate(4L * batch * time, 64);
        this.teacherStaging = new TeacherStaging(kernels);
    }

    public Transformer model() {
        return model;
    }

    public AdamW optimizer() {
        return optimizer;
    }

    public Workspace workspace() {
        return workspace;
    }

    /**
     * Sets the inputs from host int32 buffers: tokens (batch, time) and targets (batch · time),
     * where -100 masks a position. Ids are checked against the vocabulary (a target may be -100).
     *
     * @throws IllegalArgumentException naming the position of the first id out of range
     */
    public void setInputs(MemorySegment tokenIds, MemorySegment targetIds) {
        int vocab = model.config().vocabSize();
        for (long i = 0; i < (long) batch * time; i++) {
            int id = tokenIds.getAtIndex(ValueLayout.JAVA_INT, i), target = targetIds.getAtIndex(ValueLayout.JAVA_INT, i);
            if (id < 0 || id >= vocab) throw new IllegalArgumentException("token id " + id + " at position " + i + " is outside the vocabulary of " + vocab);
            if (target != DifferentiableOps.IGNORE_INDEX && (target < 0 || target >= vocab)) {
                throw new IllegalArgumentException("target id " + target + " at position " + i + " is outside the vocabulary of " + vocab);
            }
        }
        MemorySegment.copy(tokenIds, 0, hostTokens, 0, hostTokens.byteSize());
        MemorySegment.copy(targetIds, 0, hostTargets, 0, hostTargets.byteSize());
        uploadInputs();
    }

    private void uploadInputs() {
        kernels.copyFromHost(tokens.data(), hostTokens, hostTokens.byteSize());
        kernels.copyFromHost(targets.data(), hostTargets, hostTargets.byteSize());
    }

    /**
     * Fills the buffers from int32 ids (batch, time): tokens = ids, targets = the next id in the
     * same sequence, the last position of each sequence ignored (its next token is unknown).
     *
     * @throws IllegalArgumentException naming the position when an id is outside the vocabulary
     */
    public void setSequences(MemorySegment ids) {
        int vocab = model.config().vocabSize();
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t < time; t++) {
                long i = (long) b * time + t;
                int id = ids.getAtIndex(ValueLayout.JAVA_INT, i);
                if (id < 0 || id >= vocab) {
                    throw new IllegalArgumentException("token id " + id + " at batch row " + b + ", position " + t
                            + " is outside the model's vocabulary of " + vocab);
                }
                hostTokens.setAtIndex(ValueLayout.JAVA_INT, i, id);
                if (t > 0) hostTargets.setAtIndex(ValueLayout.JAVA_INT, i - 1, id);
            }
            hostTargets.setAtIndex(ValueLayout.JAVA_INT, (long) b * time + time - 1, DifferentiableOps.IGNORE_INDEX);
        }
        uploadInputs();
    }

    /**
     * Fills the buffers from {@code batch} windows of {@code time + 1} token ids each
     * (row-major): tokens = window[0, time), targets = window[1, time].
     */
    public void setWindows(int[] windows) {
        int vocab = model.config().vocabSize();
        if (windows.length != batch * (time + 1)) {
            throw new IllegalArgumentException("expected " + batch + " windows of " + (time + 1) + " ids, got " + windows.length + " ids");
        }
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t <= time; t++) {
                int id = windows[b * (time + 1) + t];
                if (id < 0 || id >= vocab) {
                    throw new IllegalArgumentException("token id " + id + " in window " + b + ", position " + t
                            + " is outside the model's vocabulary of " + vocab);
                }
                if (t < time) hostTokens.setAtIndex(ValueLayout.JAVA_INT, (long) b * time + t, id);
                if (t > 0) hostTargets.setAtIndex(ValueLayout.JAVA_INT, (long) b * time + t - 1, id);
            }
        }
        uploadInputs();
    }

    /**
     * Logits (batch·time, vocab) of the token buffer, no tape, readable on the host (copied back
     * from a device); valid until the next call on this session.
     */
    public MemorySegment forwardLogits() {
        resetGraph(false);
        try {
            lastLogits = model.forward(ops, tokens, batch, time);
        } finally {
            tape.setEnabled(true);
        }
        if (kernels.hostAccessible()) return lastLogits.data();
        if (hostLogits == null) hostLogits = ioArena.allocate(lastLogits.byteSize(), 64);
        kernels.copyToHost(hostLogits, lastLogits.data(), lastLogits.byteSize());
        return hostLogits;
    }

    /**
     * Per row of the last {@link #forwardLogits()}: {@code log Σ_j exp(logit_j / temperature)},
     * computed by the fused softmax cross-entropy kernel where the logits live (with the logits
     * scaled by 1/T and target 0, loss + logit_0 / T is the logsumexp). Overwrites those logits:
     * read what else you need from them first.
     */
    public float[] logsumexpOfLastLogits(double temperature) {
        if (lastLogits == null) throw new IllegalStateException("call forwardLogits() first");
        int n = batch * time, v = model.config().vocabSize();
        float s = (float) (1 / temperature);
        float[] first = new float[n];
        try (Arena host = Arena.ofConfined()) {
            for (int r = 0; r < n; r++) {
                first[r] = kernels.hostAccessible() ? lastLogits.data().getAtIndex(ValueLayout.JAVA_FLOAT, (long) r * v)
                        : hostLogits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) r * v);
            }
            kernels.scale(lastLogits.data(), s, (long) n * v);
            MemorySegment zeros = workspace.tensor("lse.targets", DType.I32, n).data();
            kernels.fill(zeros, 0f, n); // int 0 and float 0 share their bits
            MemorySegment losses = workspace.tensor("lse.losses", n).data();
            kernels.softmaxCrossEntropy(losses, lastLogits.data(), zeros, n, v, DifferentiableOps.IGNORE_INDEX, false, 0f);
            MemorySegment l = kernels.hostView(losses, 4L * n, host);
            float[] lse = new float[n];
            for (int r = 0; r < n; r++) lse[r] = l.getAtIndex(ValueLayout.JAVA_FLOAT, r) + first[r] * s;
            return lse;
        } finally {
            lastLogits = null;
        }
    }

    /** Forward, loss, backward, clip, AdamW on the current token and target buffers. */
    public StepResult step() {
        beginStep();
        double loss = backwardCrossEntropy(1f);
        return finishStep(loss);
    }

    /** Zeroes the parameter gradients: the start of one optimizer step of one or more micro-batches. */
    public void beginStep() {
        model.parameters().zeroGrad();
    }

    /**
     * One micro-batch of hard-label training: forward, mean cross-entropy on the target buffer,
     * backward with {@code gradScale} (1/k over k micro-batches); gradients accumulate.
     */
    public double backwardCrossEntropy(float gradScale) {
        resetGraph(true);
        Tensor logits = model.forward(ops, tokens, batch, time);
        DifferentiableOps.Loss loss = ops.crossEntropy(logits, targets, gradScale);
        tape.backward();
        return loss.mean();
    }

    /**
     * One micro-batch of distillation: forward to the hidden states, the chunked LM head + fused
     * distillation loss against {@code teacher} (batch·time rows) with the target buffer as hard
     * labels, backward with {@code gradScale}; gradients accumulate. The teacher's buffers are
     * copied to the device (where there is one) while the forward pass runs; once this returns
     * they are no longer read, so the caller may refill them.
     */
    public DifferentiableOps.DistillLoss backwardDistill(TeacherTargets teacher, DistillOptions options,
                                                         DifferentiableOps.Reduction reduction, int chunkRows, float gradScale) {
        resetGraph(true);
        TeacherTargets staged = teacherStaging.stage(teacher, batch * time);
        Tensor hidden = model.hidden(ops, tokens, batch, time);
        kernels.joinCopies();
        DifferentiableOps.DistillLoss loss = ops.distillationLoss(hidden, model.lmHeadWeight(), staged, targets, options,
                reduction, chunkRows, gradScale);
        tape.backward();
        return loss;
    }

    /**
     * Clips, checks, updates: the end of one optimizer step. When the loss or the gradient norm is
     * not finite, the parameters and moments are left untouched and {@link NonFiniteException} says
     * which step and what went wrong.
     */
    public StepResult finishStep(double loss) {
        double norm = optimizer.clipGradNorm(maxGradNorm);
        int next = optimizer.step() + 1;
        if (!Double.isFinite(loss) || !Double.isFinite(norm)) throw new NonFiniteException(next, loss, norm);
        double lr = schedule.at(next);
        optimizer.update(lr);
        return new StepResult(optimizer.step(), loss, norm, lr);
    }

    /** A step whose loss or gradient norm is NaN or infinite; nothing was updated. */
    public static final class NonFiniteException extends RuntimeException {
        public NonFiniteException(int step, double loss, double gradNorm) {
            super("step " + step + ": loss " + loss + ", gradient norm " + gradNorm
                    + " is not finite; the parameters were not updated");
        }
    }

    private void resetGraph(boolean record) {
        workspace.reset();
        tape.clear();
        tape.setEnabled(record);
    }

    /** Mean cross-entropy of the current buffers without touching gradients or parameters. */
    public double evaluate() {
        resetGraph(false);
        try {
            Tensor logits = model.forward(ops, tokens, batch, time);
            return ops.crossEntropy(logits, targets, 1f).mean();
        } finally {
            tape.setEnabled(true);
        }
    }

    /** Sums over the evaluated rows: hard-label CE, divergence to the teacher, top-1 agreements. */
    public record EvalSums(double ce, double divergence, long agree, long rows, long ceRows) {
        public EvalSums plus(EvalSums o) {
            return new EvalSums(ce + o.ce, divergence + o.divergence, agree + o.agree, rows + o.rows, ceRows + o.ceRows);
        }

        public static EvalSums zero() {
            return new EvalSums(0, 0, 0, 0, 0);
        }
    }

    /**
     * Evaluates the current token/target buffers against {@code teacher} (batch·time rows):
     * the CE on the target buffer (rows whose target is the ignore index count for the divergence
     * and agreement only), the divergence of {@code options} (alpha is ignored), and how many rows'
     * student argmax equals {@code teacherTop1[row]}. Gradients and parameters are untouched.
     */
    public EvalSums evaluateDistill(TeacherTargets teacher, int[] teacherTop1, DistillOptions options, int chunkRows) {
        resetGraph(false);
        try {
            int n = batch * time, d = model.config().channels(), v = model.config().vocabSize();
            TeacherTargets staged = teacherStaging.stage(teacher, n);
            Tensor hidden = model.hidden(ops, tokens, batch, time);
            kernels.joinCopies();
            int chunk = Math.max(1, Math.min(chunkRows, n));
            Tensor logits = workspace.tensor("eval.logits", chunk, v);
            MemorySegment rowCe = workspace.tensor("eval.ce", chunk).data();
            MemorySegment rowDiv = workspace.tensor("eval.div", chunk).data();
            MemorySegment noLabels = workspace.tensor("eval.nolabels", DType.I32, chunk).data();
            kernels.fill(noLabels, 0f, chunk); // labels of 0 (int 0 and float 0 share their bits)
            DistillOptions klOnly = new DistillOptions(options.temperature(), 0f, options.divergence(), options.scaleByTemperatureSquared(),
                    options.topKMode(), options.sparseTemperature(), options.ignoreIndex());
            EvalSums sums = EvalSums.zero();
            try (Arena host = Arena.ofConfined()) {
                MemorySegment hostChunk = kernels.hostAccessible() ? null : host.allocate(logits.byteSize(), 64);
                MemorySegment hostCe = host.allocate(4L * chunk, 64), hostDiv = host.allocate(4L * chunk, 64);
                for (int r0 = 0; r0 < n; r0 += chunk) {
                    int rows = Math.min(chunk, n - r0);
                    kernels.gemm(false, true, rows, v, d, 1f, hidden.data().asSlice(4L * r0 * d), d,
                            model.lmHeadWeight().data(), d, 0f, logits.data(), v);
                    MemorySegment hostLogitRows = logits.data();
                    if (hostChunk != null) {
                        kernels.copyToHost(hostChunk, logits.data(), 4L * rows * v);
                        hostLogitRows = hostChunk;
                    }
                    long agree = 0;
                    for (int r = 0; r < rows; r++) {
                        if (dev.distillery.kernels.DType.F32.argmax(hostLogitRows, (long) r * v, v) == teacherTop1[r0 + r]) agree++;
                    }
                    // Divergence over every row (labels of 0 keep them all), CE over the labelled rows only.
                    kernels.distillLoss(logits.data(), null, staged.rows(r0, r0 + rows), noLabels, null, rowDiv, rows, v, klOnly, 1f);
                    kernels.distillLoss(logits.data(), null, staged.rows(r0, r0 + rows), targets.data().asSlice(4L * r0), rowCe, null,
                            rows, v, klOnly, 1f);
                    kernels.copyToHost(hostCe, rowCe, 4L * rows);
                    kernels.copyToHost(hostDiv, rowDiv, 4L * rows);
                    double ce = 0, div = 0;
                    long ceRows = 0;
                    for (int r = 0; r < rows; r++) {
                        div += hostDiv.getAtIndex(ValueLayout.JAVA_FLOAT, r);
                        if (hostTargets.getAtIndex(ValueLayout.JAVA_INT, r0 + r) != options.ignoreIndex()) {
                            ce += hostCe.getAtIndex(ValueLayout.JAVA_FLOAT, r);
                            ceRows++;
                        }
                    }
                    sums = sums.plus(new EvalSums(ce, div, agree, rows, ceRows));
                }
            }
            return sums;
        } finally {
            tape.setEnabled(true);
        }
    }

    @Override
    public void close() {
        teacherStaging.close();
        workspace.close();
        ioArena.close();
    }
}
