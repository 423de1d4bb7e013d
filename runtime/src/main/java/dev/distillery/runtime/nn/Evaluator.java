package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.distill.InProcessTeacher;
import dev.distillery.runtime.distill.TeacherRows;
import dev.distillery.runtime.distill.TeacherStaging;

/**
 * A session's model run forward only, on its current inputs: held-out cross-entropy, and the
 * divergence to a teacher with top-1 agreement. Everything is computed where the kernels live; what comes back to the host is
 * per-row numbers. Gradients and parameters are never touched.
 */
public final class Evaluator {

    /**
     * Sums over the evaluated rows, which are the rows training's loss counts (those with a
     * target): hard-label CE, divergence to the teacher, top-1 agreements.
     */
    public record Sums(double ce, double divergence, long agree, long rows) {
        public Sums plus(Sums o) {
            return new Sums(ce + o.ce, divergence + o.divergence, agree + o.agree, rows + o.rows);
        }

        public static Sums zero() {
            return new Sums(0, 0, 0, 0);
        }
    }

    private final LanguageModel model;
    private final Kernels kernels;
    private final Graph graph;
    private final ModelInputs inputs;
    private final TeacherStaging staging;
    private final int batch, time;

    Evaluator(LanguageModel model, Kernels kernels, Graph graph, ModelInputs inputs, TeacherStaging staging, int batch, int time) {
        this.model = model;
        this.kernels = kernels;
        this.graph = graph;
        this.inputs = inputs;
        this.staging = staging;
        this.batch = batch;
        this.time = time;
    }

    /** Mean cross-entropy of the current inputs. */
    public double crossEntropy() {
        graph.reset(false);
        try {
            Tensor hidden = model.hidden(graph.ops, inputs.tokens(), batch, time);
            return graph.ops.linearCrossEntropy(hidden, model.lmHeadWeight(), inputs.labels(), 1f,
                    ChunkedLinearDistillLoss.defaultChunkRows(model.vocabSize())).mean();
        } finally {
            graph.recordAgain();
        }
    }

    /**
     * The current inputs against {@code teacher} (batch·time rows), in chunks of logits, over the
     * rows training's loss counts (a row whose target is the ignore index counts for nothing): the
     * CE on the targets, the divergence of {@code options} (alpha is ignored), and how many rows'
     * student argmax equals {@code teacherTop1[row]}. One loss call and one argmax per chunk.
     */
    public Sums distill(TeacherTargets teacher, int[] teacherTop1, DistillOptions options, int chunkRows) {
        graph.reset(false);
        try {
            TeacherTargets staged = staging.stage(teacher, batch * time);
            Tensor hidden = model.hidden(graph.ops, inputs.tokens(), batch, time);
            kernels.joinCopies();
            return sums(hidden, TeacherRows.stored(staged, teacherTop1), options, chunkRows);
        } finally {
            graph.recordAgain();
        }
    }

    /** As {@link #distill(TeacherTargets, int[], DistillOptions, int)} against a teacher run in this process, in its chunks. */
    public Sums distill(InProcessTeacher teacher, DistillOptions options, int chunkRows) {
        graph.reset(false);
        try {
            TeacherRows rows = teacher.forward(inputs.tokens(), batch, time);
            return sums(model.hidden(graph.ops, inputs.tokens(), batch, time), rows, options, chunkRows);
        } finally {
            graph.recordAgain();
        }
    }

    private Sums sums(Tensor hidden, TeacherRows teacher, DistillOptions options, int chunkRows) {
        int n = batch * time, d = model.width(), v = model.vocabSize();
        int chunk = Math.max(1, Math.min(chunkRows, n));
        Tensor logits = graph.workspace.tensor("eval.logits", chunk, v);
        MemorySegment rowCe = graph.workspace.tensor("eval.ce", chunk).data();
        MemorySegment rowDiv = graph.workspace.tensor("eval.div", chunk).data();
        MemorySegment top1 = graph.workspace.tensor("eval.top1", DType.I32, chunk).data();
        MemorySegment labels = inputs.targets().data();
        DistillOptions divergenceOnly = options.withAlpha(0f);
        Sums sums = Sums.zero();
        try (Arena host = Arena.ofConfined(); Kernels.ConstantHold unchanged = kernels.holdConstant(model.lmHeadWeight().data())) {
            MemorySegment hostCe = host.allocate(4L * chunk, 64), hostDiv = host.allocate(4L * chunk, 64);
            MemorySegment hostTop1 = host.allocate(4L * chunk, 64);
            for (int r0 = 0; r0 < n; r0 += chunk) {
                int rows = Math.min(chunk, n - r0);
                kernels.projectionForward(logits.data(), hidden.data().asSlice(4L * r0 * d), DType.F32, model.lmHeadWeight().data(), null,
                        rows, d, v);
                kernels.argmaxRows(top1, logits.data(), rows, v);
                try {
                    kernels.distillLoss(logits.data(), null, teacher.rows(r0, r0 + rows), labels.asSlice(4L * r0), rowCe, rowDiv,
                            rows, v, divergenceOnly, 1f);
                } catch (dev.distillery.kernels.distill.BadRowException e) {
                    throw e.shifted(r0);   // the row of the batch, not of the chunk
                }
                kernels.copyToHost(hostCe, rowCe, 4L * rows);
                kernels.copyToHost(hostDiv, rowDiv, 4L * rows);
                kernels.copyToHost(hostTop1, top1, 4L * rows);
                double ce = 0, div = 0;
                long counted = 0, agree = 0;
                for (int r = 0; r < rows; r++) {
                    if (inputs.target(r0 + r) == options.ignoreIndex()) continue;
                    ce += hostCe.getAtIndex(ValueLayout.JAVA_FLOAT, r);
                    div += hostDiv.getAtIndex(ValueLayout.JAVA_FLOAT, r);
                    if (hostTop1.getAtIndex(ValueLayout.JAVA_INT, r) == teacher.top1(r0 + r)) agree++;
                    counted++;
                }
                sums = sums.plus(new Sums(ce, div, agree, counted));
            }
        }
        return sums;
    }

}
