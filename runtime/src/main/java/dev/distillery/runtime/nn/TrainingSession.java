package dev.distillery.runtime.nn;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.DType;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * One model, its optimizer, a workspace and a tape: the training step (forward, fused loss,
 * backward, clipping, AdamW) and evaluation on a fixed (batch, time) shape. Token and target
 * batches live in persistent buffers, so a steady loop allocates no native memory.
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
    private final Workspace workspace = new Workspace(1 << 20);
    private final Tape tape = new Tape();
    private final DifferentiableOps ops;
    private final java.lang.foreign.Arena ioArena = java.lang.foreign.Arena.ofShared();
    private final Tensor tokens;
    private final Tensor targets;

    public TrainingSession(Transformer model, Kernels kernels, AdamW.Config adam, LearningRateSchedule schedule,
                           double maxGradNorm, int batch, int time) {
        if (time > model.config().contextLength()) {
            throw new IllegalArgumentException("sequence length " + time + " exceeds the model's context " + model.config().contextLength());
        }
        this.model = model;
        this.kernels = kernels;
        this.optimizer = new AdamW(model.parameters(), kernels, adam);
        this.schedule = schedule;
        this.maxGradNorm = maxGradNorm;
        this.batch = batch;
        this.time = time;
        this.ops = new DifferentiableOps(kernels, workspace, tape);
        this.tokens = new Tensor("tokens", new int[]{batch, time}, DType.I32, Device.CPU, ioArena.allocate(4L * batch * time, 64), false);
        this.targets = new Tensor("targets", new int[]{batch * time}, DType.I32, Device.CPU, ioArena.allocate(4L * batch * time, 64), false);
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

    /** The (batch, time) int32 input buffer; fill it before {@link #step()} or {@link #evaluate()}. */
    public MemorySegment tokens() {
        return tokens.data();
    }

    /** The (batch · time) int32 target buffer; -100 masks a position. */
    public MemorySegment targets() {
        return targets.data();
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
                tokens.data().setAtIndex(ValueLayout.JAVA_INT, i, id);
                if (t > 0) targets.data().setAtIndex(ValueLayout.JAVA_INT, i - 1, id);
            }
            targets.data().setAtIndex(ValueLayout.JAVA_INT, (long) b * time + time - 1, DifferentiableOps.IGNORE_INDEX);
        }
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
                if (t < time) tokens.data().setAtIndex(ValueLayout.JAVA_INT, (long) b * time + t, id);
                if (t > 0) targets.data().setAtIndex(ValueLayout.JAVA_INT, (long) b * time + t - 1, id);
            }
        }
    }

    /** Logits (batch·time, vocab) of the token buffer, no tape; valid until the next call on this session. */
    public MemorySegment forwardLogits() {
        resetGraph(false);
        try {
            return model.forward(ops, tokens, batch, time).data();
        } finally {
            tape.setEnabled(true);
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
        model.parameters().zeroGrad(kernels);
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
     * labels, backward with {@code gradScale}; gradients accumulate.
     */
    public DifferentiableOps.DistillLoss backwardDistill(TeacherTargets teacher, DistillOptions options,
                                                         DifferentiableOps.Reduction reduction, int chunkRows, float gradScale) {
        resetGraph(true);
        Tensor hidden = model.hidden(ops, tokens, batch, time);
        DifferentiableOps.DistillLoss loss = ops.distillationLoss(hidden, model.lmHeadWeight(), teacher, targets, options,
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
            Tensor hidden = model.hidden(ops, tokens, batch, time);
            int n = batch * time, d = model.config().channels(), v = model.config().vocabSize();
            int chunk = Math.max(1, Math.min(chunkRows, n));
            Tensor logits = workspace.tensor("eval.logits", chunk, v);
            MemorySegment rowCe = workspace.tensor("eval.ce", chunk).data();
            MemorySegment rowDiv = workspace.tensor("eval.div", chunk).data();
            MemorySegment noLabels = workspace.tensor("eval.nolabels", DType.I32, chunk).data();
            for (int i = 0; i < chunk; i++) noLabels.setAtIndex(ValueLayout.JAVA_INT, i, 0);
            DistillOptions klOnly = new DistillOptions(options.temperature(), 0f, options.divergence(), options.scaleByTemperatureSquared(),
                    options.topKMode(), options.sparseTemperature(), options.ignoreIndex());
            EvalSums sums = EvalSums.zero();
            for (int r0 = 0; r0 < n; r0 += chunk) {
                int rows = Math.min(chunk, n - r0);
                kernels.gemm(false, true, rows, v, d, 1f, hidden.data().asSlice(4L * r0 * d), d,
                        model.lmHeadWeight().data(), d, 0f, logits.data(), v);
                long agree = 0;
                for (int r = 0; r < rows; r++) {
                    if (dev.distillery.kernels.distill.LogitType.F32.argmax(logits.data(), (long) r * v, v) == teacherTop1[r0 + r]) agree++;
                }
                // Divergence over every row (labels of 0 keep them all), CE over the labelled rows only.
                kernels.distillLoss(logits.data(), null, teacher.rows(r0, r0 + rows), noLabels, null, rowDiv, rows, v, klOnly, 1f);
                kernels.distillLoss(logits.data(), null, teacher.rows(r0, r0 + rows), targets.data().asSlice(4L * r0), rowCe, null,
                        rows, v, klOnly, 1f);
                double ce = 0, div = 0;
                long ceRows = 0;
                for (int r = 0; r < rows; r++) {
                    div += rowDiv.getAtIndex(ValueLayout.JAVA_FLOAT, r);
                    if (targets.data().getAtIndex(ValueLayout.JAVA_INT, r0 + r) != options.ignoreIndex()) {
                        ce += rowCe.getAtIndex(ValueLayout.JAVA_FLOAT, r);
                        ceRows++;
                    }
                }
                sums = sums.plus(new EvalSums(ce, div, agree, rows, ceRows));
            }
            return sums;
        } finally {
            tape.setEnabled(true);
        }
    }

    @Override
    public void close() {
        workspace.close();
        ioArena.close();
    }
}
