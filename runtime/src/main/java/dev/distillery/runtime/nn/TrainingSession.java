package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

import dev.distillery.kernels.DeviceCollectives;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.ParameterStore;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.distill.FeatureDistillation;
import dev.distillery.runtime.distill.InProcessTeacher;
import dev.distillery.runtime.distill.TeacherEnsemble;
import dev.distillery.runtime.distill.TeacherRows;
import dev.distillery.runtime.distill.TeacherSource;
import dev.distillery.runtime.distill.TeacherStaging;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.runtime.parallel.Collective;
import dev.distillery.runtime.parallel.DeviceGroup;

/**
 * One model, its optimizer, a workspace and a tape on a fixed (batch, time) shape: the training
 * step (forward, fused loss, backward, clipping, AdamW). Its {@link #inputs()} hold the token and
 * target buffers; its {@link #evaluator()} runs the same model forward only.
 *
 * <p>Everything lives where the model's kernels compute. Teacher targets go through a
 * {@link TeacherStaging}; what the caller reads back (losses, norms) comes through the kernels'
 * copies, so the same code trains on the CPU and on a GPU.
 */
public final class TrainingSession implements AutoCloseable {

    /** What one step did. */
    public record StepResult(int step, double loss, double gradNorm, double lr) {
    }

    /** A step whose loss or gradient norm is NaN or infinite; nothing was updated. */
    public static final class NonFiniteException extends RuntimeException {
        public NonFiniteException(int step, double loss, double gradNorm) {
            super("step " + step + ": loss " + loss + ", gradient norm " + gradNorm
                    + " is not finite; the parameters were not updated");
        }
    }

    private final LanguageModel model;
    private final Kernels kernels;
    private final AdamW optimizer;
    private final LearningRateSchedule schedule;
    private final double maxGradNorm;
    private final int batch;
    private final int time;
    private final Graph graph;
    private final ModelInputs inputs;
    private final TeacherStaging teacherStaging;
    private final List<TeacherStaging> moreStaging = new ArrayList<>();   // the second stored teacher's on
    private static final float[] ONE = {1f};
    private final Evaluator evaluator;
    private final AdamW.Config adam;
    private FeatureDistillation features;
    private AdamW featureOptimizer;
    private final List<MemorySegment> sums = new ArrayList<>();
    private int microBatches;
    /** The ranks' group on the device (NCCL), joined at the first sum where every rank has one; null otherwise. */
    private DeviceCollectives.Sum deviceSum;
    private boolean deviceSumAsked;
    /** The parameters declared unchanged from {@link #beginStep} until {@link #finishStep} updates them. */
    private Kernels.ConstantHold stepParameters = Kernels.ConstantHold.NONE;

    public TrainingSession(LanguageModel model, Kernels kernels, AdamW.Config adam, LearningRateSchedule schedule,
                           double maxGradNorm, int batch, int time) {
        if (time > model.contextLength()) {
            throw new IllegalArgumentException("sequence length " + time + " exceeds the model's context " + model.contextLength());
        }
        if (model.parameters().kernels() != kernels) {
            throw new IllegalArgumentException("the model's parameters live in the memory of " + model.parameters().kernels().describe()
                    + ", not of " + kernels.describe());
        }
        this.model = model;
        this.kernels = kernels;
        this.graph = new Graph(kernels);
        this.optimizer = new AdamW(model.parameters(), kernels, adam);
        this.adam = adam;
        this.schedule = schedule;
        this.maxGradNorm = maxGradNorm;
        this.batch = batch;
        this.time = time;
        this.inputs = new ModelInputs(kernels, batch, time, model.vocabSize());
        this.teacherStaging = new TeacherStaging(kernels);
        this.evaluator = new Evaluator(model, kernels, graph, inputs, teacherStaging, batch, time);
    }

    public LanguageModel model() {
        return model;
    }

    public AdamW optimizer() {
        return optimizer;
    }

    public Workspace workspace() {
        return graph.workspace;
    }

    /** The token and target buffers the step and the evaluator read. */
    public ModelInputs inputs() {
        return inputs;
    }

    /**
     * From the next step on, none of attention's probabilities is kept: they are made a band of
     * rows at a time in the forward and again in the backward (DifferentiableOps.setRecomputeAttention):
     * less memory, a little more time, the same function.
     */
    public void recomputeAttention(boolean recompute) {
        graph.ops.setRecomputeAttention(recompute);
    }

    /**
     * Bytes of attention's probabilities a step keeps: batch · heads · t² floats a layer from the
     * forward to the backward, and one such block more for their gradient while a layer's backward
     * runs; 0 under {@link #recomputeAttention}.
     */
    public long keptAttentionBytes() {
        return graph.ops.recomputesAttention() ? 0 : 4L * batch * model.heads() * time * time * (model.layers() + 1);
    }

    /**
     * From the next step on, distillation steps add {@code features}' loss (its projections live
     * where the model's parameters live and are trained by their own AdamW, clipped with the
     * model's gradients as one vector). Call before restoring a checkpoint.
     */
    public void enableFeatureDistillation(FeatureDistillation features) {
        if (features.projections().kernels() != kernels) {
            throw new IllegalArgumentException("the feature projections live in the memory of " + features.projections().kernels().describe()
                    + ", not of " + kernels.describe());
        }
        this.features = features;
        this.featureOptimizer = new AdamW(features.projections(), kernels, adam);
    }

    /** The feature distillation of this session, or null. */
    public FeatureDistillation features() {
        return features;
    }

    /** The AdamW of the feature projections, or null without feature distillation. */
    public AdamW featureOptimizer() {
        return featureOptimizer;
    }

    /** The model forward only, on these inputs. */
    public Evaluator evaluator() {
        return evaluator;
    }

    /** Forward, loss, backward, clip, AdamW on the current token and target buffers. */
    public StepResult step() {
        beginStep();
        double loss = backwardCrossEntropy(1f);
        return finishStep(loss);
    }

    /**
     * Zeroes the parameter gradients: the start of one optimizer step of one or more micro-batches.
     * Until {@link #finishStep}, the model's parameters are declared unchanged
     * ({@link Kernels#holdStepParameters}: under bf16 on CUDA, rounded once for every GEMM of the step).
     */
    public void beginStep() {
        for (ParameterStore s : trainable()) s.zeroGrad();
        microBatches = 0;
        stepParameters.close();
        stepParameters = kernels.holdStepParameters(model.parameters().paramBlock());
    }

    /** The model's parameters, and the feature projections when there are some. */
    private List<ParameterStore> trainable() {
        return features == null ? List.of(model.parameters()) : List.of(model.parameters(), features.projections());
    }

    /**
     * Ends one micro-batch of a step that has several (over micro-batches, over ranks, or both):
     * its gradients join the step's sum in order (the first is copied, each later one added) and
     * the parameter gradients are zeroed for the next. So a step's gradient is Σ_k g_k added in
     * micro-batch order rather than accumulated inside the backward kernels. Where the gradients
     * are in host memory and there are ranks, every rank's micro-batch joins here, in rank order
     * ({@link Collective#addInRankOrder}): micro-batch a of rank r is micro-batch a·W + r of one
     * process with the same sequences, so W ranks of A micro-batches add exactly what that
     * process adds, in its order.
     */
    public void endMicroBatch(Collective collective) {
        List<ParameterStore> stores = trainable();
        while (sums.size() < stores.size()) sums.add(stores.get(sums.size()).allocateLikeBlock());
        for (int i = 0; i < stores.size(); i++) {
            ParameterStore s = stores.get(i);
            if (ranksInSums(collective)) {
                collective.addInRankOrder(sums.get(i), s.gradBlock(), s.blockElements(), microBatches == 0);
            } else if (microBatches == 0) {
                kernels.copy(sums.get(i), s.gradBlock(), 4 * s.blockElements());
            } else {
                kernels.accumulate(sums.get(i), s.gradBlock(), s.blockElements());
            }
            s.zeroGrad();
        }
        microBatches++;
    }

    /** Whether {@link #endMicroBatch} adds the ranks' gradients itself: host memory and more than one rank. */
    private boolean ranksInSums(Collective collective) {
        return collective.size() > 1 && kernels.hostAccessible();
    }

    /**
     * The step's gradient into the parameter gradients: the sum of {@link #endMicroBatch}, which
     * holds every rank's already where the gradients are in host memory. Where they are a device's,
     * the ranks' sums are added here: by the kernels' own collectives (NCCL) when every rank has
     * them, after every rank has arrived ({@link Collective#barrier}, which names a rank that
     * hangs), else in rank order through host memory.
     */
    public void reduceGradients(Collective collective) {
        List<ParameterStore> stores = trainable();
        DeviceCollectives.Sum onDevice = collective.size() > 1 && !kernels.hostAccessible() ? deviceSum(collective) : null;
        if (onDevice != null) collective.barrier();
        for (int i = 0; i < stores.size(); i++) {
            ParameterStore s = stores.get(i);
            long bytes = 4 * s.blockElements();
            if (microBatches > 0) kernels.copy(s.gradBlock(), sums.get(i), bytes);
            if (collective.size() == 1 || ranksInSums(collective)) continue;
            if (onDevice != null) {
                onDevice.sum(s.gradBlock(), s.blockElements());
            } else {
                try (Arena host = Arena.ofConfined()) {
                    MemorySegment h = host.allocate(bytes, 64);
                    kernels.copyToHost(h, s.gradBlock(), bytes);
                    collective.addInRankOrder(h, h, s.blockElements(), true);
                    kernels.copyFromHost(s.gradBlock(), h, bytes);
                }
            }
        }
    }

    /** The ranks' device group ({@link DeviceGroup}), joined at the first call; null where some rank has none. */
    private DeviceCollectives.Sum deviceSum(Collective collective) {
        if (!deviceSumAsked) {
            deviceSumAsked = true;
            deviceSum = DeviceGroup.join(collective, kernels.deviceCollectives().orElse(null));
        }
        return deviceSum;
    }

    /**
     * How the ranks' gradients will be summed, for logs, joining the device group now where there
     * is one (every rank calls it together, before the first step).
     */
    public String gradientSum(Collective collective) {
        if (collective.size() == 1) return "not summed (one process)";
        if (kernels.hostAccessible()) return "in rank order (MPI allgather)";
        return deviceSum(collective) != null ? "on the devices by " + kernels.deviceCollectives().orElseThrow().describe()
                : "in rank order through host memory (not every rank has NCCL)";
    }

    /**
     * One micro-batch of hard-label training: forward, mean cross-entropy on the target buffer,
     * backward with {@code gradScale} (1/k over k micro-batches); gradients accumulate.
     */
    public double backwardCrossEntropy(float gradScale) {
        graph.reset(true);
        Tensor hidden = model.hidden(graph.ops, inputs.tokens(), batch, time);
        DifferentiableOps.Loss loss = graph.ops.linearCrossEntropy(hidden, model.lmHeadWeight(), inputs.labels(), gradScale,
                ChunkedLinearDistillLoss.defaultChunkRows(model.vocabSize()));
        graph.tape.backward();
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
        return backwardDistill(teacher, null, options, reduction, chunkRows, gradScale);
    }

    /**
     * As above, with feature distillation against the teacher's stored hidden states
     * {@code teacherStates} (host memory, (batch·time, teacher width) each); null without it.
     */
    public DifferentiableOps.DistillLoss backwardDistill(TeacherTargets teacher, FeatureDistillation.TeacherStates teacherStates,
                                                         DistillOptions options, DifferentiableOps.Reduction reduction, int chunkRows,
                                                         float gradScale) {
        return backwardDistill(List.of(new TeacherSource.Stored(teacher)), ONE, TeacherEnsemble.Combination.MEAN_OF_LOSSES, teacherStates,
                options, reduction, chunkRows, gradScale);
    }

    /** The staging of the k-th stored teacher of a step: the first shares the evaluator's buffers. */
    private TeacherStaging stagingFor(int k) {
        if (k == 0) return teacherStaging;
        while (moreStaging.size() < k) moreStaging.add(new TeacherStaging(kernels));
        return moreStaging.get(k - 1);
    }

    private static FeatureDistillation.TeacherStates requireStates(FeatureDistillation.TeacherStates states) {
        if (states == null) throw new IllegalArgumentException("feature distillation needs the teacher's hidden states, and this batch has none");
        return states;
    }

    /**
     * As {@link #backwardDistill(TeacherTargets, DistillOptions, DifferentiableOps.Reduction, int, float)}
     * against a teacher run in this process on the same tokens: its hidden states once, its
     * logits chunk by chunk as the loss consumes them ({@code chunkRows} at most, the chunk the
     * teacher was made for).
     */
    public DifferentiableOps.DistillLoss backwardDistill(InProcessTeacher teacher, DistillOptions options,
                                                         DifferentiableOps.Reduction reduction, int chunkRows, float gradScale) {
        return backwardDistill(List.of(new TeacherSource.Live(teacher)), ONE, TeacherEnsemble.Combination.MEAN_OF_LOSSES, null, options,
                reduction, chunkRows, gradScale);
    }

    /**
     * One micro-batch of distillation from several teachers on the same tokens, combined as
     * {@code combination} with {@code weights} (summing to 1; see {@link TeacherEnsemble}), and
     * feature distillation against {@code teacherStates} (the first teacher's, stored) or the
     * first teacher run in the process when it is one.
     */
    public DifferentiableOps.DistillLoss backwardDistill(List<TeacherSource> teachers, float[] weights, TeacherEnsemble.Combination combination,
                                                         FeatureDistillation.TeacherStates teacherStates, DistillOptions options,
                                                         DifferentiableOps.Reduction reduction, int chunkRows, float gradScale) {
        graph.reset(true);
        List<TeacherRows> rows = new ArrayList<>();
        int stored = 0;
        for (TeacherSource t : teachers) {
            rows.add(switch (t) {
                case TeacherSource.Stored s -> TeacherRows.stored(stagingFor(stored++).stage(s.targets(), batch * time), null);
                case TeacherSource.Live l -> l.teacher().forward(inputs.tokens(), batch, time);
            });
        }
        FeatureDistillation.TeacherStates states = null;
        if (features != null) {
            states = teachers.getFirst() instanceof TeacherSource.Live l ? l.teacher().hiddenStates()
                    : teacherStaging.stage(requireStates(teacherStates), features.spec().teacherLayers(), batch * time, features.teacherWidth());
        }
        FeatureDistillation.StudentStates tapped = features == null ? null : features.studentTap(graph.ops);
        Tensor hidden = model.hidden(graph.ops, inputs.tokens(), batch, time, tapped);
        kernels.joinCopies();
        DifferentiableOps.DistillLoss loss = graph.ops.distillationLoss(hidden, model.lmHeadWeight(), new TeacherEnsemble(rows, weights, combination),
                inputs.labels(), options, reduction, chunkRows, gradScale);
        if (features != null) loss = loss.plusFeature(features.loss(graph.ops, tapped, states, gradScale), features.spec().weight());
        graph.tape.backward();
        return loss;
    }

    /**
     * Clips, checks, updates: the end of one optimizer step. When the loss or the gradient norm is
     * not finite, the parameters and moments are left untouched and {@link NonFiniteException} says
     * which step and what went wrong.
     */
    public StepResult finishStep(double loss) {
        stepParameters.close();   // AdamW writes them below
        stepParameters = Kernels.ConstantHold.NONE;
        double norm = Math.sqrt(optimizer.gradSumOfSquares() + (featureOptimizer == null ? 0 : featureOptimizer.gradSumOfSquares()));
        // clipping's factor goes into AdamW's read of the gradients rather than a pass of its own
        float clip = maxGradNorm > 0 && norm > maxGradNorm ? (float) (maxGradNorm / (norm + 1e-6)) : 1f;
        int next = optimizer.step() + 1;
        if (!Double.isFinite(loss) || !Double.isFinite(norm)) throw new NonFiniteException(next, loss, norm);
        double lr = schedule.at(next);
        optimizer.update(lr, clip);
        if (featureOptimizer != null) featureOptimizer.update(lr, clip);
        return new StepResult(optimizer.step(), loss, norm, lr);
    }

    @Override
    public void close() {
        stepParameters.close();
        if (deviceSum != null) deviceSum.close();
        if (features != null) features.close();
        teacherStaging.close();
        for (TeacherStaging s : moreStaging) s.close();
        graph.close();
        inputs.close();
    }
}
