package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.I32;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.set;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.cpu.WorkerPool;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The fused distillation loss on the CPU ({@code Kernels.distillLoss}): the driver. It hands rows
 * to the pool's threads in small batches, checks labels, runs each row's teacher kind and
 * divergence, fixes the label column, and adds the sums in a fixed order. The rows themselves:
 * {@link DenseForwardKl}, {@link DenseReverseKl}, {@link DenseJsd} (sharing {@link DenseRow}'s pass
 * A; a mixture of teachers is made into one dense row first by {@link MixtureRows}), {@link
 * TopKRows} and {@link SampledRows} (sharing {@link SparseRows}); their commonest passes also
 * exist in C ({@link RowPasses}). Every row works in blocks of {@link #BLOCK} columns so its
 * working set stays in L1/L2. Math and passes: docs/KERNELS.md#distillation-losses.
 */
public final class FusedDistillLoss {

    /** Columns per block of every pass (and of the C passes: cpu/src/main/c/rows.h's BLOCK). */
    public static final int BLOCK = 2048;

    private final WorkerPool pool;
    private RowScratch[] scratch = new RowScratch[0];

    public FusedDistillLoss(WorkerPool pool) {
        this.pool = pool;
    }

    /**
     * Rows per unit of work a thread claims: up to 16, and at least 64 units when there are 64
     * rows, so that a thread holding one unit ahead never leaves another idle. A function of n
     * alone: the sums are the same for any thread count.
     */
    static int batchRows(int n) {
        return Math.max(1, Math.min(16, n / 64));
    }

    /** "native loss rows", or why the rows run in Java: for the backend's one-line description. */
    public static String rowsDescription() {
        return NativeRowPasses.active() ? "native loss rows (" + (NativeRowPasses.kind() == DistilleryCpu.ROWS_AVX2 ? "AVX2" : "AVX-512") + ")" : "loss rows in Java: native ones " + DistilleryCpu.status();
    }

    /** Blocks of dense rows that raised their lazy maxima ({@link DenseRow}) in this instance's calls so far. */
    public long raises() {
        long sum = 0;
        for (RowScratch sc : scratch) sum += sc.raises;
        return sum;
    }

    /** Rows whose passes ran in C in this instance's calls so far. */
    public long nativeRows() {
        long sum = 0;
        for (RowScratch sc : scratch) sum += sc.nativeRows;
        return sum;
    }

    /** {@code Kernels.distillLoss}'s contract. */
    public DistillSums run(MemorySegment s, MemorySegment g, TeacherTargets teacher, MemorySegment labels,
                           MemorySegment rowCe, MemorySegment rowDiv, int n, int v, DistillOptions o, float gradScale) {
        o.check(teacher, labels != null, v);
        int batch = batchRows(n), batches = (n + batch - 1) / batch, threads = Math.min(pool.threads(), batches);
        if (scratch.length < threads) {
            RowScratch[] grown = Arrays.copyOf(scratch, threads);
            for (int i = scratch.length; i < threads; i++) grown[i] = new RowScratch();
            scratch = grown;
        }
        // Batches of rows are claimed as threads come free (a shared machine's cores do not run
        // at one speed); sums are kept per batch and added in batch order: the same bits for any
        // thread count.
        double[][] sums = new double[batches][4];
        AtomicInteger claims = new AtomicInteger();
        pool.forEachChunk(threads, 1, (chunk, ignoredStart, ignoredEnd) -> {
            RowScratch sc = scratch[chunk];
            // claim one batch ahead, so that the last row of a batch can fetch the next batch's first
            for (int b = claims.getAndIncrement(), next; b < batches; b = next) {
                next = claims.getAndIncrement();
                int start = b * batch, end = Math.min(n, start + batch);
                double[] acc = sums[b];
                for (int r = start; r < end; r++) {
                    sc.nextRow = r + 1 < end ? r + 1 : next < batches ? next * batch : r;
                    float[] ceDiv = row(r, s, g, teacher, labels, v, o, gradScale, sc);
                    if (rowCe != null) set(rowCe, r, ceDiv == null ? 0f : ceDiv[0]);
                    if (rowDiv != null) set(rowDiv, r, ceDiv == null ? 0f : ceDiv[1]);
                    if (ceDiv == null) continue;
                    acc[0] += o.alpha() * ceDiv[0] + (1 - o.alpha()) * (double) ceDiv[1];
                    acc[1] += ceDiv[0];
                    acc[2] += ceDiv[1];
                    acc[3]++;
                }
            }
        });
        DistillSums total = DistillSums.zero();
        for (double[] a : sums) total = total.plus(new DistillSums(a[0], a[1], a[2], (int) a[3]));
        return total;
    }

    /** Loss and gradient of row r; returns {ce, divergence}, or null when the row is masked out. */
    private static float[] row(int r, MemorySegment s, MemorySegment g, TeacherTargets teacher, MemorySegment labels,
                               int v, DistillOptions o, float gradScale, RowScratch sc) {
        long so = (long) r * v;
        int label = labels == null ? Integer.MIN_VALUE : labels.getAtIndex(I32, r);
        if (labels != null && label == o.ignoreIndex()) {
            if (g != null) VectorOps.fill(g, so, v, 0f);
            return null;
        }
        if (labels != null) o.checkLabel(r, label, v);
        float invT = 1f / o.temperature();
        float sLabel = label >= 0 ? get(s, so + label) : 0f;
        float c1 = gradScale * o.alpha();                                       // on softmax(s) − onehot
        float cq = gradScale * (1 - o.alpha()) * o.gradientTemperatureFactor();  // on the divergence's (q − target)
        float ce, div;
        TeacherTargets.Dense d = null;
        if (teacher instanceof TeacherTargets.Dense dense) {
            d = dense;
            sc.teacherAt = (long) r * d.vocab();
            sc.nextTeacherAt = (long) sc.nextRow * d.vocab();
        } else if (teacher instanceof TeacherTargets.Mixture m) {
            d = MixtureRows.row(r, m, invT, sc);
            sc.teacherAt = sc.nextTeacherAt = 0;
        }
        if (d != null) {
            float[] ceDiv = switch (o.divergence()) {
                case Divergence.ForwardKl ignored -> DenseForwardKl.row(r, s, so, g, d, v, invT, c1, cq, sc);
                case Divergence.ReverseKl ignored -> DenseReverseKl.row(r, s, so, g, d, v, invT, c1, cq, sc);
                case Divergence.Jsd jsd -> DenseJsd.row(r, s, so, g, d, v, invT, (float) jsd.beta(), c1, cq, sc);
            };
            ce = label >= 0 ? ceDiv[0] - sLabel : 0f;
            div = ceDiv[1];
        } else {
            StudentPass.Student st = SparseRows.begin(r, s, so, g, teacher, v, invT, c1, sc);
            ce = label >= 0 ? st.max() + st.logZ1() - sLabel : 0f;
            div = switch (teacher) {
                case TeacherTargets.Dense dense -> throw new AssertionError("dense teachers have their own rows");
                case TeacherTargets.Mixture m -> throw new AssertionError("mixtures are read as dense rows");
                case TeacherTargets.TopK k -> TopKRows.row(r, s, so, g, k, v, st, invT, o, c1, cq, g != null, sc);
                case TeacherTargets.Sampled sm -> SampledRows.row(r, s, so, g, sm, v, st, invT, c1, cq, g != null, sc);
            };
        }
        if (g != null && label >= 0) set(g, so + label, get(g, so + label) - c1);
        return new float[]{ce, div * o.divergenceScale()};
    }
}
