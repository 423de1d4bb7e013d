package dev.distillery.kernels.cpu;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.I32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.set;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicInteger;

import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.LogitType;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorSpecies;
import jdk.incubator.vector.VectorOperators;

/**
 * The fused distillation loss on the CPU: one row at a time per pool thread, in blocks of
 * {@link #BLOCK} columns so a row's working set stays in L1/L2.
 *
 * <p>Pass A streams the student row once and keeps online (running-max) sums for softmax(s/T)
 * and softmax(s) (the hard-label CE), and for a dense teacher the same for softmax(t/T). Pass B
 * streams student and teacher again and, for forward KL, computes the loss and writes dL/ds (in
 * place when the gradient buffer is the student's). Reverse KL and JSD need a row-wide sum
 * before their gradient, so they take a pass C. Sparse teachers (top-k, sampled) touch only their
 * k entries after pass A; pass B writes the gradient every non-listed column shares (through the
 * tail bucket), and the k listed columns are fixed up afterwards.
 *
 * <p>Teacher logits are converted to fp32 block by block into a per-thread buffer of BLOCK floats
 * (fp16/bf16 are never converted as a whole). Hot loops store only to Java arrays; gradient
 * blocks reach the caller's segment by bulk copy (docs/KERNELS.md#stores-constants-and-max).
 * Extra memory: O(threads × V): per-thread rows of e_s and e_t (dense and, for e_s, sparse rows)
 * and an int[vocab] of marks for top-k rows. See docs/KERNELS.md#distillation-losses.
 */
final class FusedDistillLoss {

    static final int BLOCK = 2048;
    /**
     * Rows per unit of work a thread claims (see run): up to 16, and at least 64 units when there
     * are 64 rows, so that a thread holding one unit ahead never leaves another idle. A function
     * of n alone: the sums are the same for any thread count.
     */
    static int batchRows(int n) {
        return Math.max(1, Math.min(16, n / 64));
    }
    private static final java.lang.foreign.ValueLayout.OfShort SHORT = java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED;
    /** Shorts at half the float width (so one short vector widens to one float vector) and ints at full width. */
    private static final VectorSpecies<Short> HALF_SPECIES = switch (SPECIES.vectorBitSize()) {
        case 512 -> ShortVector.SPECIES_256;
        case 256 -> ShortVector.SPECIES_128;
        default -> ShortVector.SPECIES_64;
    };
    private static final VectorSpecies<Integer> INT_SPECIES = switch (SPECIES.vectorBitSize()) {
        case 512 -> IntVector.SPECIES_512;
        case 256 -> IntVector.SPECIES_256;
        default -> IntVector.SPECIES_128;
    };
    /** Per-thread staging for fp16 teacher logits. */
    private static final ThreadLocal<short[]> RAW = ThreadLocal.withInitial(() -> new short[BLOCK]);
    /** log of fp32's smallest normal: reverse KL charges zero teacher mass at this log-probability. */
    private static final float LOG_FLOOR = (float) Math.log(Float.MIN_NORMAL);

    private final WorkerPool pool;
    private Scratch[] scratch = new Scratch[0];

    FusedDistillLoss(WorkerPool pool) {
        this.pool = pool;
    }

    /** Per-thread buffers. */
    private static final class Scratch {
        final float[] teacher = new float[BLOCK];
        /** Per-block q and softmax(s): filled by one-exp loops, combined by a loop with none. */
        final float[] qb = new float[BLOCK], sb = new float[BLOCK];
        int[] marks = new int[0];
        /** Running student max used for each block of pass A (when pass A stores e in the gradient buffer). */
        float[] blockMax = new float[0];
        /** Student logits at the listed ids of a sparse row, read before an in-place gradient overwrites them. */
        float[] listed = new float[0];
        int markRow;
        float[] q = new float[0], lq = new float[0], p = new float[0], lp = new float[0];
        /**
         * Dense rows (see denseForwardKl): e_s and e_t (or (t − m_t)/T) of the row, and one block
         * of the gradient before it is copied to the caller's buffer. Java arrays, not segments:
         * C2 hoists a loop's segment checks only when the loop stores to no segment (see
         * docs/KERNELS.md#stores-constants-and-max).
         */
        float[] eS = new float[0], eT = new float[0];
        final float[] gb = new float[BLOCK];
        /**
         * The row this thread takes after the current one (its lines are fetched during the
         * current row's pass A; the current row itself when there is none), and what the fetches read.
         */
        int nextRow;
        long fetched;
        /** Blocks of dense rows that raised the lazy maxima (DenseRow.passA), and rows run by NativeRows. */
        long raises, nativeRows;
        /**
         * NativeRows' e_t (dense) or e (sparse) row, a sparse row's block maxima and the outputs:
         * native memory, freed with this Scratch; eNative: this sparse row's e is there, not in eS.
         */
        MemorySegment nativeET = MemorySegment.NULL, nativeBlockMax = MemorySegment.NULL, nativeOut = MemorySegment.NULL;
        boolean eNative;

        void rows(int v) {
            if (eS.length < v) {
                eS = new float[v];
                eT = new float[v];
            }
        }

        void nativeScratch(int v) {
            if (nativeET.byteSize() < 4L * v) {
                Arena arena = Arena.ofAuto();
                nativeET = arena.allocate(4L * v, 64);
                nativeBlockMax = arena.allocate(4L * ((v + BLOCK - 1) / BLOCK), 64);
                nativeOut = arena.allocate(4 * 8, 8);
            }
        }
    }

    /** Blocks of dense rows that raised their lazy maxima (DenseRow) in this instance's calls so far. */
    long raises() {
        long sum = 0;
        for (Scratch sc : scratch) sum += sc.raises;
        return sum;
    }

    /** Rows run by NativeRows in this instance's calls so far. */
    long nativeRows() {
        long sum = 0;
        for (Scratch sc : scratch) sum += sc.nativeRows;
        return sum;
    }

    /** Per-row constants of the student after pass A. */
    private record Student(float max, float logZt, float logZ1) {
    }

    DistillSums run(MemorySegment s, MemorySegment g, TeacherTargets teacher, MemorySegment labels,
                    MemorySegment rowCe, MemorySegment rowDiv, int n, int v, DistillOptions o, float gradScale) {
        o.check(teacher, labels != null, v);
        int batch = batchRows(n), batches = (n + batch - 1) / batch, threads = Math.min(pool.threads(), batches);
        if (scratch.length < threads) {
            Scratch[] grown = Arrays.copyOf(scratch, threads);
            for (int i = scratch.length; i < threads; i++) grown[i] = new Scratch();
            scratch = grown;
        }
        // Batches of rows are claimed as threads come free: on this shared machine one
        // vCPU often runs 10-25% slower than the other, and equal fixed halves waited for it.
        // Sums are kept per batch and added in batch order: the same bits for any thread count.
        double[][] sums = new double[batches][4];
        AtomicInteger claims = new AtomicInteger();
        pool.forEachChunk(threads, 1, (chunk, ignoredStart, ignoredEnd) -> {
            Scratch sc = scratch[chunk];
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
    private float[] row(int r, MemorySegment s, MemorySegment g, TeacherTargets teacher, MemorySegment labels,
                        int v, DistillOptions o, float gradScale, Scratch sc) {
        long so = (long) r * v;
        int label = labels == null ? Integer.MIN_VALUE : labels.getAtIndex(I32, r);
        if (labels != null && label == o.ignoreIndex()) {
            if (g != null) VectorOps.fill(g, so, v, 0f);
            return null;
        }
        if (labels != null && (label < 0 || label >= v)) {
            throw new IllegalArgumentException("label " + label + " at row " + r + " is outside [0, " + v
                    + ") and is not the ignore index " + o.ignoreIndex());
        }
        float invT = 1f / o.temperature();
        float sLabel = label >= 0 ? get(s, so + label) : 0f;
        // Sparse teachers with a gradient: pass A leaves e = exp((s − block max)/T) in a per-thread
        // row, so the gradient pass needs no exp for q.
        boolean sparse = !(teacher instanceof TeacherTargets.Dense);
        boolean storeE = sparse && g != null;
        if (sparse) readListed(r, s, so, teacher, sc);
        float c1 = gradScale * o.alpha();                                  // on softmax(s) − onehot
        float cq = gradScale * (1 - o.alpha()) * o.gradientTemperatureFactor(); // on the divergence's (q − target)
        if (teacher instanceof TeacherTargets.Dense d) {
            float[] ceKl = switch (o.divergence()) {
                case Divergence.ForwardKl ignored -> denseForwardKl(r, s, so, g, d, v, invT, c1, cq, sc);
                case Divergence.ReverseKl ignored -> denseReverseKl(r, s, so, g, d, v, invT, c1, cq, sc);
                case Divergence.Jsd jsd -> denseJsd(r, s, so, g, d, v, invT, (float) jsd.beta(), c1, cq, sc);
            };
            if (g != null && label >= 0) set(g, so + label, get(g, so + label) - c1);
            return new float[]{label >= 0 ? ceKl[0] - sLabel : 0f, ceKl[1] * o.divergenceScale()};
        }
        if (storeE) sc.rows(v);
        int power = integerTemperature(invT);
        // the native rows take pass A and the unlisted columns' gradient when that is e-squared (sharedGradient)
        sc.eNative = storeE && (power == 2 || power == 1 && c1 == 0f) && NativeRows.active() && s.isNative() && g.isNative();
        Student st = sc.eNative ? nativeStudentPass(s, so, v, invT, power, sc) : studentPass(s, so, v, invT, storeE ? sc.eS : null, sc);
        float ce = label >= 0 ? st.max() + st.logZ1() - sLabel : 0f;
        float div = switch (teacher) {
            case TeacherTargets.Dense d -> throw new AssertionError("dense teachers have their own paths");
            case TeacherTargets.TopK k -> topK(r, s, so, g, k, v, st, invT, o, c1, cq, storeE, sc);
            case TeacherTargets.Sampled sm -> sampled(r, s, so, g, sm, v, st, invT, c1, cq, storeE, sc);
        };
        if (g != null && label >= 0) set(g, so + label, get(g, so + label) - c1);
        return new float[]{ce, div * o.divergenceScale()};
    }

    // ---------------------------------------------------------------- pass A

    /**
     * Online max and Σexp for softmax(s/T) and softmax(s) over one student row. With eOut, also
     * writes e = exp((s − m_b)/T) for column j at eOut[j], m_b the running max used for its block
     * (recorded in sc.blockMax): the gradient pass rescales instead of recomputing the exp.
     */
    private static Student studentPass(MemorySegment s, long so, int v, float invT, float[] eOut, Scratch sc) {
        float m = Float.NEGATIVE_INFINITY;
        double zt = 0, z1 = 0;
        int power = integerTemperature(invT);
        if (eOut != null && sc.blockMax.length < (v + BLOCK - 1) / BLOCK) sc.blockMax = new float[(v + BLOCK - 1) / BLOCK];
        long nextS = (long) sc.nextRow * v * 4L, fetchEnd = nextS + v * 4L - 1;
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            long o = so + j0;
            float bm = VectorOps.maxSkippingNaN(s, o, len);
            if (bm > m) {
                if (m != Float.NEGATIVE_INFINITY) {
                    zt *= Math.exp((m - bm) * (double) invT);
                    z1 *= Math.exp(m - (double) bm);
                }
                m = bm;
            }
            if (power == 0) z1 += VectorOps.expSumAffine(s, o, len, m, 1f);
            float[] sums;
            if (eOut != null) {
                sc.blockMax[j0 / BLOCK] = m;
                sums = sparseBlock(s, o, len, m, invT * VectorOps.LOG2E, Math.max(power, 1), eOut, j0, nextS + j0 * 4L, fetchEnd);
                sc.fetched += (long) sums[2];
            } else if (power > 0) {
                sums = VectorOps.expSumAndPower(s, o, len, m, invT, power);
            } else {
                sums = new float[]{VectorOps.expSumAffine(s, o, len, m, invT), 0f};
            }
            zt += sums[0];
            if (power > 0) z1 += sums[1];
        }
        return new Student(m, (float) Math.log(zt), (float) Math.log(z1));
    }

    /**
     * studentPass with e kept, in C (NativeRows): e and the block maxima go to native scratch, where
     * sharedGradient's e-squared case reads them. Same arithmetic; prefetches instead of touches.
     */
    private static Student nativeStudentPass(MemorySegment s, long so, int v, float invT, int power, Scratch sc) {
        sc.nativeScratch(v);
        long next = sc.nextRow;
        Objects.checkFromIndexSize(so * 4L, 4L * v, s.byteSize());
        Objects.checkFromIndexSize(next * v * 4L, 4L * v, s.byteSize());
        NativeRows.studentRow(s.address() + so * 4L, v, invT, power, sc.nativeET, sc.nativeBlockMax,
                s.address() + next * v * 4L, 4L * v, sc.nativeOut);
        sc.nativeRows++;
        MemorySegment out = sc.nativeOut;
        return new Student((float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 0), (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 1),
                (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 2));
    }

    /**
     * Pass A of a sparse row with a gradient, over one block: e = exp((s − m)/T) = 2^((s − m) k),
     * k = log2(e)/T (scale2; see fklBlock), to out[oo + i], returns {Σ e, Σ e^power, fetched}. Each
     * iteration also touches one line of this thread's next student row (as denseForwardKl's pass
     * A does), so that row arrives while this one computes its exps: in the gradient pass, with
     * four operations per vector, the touches stalled it.
     */
    private static float[] sparseBlock(MemorySegment s, long o, int len, float m, float scale2, int power,
                                       float[] out, int oo, long fetch, long fetchEnd) {
        FloatVector acc = FloatVector.zero(SPECIES), accP = acc;
        int i = 0, fetched = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            fetched += s.get(ValueLayout.JAVA_BYTE, Math.min(fetch + i * 4L, fetchEnd));
            FloatVector e = VectorOps.exp2(FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(m), scale2);
            e.intoArray(out, oo + i);
            acc = acc.add(e);
            accP = accP.add(VectorOps.power(e, power));
        }
        float s1 = VectorOps.sumLanes(acc), sp = VectorOps.sumLanes(accP);
        for (; i < len; i++) {
            float e = VectorOps.exp2(get(s, o + i) - m, scale2);
            out[oo + i] = e;
            s1 += e;
            sp += VectorOps.power(e, power);
        }
        return new float[]{s1, sp, fetched};
    }

    /**
     * T when the temperature is a small integer (1..8), else 0. Then softmax(s) = e^T / Z1 with
     * e = exp((s − max)/T) already computed for softmax(s/T): one exp per element serves both.
     */
    static int integerTemperature(float invT) {
        float t = 1f / invT;
        return t == Math.rint(t) && t >= 1 && t <= 8 && invT == 1f / t ? (int) t : 0;
    }

    /** sc.sb = softmax(s) for one block, from sc.qb = softmax(s/T) when T is an integer, else by its own exp. */
    private static void hardLabelSoftmax(MemorySegment s, long o, int len, float ms, float invT, float lzq, float lz1, Scratch sc) {
        int power = integerTemperature(invT);
        if (power > 0) {
            // e = q · Z_T ≤ 1, softmax(s) = e^T / Z_1
            VectorOps.powerScaled(sc.qb, len, (float) Math.exp(lzq), power, (float) Math.exp(-lz1), sc.sb);
        } else {
            VectorOps.expAffine(s, o, len, ms, 1f, lz1, sc.sb);
        }
    }

    /** Loads teacher columns [j0, j0 + len) of a dense row into buf as fp32; columns ≥ vt get −inf. */
    private static void loadTeacher(TeacherTargets.Dense d, long to, int j0, int len, float[] buf) {
        int real = Math.max(0, Math.min(len, d.vocab() - j0));
        MemorySegment t = d.logits();
        long base = to + j0;
        // a block wholly past the teacher's vocabulary: base can lie past the segment's end (the
        // last rows), where even an empty copy is out of bounds
        if (real == 0) {
            Arrays.fill(buf, 0, len, Float.NEGATIVE_INFINITY);
            return;
        }
        switch (d.type()) {
            case F32 -> MemorySegment.copy(t, F32, base * 4L, buf, 0, real);
            case BF16 -> {
                // bf16 is the top half of an fp32: widen 16-bit lanes to 32 and shift them up
                int i = 0;
                for (int bound = SPECIES.loopBound(real); i < bound; i += LANES) {
                    ShortVector h = ShortVector.fromMemorySegment(HALF_SPECIES, t, (base + i) * 2L, ORDER);
                    ((IntVector) h.convertShape(VectorOperators.S2I, INT_SPECIES, 0)).lanewise(VectorOperators.LSHL, 16)
                            .reinterpretAsFloats().intoArray(buf, i);
                }
                for (; i < real; i++) buf[i] = Float.intBitsToFloat(t.getAtIndex(SHORT, base + i) << 16);
            }
            case F16 -> {
                short[] raw = RAW.get();
                MemorySegment.copy(t, SHORT, base * 2L, raw, 0, real);
                for (int i = 0; i < real; i++) buf[i] = Float.float16ToFloat(raw[i]);
            }
        }
        if (real < len) Arrays.fill(buf, real, len, Float.NEGATIVE_INFINITY);
    }

    // ---------------------------------------------------------------- dense teacher

    private static void checkTeacherMax(int r, float mt) {
        if (mt == Float.NEGATIVE_INFINITY || Float.isNaN(mt) || mt == Float.POSITIVE_INFINITY) {
            throw new IllegalArgumentException("teacher row " + r + " has no finite maximum logit (max = " + mt + ")");
        }
    }

    /**
     * After pass A of a dense row: a NaN teacher sum means a NaN logit (the maxima skip NaN) or a
     * +inf one outside the block the maxima started from (2^(+inf − m) is NaN), an error that
     * names the row, the first such column and its value.
     */
    private static void checkTeacherSum(int r, double zt, TeacherTargets.Dense d, long to) {
        if (!Double.isNaN(zt)) return;
        int column = 0;
        float x = 0f;
        while (column < d.vocab() && !Float.isNaN(x = d.type().read(d.logits(), to + column)) && x != Float.POSITIVE_INFINITY) column++;
        throw new IllegalArgumentException("teacher row " + r + (Float.isNaN(x) ? " has a NaN logit" : " has an infinite logit (+inf)")
                + " at column " + column);
    }

    // ---------------------------------------------------------------- dense teacher, forward KL

    /** A block's sums above this (2^56) mean its exps ran against maxima far below its own: DenseRow.passA. */
    private static final float RAISE = 0x1p56f;

    /**
     * A dense row's maxima and where the lines of this thread's next row are (Scratch.nextRow: the
     * next of its batch, or the first of the batch it claimed next; this row when there is none),
     * which pass A touches so they arrive while this row computes.
     *
     * <p>The maxima are lazy. Exps need a shift at or near the row's maximum, not the maximum
     * itself: a row's sums and loss are the same for any shift, up to rounding, as long as no exp
     * overflows or every one underflows. So no pass reads the whole row for its maxima: they
     * start as the exact maxima of the block pass A visits first (the last; the whole row's when
     * that block has none that is finite), which are at most the row's, so no exp underflows for
     * want of a larger one. A block whose exps land far above them (a block sum over
     * {@link #RAISE}: exps up to 2^56, whose squares, sums and products with the logits stay finite
     * in fp32; `VectorOps.exp2` gives +inf, not garbage, past 2^127) raises them to its own
     * maxima, and what pass A has done so far is rescaled (the path's rows by
     * {@link Rescale}, the sums here) before the block runs again. With real logits a row rarely
     * spreads that far (56 octaves: 77 logits at T = 2, 39 at T = 1), and then it costs one block
     * again and a rescale of the blocks before. Dropping the pass that read both rows for their
     * maxima (6 of the row's ~52 vector operations per 16 elements) measured 0.88–1.03 of the
     * time at 2048 × 32000 in one JVM, about 0.93 on average (docs/KERNELS.md#passes-and-memory). A student row without
     * a finite maximum, a diverged model, gives a NaN loss as on the other paths, which the
     * trainer's guard reports.
     */
    private static final class DenseRow {
        final long to, nextS, nextT;
        final int vt;
        /** The running maxima: every exp of pass A so far is shifted by these. */
        float ms, mt;

        private DenseRow(long to, int vt, float ms, float mt, long nextS, long nextT) {
            this.to = to;
            this.vt = vt;
            this.ms = ms;
            this.mt = mt;
            this.nextS = nextS;
            this.nextT = nextT;
        }

        static DenseRow start(int r, MemorySegment s, long so, TeacherTargets.Dense d, int v, Scratch sc) {
            int vt = d.vocab(), next = sc.nextRow, first = (v - 1) / BLOCK * BLOCK;   // pass A's first block
            long to = (long) r * vt;
            float ms = VectorOps.maxSkippingNaN(s, so + first, v - first);
            if (!Float.isFinite(ms)) ms = VectorOps.maxSkippingNaN(s, so, v);
            float mt = first < vt ? teacherMax(d, to + first, vt - first, sc.teacher) : Float.NEGATIVE_INFINITY;
            if (!Float.isFinite(mt)) mt = teacherMax(d, to, vt, sc.teacher);
            checkTeacherMax(r, mt);
            return new DenseRow(to, vt, ms, mt, (long) next * v * 4L, (long) next * vt * 2L);
        }

        /**
         * Byte offset in the next student row where the touches of this row's bi-th block of
         * pass A start: blocks touch the next row in the order pass A visits them (pass A runs
         * backwards; the touches still run forwards), a line per 16 columns.
         */
        long fetchS(int bi) {
            return nextS + (long) bi * BLOCK * 4L;
        }

        /** The last line of the next student row: touches stop there. */
        long fetchEndS(int v) {
            return nextS + v * 4L - 1;
        }

        /** As fetchS, in the next teacher row (half a line per 16 columns). */
        long fetchT(int bi) {
            return nextT + (long) bi * BLOCK * 2L;
        }

        /** The last byte of the next teacher row. */
        long fetchEndT() {
            return nextT + vt * 2L - 1;
        }

        /**
         * Pass A of a dense row, last block first (see denseForwardKl's zig-zag): per block, the
         * teacher block widened into sc.teacher (−inf past the teacher's vocabulary), Σ exp(s − m_s)
         * by its own exp when T is not 1 or 2, then the path's loop over the block, against the
         * running maxima; a block over {@link #RAISE} raises them (see the class comment) and runs
         * again. Returns {Z_s, Z_1, Z_t, Σ e_t (d_t − d_s)} at the final maxima (ms, mt; d = logit −
         * max, or 0 for a path without the fourth), after a NaN in Z_t has been reported by row and
         * column.
         */
        double[] passA(int r, MemorySegment s, long so, TeacherTargets.Dense d, int v, float invT, int power, Scratch sc,
                       PassABlock block, Rescale rescale) {
            double zs = 0, zsq = 0, z1 = 0, zt = 0, acc = 0;
            boolean ownZ1 = power != 1 && power != 2;
            int nb = (v + BLOCK - 1) / BLOCK;
            for (int bi = 0; bi < nb; bi++) {
                int j0 = (nb - 1 - bi) * BLOCK;
                int len = Math.min(BLOCK, v - j0);
                long o = so + j0;
                loadTeacher(d, to, j0, len, sc.teacher);
                float z1b = ownZ1 ? VectorOps.expSumAffine(s, o, len, ms, 1f) : 0f;
                float[] sums = z1b > RAISE ? null : block.run(bi, j0, len, o, ms, mt);
                if (sums == null || overflowed(sums)) {
                    float ms2 = VectorOps.greater(ms, VectorOps.maxSkippingNaN(s, o, len));
                    float mt2 = VectorOps.greater(mt, VectorOps.maxSkippingNaN(sc.teacher, len));
                    checkTeacherMax(r, mt2);
                    // raising ms by dms and mt by dmt: e_s by fs = exp(−dms/T), e_t by ft, and
                    // Σ e_t (d_t − d_s) to ft (Σ e_t (d_t − d_s) + (dms − dmt) Σ e_t)
                    double dms = (double) ms2 - ms, dmt = (double) mt2 - mt;
                    double fs = Math.exp(-dms * invT), ft = Math.exp(-dmt * invT);
                    acc = ft * (acc + (dms - dmt) * zt);
                    zs *= fs;
                    zsq *= fs * fs;
                    zt *= ft;
                    z1 *= Math.exp((double) ms - ms2);
                    rescale.run(j0 + len, v, (float) fs, (float) ft, (float) dms, (float) dmt);
                    sc.raises++;
                    ms = ms2;
                    mt = mt2;
                    z1b = ownZ1 ? VectorOps.expSumAffine(s, o, len, ms, 1f) : 0f;
                    sums = block.run(bi, j0, len, o, ms, mt);
                }
                zs += sums[0];
                zsq += sums[1];
                z1 += z1b;
                zt += sums[2];
                acc += sums[3];
                sc.fetched += (long) sums[4];
            }
            checkTeacherSum(r, zt, d, to);
            if (power == 1) z1 = zs;
            if (power == 2) z1 = zsq;                      // e_s^2 = exp(s − ms)
            return new double[]{zs, z1, zt, acc};
        }
    }

    /**
     * Whether a block's sums ({Σ e_s, Σ e_s², Σ e_t, ...}) are over {@link #RAISE}: then pass A
     * raises the maxima and runs the block again (DenseRow.passA), and the block must have left
     * the student row as it was.
     */
    private static boolean overflowed(float[] sums) {
        return sums[0] > RAISE || sums[2] > RAISE;
    }

    /**
     * A path's rows of pass A over columns [from, to), the blocks done before a raise of the
     * maxima by dms and dmt (DenseRow): e_s scaled by fs = exp(−dms/T), e_t by ft = exp(−dmt/T)
     * (or (t − m_t)/T lowered by dmt/T).
     */
    @FunctionalInterface
    private interface Rescale {
        void run(int from, int to, float fs, float ft, float dms, float dmt);
    }

    /** Rescale for rows of e_s and e_t. */
    private static Rescale scaling(float[] eS, float[] eT) {
        return (from, to, fs, ft, dms, dmt) -> {
            for (int j = from; j < to; j++) {
                eS[j] *= fs;
                eT[j] *= ft;
            }
        };
    }

    /**
     * One block of a dense pass A (columns [j0, j0 + len), student at element o, bi-th in pass A's
     * order) against the maxima ms and mt: returns {Σ e_s, Σ e_s², Σ e_t, Σ e_t (d_t − d_s) or 0,
     * fetched} (d = logit − max), and leaves the student row as it was when they are
     * {@link #overflowed}.
     * Called once per 2,048 columns, not per element.
     */
    @FunctionalInterface
    private interface PassABlock {
        float[] run(int bi, int j0, int len, long o, float ms, float mt);
    }

    /**
     * Dense teacher, forward KL.
     *
     * <p>No pass reads the rows for their maxima: m_s and m_t are DenseRow's lazy ones, and pass A
     * of the previous row has touched the lines of this one, so it works from L2. Pass A, block
     * by block: one loop computes e_s = exp((s − m_s)/T) and e_t = exp((t − m_t)/T), their sums, Σ e_s² (the
     * hard-label normalizer Z_1 at T = 2; T = 1 uses Z_s, other T one more exp per element), and
     * Σ e_t ((t − m_t) − (s − m_s)), which is the loss:
     * KL = Σ p (lp − lq) = (1/T) Σ e_t d / Z_t − log Z_t + log Z_s, so no logarithm per element
     * and no pass re-reads s or t for it. e_t goes to a per-thread row (a Java array: a loop that
     * stores to a MemorySegment keeps its segment checks inside the loop, see
     * docs/KERNELS.md#stores-constants-and-max); e_s to an L1 block that one bulk copy moves over
     * the gradient block it will become (over s, which pass A has just consumed, when in place),
     * or, when pass B needs s or a power of e_s (the CE at T ≠ 2), to a per-thread row. Pass B
     * scales them: q = e_s / Z_s, p = e_t / Z_t and (at T = 2) softmax(s) = e_s² / Z_1 in
     * registers, g = cq (q − p) + c1 softmax(s), over the e_s in the gradient buffer (from the
     * e_s row through a block buffer and one bulk copy on the other paths).
     *
     * <p>Zig-zag: pass A walks the blocks last to first and pass B first to last, so each pass
     * starts on the lines the previous one touched last. Working set per thread: the rows of s
     * (= g in place), t and e_t, 10V bytes with a bf16 teacher (14V with an e_s row), plus the
     * next row's lines; at V = 128,256 that is about the 2 MB L2, and with LRU eviction a pass in
     * the same order as the last one misses on every line of a working set a little larger than
     * the cache, in the reverse order on few.
     *
     * @return {m_s + log Z_1 (the CE before − s[label]), KL}
     */
    private static float[] denseForwardKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                                          int v, float invT, float c1, float cq, Scratch sc) {
        int power = integerTemperature(invT);
        if (g != null && (power == 2 || power == 1 && c1 == 0f) && NativeRows.active() && d.vocab() == v
                && d.type() != LogitType.F16 && s.isNative() && g.isNative() && d.logits().isNative()) {
            float[] ceKl = nativeForwardKl(r, s, so, g, d, v, invT, power, c1, cq, sc);
            if (ceKl != null) return ceKl;
        }
        DenseRow row = DenseRow.start(r, s, so, d, v, sc);
        sc.rows(v);
        float[] tb = sc.teacher, eS = sc.eS, eT = sc.eT;
        float scale2 = invT * VectorOps.LOG2E;   // exp(d/T) = 2^(d scale2): VectorOps.exp2
        // e_s over the gradient block it becomes (s when in place, already consumed by pass A):
        // 4V bytes less working set than an e_s row, when pass B needs neither s nor a power of e_s
        boolean eInG = g != null && (c1 == 0f || power == 2);
        Rescale rescale = !eInG ? scaling(eS, eT) : (from, to, fs, ft, dms, dmt) -> {
            for (int j = from; j < to; j++) {
                set(g, so + j, get(g, so + j) * fs);
                eT[j] *= ft;
            }
        };
        double[] z = row.passA(r, s, so, d, v, invT, power, sc, (bi, j0, len, o, ms, mt) -> {
            float[] sums = fklBlock(s, o, len, ms, scale2, eInG ? sc.gb : eS, eInG ? 0 : j0, tb, mt, eT, j0,
                    row.fetchS(bi), row.fetchEndS(v), d.logits(), row.fetchT(bi), row.fetchEndT());
            if (eInG && !overflowed(sums)) MemorySegment.copy(sc.gb, 0, g, F32, o * 4L, len);   // s is still needed otherwise
            return sums;
        }, rescale);
        float ms = row.ms;
        double zs = z[0], z1 = z[1], zt = z[2], acc = z[3] * invT;   // acc = Σ e_t ((t − mt) − (s − ms))/T
        double lzs = Math.log(zs), lz1 = Math.log(z1), lzt = Math.log(zt);
        double kl = acc / zt - lzt + lzs;
        if (g != null) {
            // pass B: g = cq (q − p) + c1 softmax(s), from the e_s and e_t rows: the CE term from
            // e_s² in registers at T = 2 (or none, alpha = 0), else a per-block softmax(s)
            float a = (float) (cq / zs), b = (float) (cq / zt), c1z = (float) (c1 / z1);
            float[] sb = sc.sb, gb = sc.gb;
            for (int j0 = 0; j0 < v; j0 += BLOCK) {
                int len = Math.min(BLOCK, v - j0);
                if (eInG) {   // every squared-CE row with a gradient
                    fklGradientInG(g, so + j0, eT, j0, len, a, b, c1z);
                    continue;
                }
                if (power == 0) {
                    VectorOps.expAffine(s, so + j0, len, ms, 1f, (float) lz1, sb);
                } else {
                    VectorOps.powerScaled(eS, j0, len, power, 1 / (float) z1, sb);
                }
                fklGradient(eS, eT, j0, len, a, b, sb, c1, gb);
                MemorySegment.copy(gb, 0, g, F32, (so + j0) * 4L, len);
            }
        }
        return new float[]{(float) (ms + lz1), (float) kl};
    }

    /**
     * denseForwardKl's eInG rows (the gradient over e_s in the gradient row: T = 2, or T = 1 with no
     * hard-label term) in C (NativeRows, src/main/c/distill_cpu.c): the same passes and arithmetic,
     * with prefetches of the next row instead of touches. Returns null, having written nothing,
     * for a row without finite maxima (the Java path then takes it); teacher errors are named here.
     */
    private static float[] nativeForwardKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                                           int v, float invT, int power, float c1, float cq, Scratch sc) {
        sc.nativeScratch(v);
        MemorySegment t = d.logits();
        boolean bf16 = d.type() == LogitType.BF16;
        long tBytes = bf16 ? 2L : 4L, next = sc.nextRow, to = (long) r * v * tBytes;
        // checked here, once per row: the C code reads and writes within these ranges only
        Objects.checkFromIndexSize(so * 4L, 4L * v, s.byteSize());
        Objects.checkFromIndexSize(so * 4L, 4L * v, g.byteSize());
        Objects.checkFromIndexSize(to, v * tBytes, t.byteSize());
        Objects.checkFromIndexSize(next * v * 4L, 4L * v, s.byteSize());
        Objects.checkFromIndexSize(next * v * tBytes, v * tBytes, t.byteSize());
        int code = NativeRows.forwardKlRow(s.address() + so * 4L, g.address() + so * 4L, t.address() + to, bf16, v,
                invT, power, c1, cq, s.address() + next * v * 4L, 4L * v, t.address() + next * v * tBytes, v * tBytes,
                sc.nativeET, sc.nativeOut);
        MemorySegment out = sc.nativeOut;
        switch (code) {
            case NativeRows.OK -> {
                sc.nativeRows++;
                sc.raises += (long) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 2);
                return new float[]{(float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 0), (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 1)};
            }
            case NativeRows.NOT_FINITE -> {
                return null;
            }
            case NativeRows.TEACHER_NAN -> {
                checkTeacherSum(r, Double.NaN, d, (long) r * v);
                throw new AssertionError("teacher row " + r + ": NaN sum without a NaN or +inf logit");
            }
            case NativeRows.TEACHER_MAX -> {
                checkTeacherMax(r, (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 3));
                throw new AssertionError("teacher row " + r + ": a finite maximum reported as not finite");
            }
            default -> throw new IllegalStateException("distillery_fkl_row returned " + code + " for row " + r);
        }
    }

    /**
     * Pass B over one block, CE term from a per-block softmax(s): gb = a e_s − b e_t + c1 sb, a =
     * cq/Z_s, b = cq/Z_t. No branch inside the vector loop: C2 boxes vectors that meet at a join
     * in a loop (measured: 3 GB/s of garbage, a third of the kernel's time).
     */
    private static void fklGradient(float[] eS, float[] eT, int j0, int len, float a, float b,
                                    float[] sb, float c1, float[] gb) {
        int i = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector c = FloatVector.fromArray(SPECIES, sb, i).fma(FloatVector.broadcast(SPECIES, c1),
                    FloatVector.fromArray(SPECIES, eT, j0 + i).fma(-b, 0f));
            FloatVector.fromArray(SPECIES, eS, j0 + i).fma(FloatVector.broadcast(SPECIES, a), c).intoArray(gb, i);
        }
        for (; i < len; i++) gb[i] = Math.fma(eS[j0 + i], a, Math.fma(sb[i], c1, eT[j0 + i] * -b));
    }

    /**
     * Pass B over one block with e_s read from the gradient buffer, where pass A left it (T = 2
     * or no hard label), and the gradient written over it: g = e_s (c1z e_s + a) − b e_t, three
     * fused operations per vector. Stored to the segment directly: this loop keeps its segment
     * checks inside (docs/KERNELS.md#stores-constants-and-max), but with three operations per
     * vector they cost less than staging the block in an array and copying it (measured in one
     * JVM, variants alternated, 2 threads: 4–11% of the whole kernel).
     */
    private static void fklGradientInG(MemorySegment g, long go, float[] eT, int j0, int len, float a, float b, float c1z) {
        int i = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector e = FloatVector.fromMemorySegment(SPECIES, g, (go + i) * 4L, ORDER);
            e.fma(e.fma(c1z, a), FloatVector.fromArray(SPECIES, eT, j0 + i).mul(-b)).intoMemorySegment(g, (go + i) * 4L, ORDER);
        }
        for (; i < len; i++) {
            float e = get(g, go + i);
            set(g, go + i, Math.fma(e, Math.fma(e, c1z, a), eT[j0 + i] * -b));
        }
    }

    // ---------------------------------------------------------------- dense teacher, reverse KL

    /**
     * Dense teacher, reverse KL, on denseForwardKl's plan: DenseRow's lazy maxima (fetching the
     * next row meanwhile), pass A computes e_s = exp((s − m_s)/T) and e_t's sum in one loop and
     * keeps e_s (scratch row: s must survive for log q) and (t − m_t)/T (a per-thread row), pass B
     * sums RKL = Σ q (lq − max(lp, floor)) and pass C writes cq q (lq − lp − RKL) + c1 softmax(s)
     * from those rows with no exp and no teacher read: 2 exps per element instead of 4.
     *
     * @return {m_s + log Z_1 (the CE before − s[label]), RKL}
     */
    private static float[] denseReverseKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                                          int v, float invT, float c1, float cq, Scratch sc) {
        DenseRow row = DenseRow.start(r, s, so, d, v, sc);
        int power = integerTemperature(invT);
        sc.rows(v);
        float[] tb = sc.teacher, eS = sc.eS, tScaled = sc.eT;   // tScaled: the row of (t − m_t)/T
        float scale2 = invT * VectorOps.LOG2E;
        // zig-zag, as in denseForwardKl: A backwards, B forwards, C backwards
        double[] z = row.passA(r, s, so, d, v, invT, power, sc, (bi, j0, len, o, ms, mt) -> rklPassA(s, o, len, ms, invT, scale2,
                eS, j0, tb, mt, tScaled, row.fetchS(bi), row.fetchEndS(v), d.logits(), row.fetchT(bi), row.fetchEndT()),
                (from, to, fs, ft, dms, dmt) -> {
                    for (int j = from; j < to; j++) {
                        eS[j] *= fs;
                        tScaled[j] -= dmt * invT;
                    }
                });
        float ms = row.ms;
        double zs = z[0], z1 = z[1], zt = z[2];
        int nb = (v + BLOCK - 1) / BLOCK;
        float lzs = (float) Math.log(zs), lzt = (float) Math.log(zt), fq = (float) (1 / zs);
        double rkl = 0;
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            rkl += rklBlock(s, so + j0, Math.min(BLOCK, v - j0), ms, invT, lzs, lzt, eS, j0, fq, tScaled, 0f, 0f, null, null, 0f);
        }
        if (g != null) {
            float[] sb = sc.sb, gb = sc.gb;
            if (c1 == 0f) Arrays.fill(sb, 0f);
            for (int bi = 0; bi < nb; bi++) {
                int j0 = (nb - 1 - bi) * BLOCK;
                int len = Math.min(BLOCK, v - j0);
                long o = so + j0;
                if (c1 != 0f) {
                    if (power == 0) {
                        VectorOps.expAffine(s, o, len, ms, 1f, (float) Math.log(z1), sb);
                    } else {
                        VectorOps.powerScaled(eS, j0, len, power, (float) (1 / z1), sb);
                    }
                }
                rklBlock(s, o, len, ms, invT, lzs, lzt, eS, j0, fq, tScaled, (float) rkl, cq, gb, sb, c1);
                MemorySegment.copy(gb, 0, g, F32, o * 4L, len);
            }
        }
        return new float[]{(float) (ms + Math.log(z1)), (float) rkl};
    }

    /**
     * Pass A of denseReverseKl over one block: {Σ e_s, Σ e_s², Σ e_t, 0, fetched}; e_s to eS, (t − mt)/T
     * to tScaled. Both exps in base 2 (see fklBlock): e_s from (s − ms) scale2, e_t from
     * ((t − mt)/T) log2(e), since tScaled keeps natural units for pass B's log p.
     */
    private static float[] rklPassA(MemorySegment s, long o, int len, float ms, float invT, float scale2, float[] eS, int j0,
                                    float[] tb, float mt, float[] tScaled, long fetchS, long fetchEndS,
                                    MemorySegment t, long fetchT, long fetchEndT) {
        FloatVector zs = FloatVector.zero(SPECIES), zsq = zs, zt = zs;
        int i = 0, fetched = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            fetched += s.get(ValueLayout.JAVA_BYTE, Math.min(fetchS + i * 4L, fetchEndS))
                    + t.get(ValueLayout.JAVA_BYTE, Math.min(fetchT + i * 2L, fetchEndT));
            FloatVector es = VectorOps.exp2(FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms), scale2);
            FloatVector dt = FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT);
            zs = zs.add(es);
            zsq = es.fma(es, zsq);
            zt = zt.add(VectorOps.exp2(dt, VectorOps.LOG2E));
            es.intoArray(eS, j0 + i);
            dt.intoArray(tScaled, j0 + i);
        }
        float szs = VectorOps.sumLanes(zs), szsq = VectorOps.sumLanes(zsq), szt = VectorOps.sumLanes(zt);
        for (; i < len; i++) {
            float es = VectorOps.exp2(get(s, o + i) - ms, scale2), dt = (tb[i] - mt) * invT;
            szs += es;
            szsq = Math.fma(es, es, szsq);
            szt += VectorOps.exp2(dt, VectorOps.LOG2E);
            eS[j0 + i] = es;
            tScaled[j0 + i] = dt;
        }
        return new float[]{szs, szsq, szt, 0f, fetched};
    }

    /**
     * Passes B and C of denseReverseKl over one block, with q = e_s fq, lq = (s − ms)/T − lzs and
     * lp = max((t − mt)/T − lzt, floor): without gb, returns Σ q (lq − lp) (terms with q = 0 left
     * out); with gb, writes cq q (lq − lp − rkl) + c1 sb to it and returns 0. Two loops, no branch
     * in either (see fklGradient).
     */
    private static float rklBlock(MemorySegment s, long o, int len, float ms, float invT, float lzs, float lzt,
                                  float[] eS, int j0, float fq, float[] tScaled, float rkl, float cq,
                                  float[] gb, float[] sb, float c1) {
        int i = 0, bound = SPECIES.loopBound(len);
        if (gb == null) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (; i < bound; i += LANES) {
                FloatVector lq = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms).mul(invT).sub(lzs);
                FloatVector lp = floor(FloatVector.fromArray(SPECIES, tScaled, j0 + i).sub(lzt));
                FloatVector q = FloatVector.fromArray(SPECIES, eS, j0 + i).mul(fq);
                acc = acc.add(q.mul(lq.sub(lp)).blend(0f, q.compare(VectorOperators.LE, 0f)));
            }
            float sum = VectorOps.sumLanes(acc);
            for (; i < len; i++) {
                float q = eS[j0 + i] * fq;
                if (q > 0f) sum += q * (((get(s, o + i) - ms) * invT - lzs) - Math.max(tScaled[j0 + i] - lzt, LOG_FLOOR));
            }
            return sum;
        }
        for (; i < bound; i += LANES) {
            FloatVector lq = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms).mul(invT).sub(lzs);
            FloatVector lp = floor(FloatVector.fromArray(SPECIES, tScaled, j0 + i).sub(lzt));
            FloatVector q = FloatVector.fromArray(SPECIES, eS, j0 + i).mul(fq);
            FloatVector gq = q.mul(lq.sub(lp).sub(rkl)).mul(cq).blend(0f, q.compare(VectorOperators.LE, 0f));
            FloatVector.fromArray(SPECIES, sb, i).mul(c1).add(gq).intoArray(gb, i);
        }
        for (; i < len; i++) {
            float q = eS[j0 + i] * fq, lq = (get(s, o + i) - ms) * invT - lzs, lp = Math.max(tScaled[j0 + i] - lzt, LOG_FLOOR);
            gb[i] = sb[i] * c1 + (q > 0f ? q * (lq - lp - rkl) * cq : 0f);
        }
        return 0f;
    }

    // ---------------------------------------------------------------- dense teacher, JSD

    /** 2^64 and its log: log m = log(2^64 m) − 64 ln 2 keeps a subnormal mixture m out of log's −inf. */
    private static final float MIX_SCALE = 0x1p64f, LOG_MIX_SCALE = (float) (64 * Math.log(2));

    /**
     * Dense teacher, generalized JSD(β) = β KL(p‖m) + (1−β) KL(q‖m), m = β p + (1−β) q, on
     * denseForwardKl's plan. DenseRow's lazy maxima (fetching the next row meanwhile). Pass A
     * (backwards): fklBlock's loop, e_s and e_t to per-thread rows and their sums. Pass B
     * (forwards): from those rows and one log per element, JSD = Σ β p (lp − lm) + Σ q g_q with
     * g_q = (1−β)(lq − lm), and S = Σ q g_q; g_q overwrites e_t, no longer needed. Pass C
     * (backwards): dL/ds = cq q (g_q − S) + c1 softmax(s), from the rows only. Two exps and one
     * log per element, where the path before this one took five exps and two logs (and boxed
     * vectors: its loops were inlined past C2's node budget).
     *
     * @return {m_s + log Z_1 (the CE before − s[label]), JSD}
     */
    private static float[] denseJsd(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                                    int v, float invT, float beta, float c1, float cq, Scratch sc) {
        DenseRow row = DenseRow.start(r, s, so, d, v, sc);
        int power = integerTemperature(invT);
        sc.rows(v);
        float[] tb = sc.teacher, eS = sc.eS, eT = sc.eT;
        float scale2 = invT * VectorOps.LOG2E;   // exp(d/T) = 2^(d scale2): VectorOps.exp2
        // zig-zag: A backwards, B forwards, C backwards
        double[] z = row.passA(r, s, so, d, v, invT, power, sc, (bi, j0, len, o, ms, mt) -> fklBlock(s, o, len, ms, scale2, eS, j0,
                tb, mt, eT, j0, row.fetchS(bi), row.fetchEndS(v), d.logits(), row.fetchT(bi), row.fetchEndT()), scaling(eS, eT));
        float ms = row.ms, mt = row.mt;
        double zs = z[0], z1 = z[1], zt = z[2];
        int nb = (v + BLOCK - 1) / BLOCK;
        float lzs = (float) Math.log(zs), lzt = (float) Math.log(zt), fs = (float) (1 / zs), ft = (float) (1 / zt);
        double value = 0, sumQg = 0;
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            loadTeacher(d, row.to, j0, len, tb);
            float[] sums = jsdBlock(s, so + j0, len, ms, invT, lzs, tb, mt, lzt, eS, eT, j0, fs, ft, beta);
            value += sums[0];
            sumQg += sums[1];
        }
        if (g != null) {
            float a = cq * fs, sq = (float) sumQg;
            float[] sb = sc.sb, gb = sc.gb;
            boolean squared = c1 == 0f || power == 2;   // softmax(s) = e_s² / Z_1 in registers (or no CE)
            for (int bi = 0; bi < nb; bi++) {
                int j0 = (nb - 1 - bi) * BLOCK;
                int len = Math.min(BLOCK, v - j0);
                long o = so + j0;
                if (squared) {
                    jsdGradientSquared(eS, eT, j0, len, a, sq, (float) (c1 / z1), gb);
                } else {
                    if (power == 0) {
                        VectorOps.expAffine(s, o, len, ms, 1f, (float) Math.log(z1), sb);
                    } else {
                        VectorOps.powerScaled(eS, j0, len, power, (float) (1 / z1), sb);
                    }
                    jsdGradient(eS, eT, j0, len, a, sq, sb, c1, gb);
                }
                MemorySegment.copy(gb, 0, g, F32, o * 4L, len);
            }
        }
        return new float[]{(float) (ms + Math.log(z1)), (float) value};
    }

    /**
     * Pass B of denseJsd over one block, q = e_s fs, p = e_t ft, lq = (s − ms)/T − lzs, lp =
     * (t − mt)/T − lzt, lm = log m: returns {Σ β p (lp − lm) + Σ q g_q, Σ q g_q}, g_q = (1−β)(lq − lm),
     * terms with p = 0 or q = 0 left out, and writes g_q (0 where q = 0) over e_t. m is mixed at
     * 2^64 times its size (see MIX_SCALE): e_s fs can be subnormal, which log takes for 0.
     */
    private static float[] jsdBlock(MemorySegment s, long o, int len, float ms, float invT, float lzs, float[] tb,
                                    float mt, float lzt, float[] eS, float[] eT, int j0, float fs, float ft, float beta) {
        float ob = 1f - beta, cp = beta * ft * MIX_SCALE, cqm = ob * fs * MIX_SCALE;
        FloatVector accV = FloatVector.zero(SPECIES), accS = accV;
        int i = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector es = FloatVector.fromArray(SPECIES, eS, j0 + i), et = FloatVector.fromArray(SPECIES, eT, j0 + i);
            FloatVector lm = VectorOps.log(es.fma(FloatVector.broadcast(SPECIES, cqm), et.mul(cp))).sub(LOG_MIX_SCALE);
            FloatVector lq = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms).mul(invT).sub(lzs);
            FloatVector lp = FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT).sub(lzt);
            FloatVector q = es.mul(fs), p = et.mul(ft);
            FloatVector gq = lq.sub(lm).mul(ob).blend(0f, q.compare(VectorOperators.LE, 0f));
            accS = q.fma(gq, accS);
            accV = p.mul(beta).mul(lp.sub(lm)).blend(0f, p.compare(VectorOperators.LE, 0f)).add(accV);
            gq.intoArray(eT, j0 + i);
        }
        float sv = VectorOps.sumLanes(accV), ss = VectorOps.sumLanes(accS);
        for (; i < len; i++) {
            float es = eS[j0 + i], et = eT[j0 + i];
            float lm = VectorOps.log(Math.fma(es, cqm, et * cp)) - LOG_MIX_SCALE;
            float lq = (get(s, o + i) - ms) * invT - lzs, lp = (tb[i] - mt) * invT - lzt;
            float q = es * fs, p = et * ft;
            float gq = q > 0f ? (lq - lm) * ob : 0f;
            ss = Math.fma(q, gq, ss);
            if (p > 0f) sv += p * beta * (lp - lm);
            eT[j0 + i] = gq;
        }
        return new float[]{sv + ss, ss};
    }

    /** Pass C of denseJsd over one block into gb: g = e_s a (g_q − S) + c1 sb, a = cq fs, g_q in gq. */
    private static void jsdGradient(float[] eS, float[] gq, int j0, int len, float a, float sq, float[] sb, float c1, float[] gb) {
        int i = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector w = FloatVector.fromArray(SPECIES, gq, j0 + i).sub(sq).mul(a);
            FloatVector.fromArray(SPECIES, eS, j0 + i).fma(w, FloatVector.fromArray(SPECIES, sb, i).mul(c1)).intoArray(gb, i);
        }
        for (; i < len; i++) gb[i] = Math.fma(eS[j0 + i], (gq[j0 + i] - sq) * a, sb[i] * c1);
    }

    /** Pass C of denseJsd when softmax(s) = e_s² / Z_1 (T = 2) or there is no CE (c1z = 0): g = e_s (c1z e_s + a (g_q − S)). */
    private static void jsdGradientSquared(float[] eS, float[] gq, int j0, int len, float a, float sq, float c1z, float[] gb) {
        int i = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector e = FloatVector.fromArray(SPECIES, eS, j0 + i);
            e.fma(FloatVector.broadcast(SPECIES, c1z), FloatVector.fromArray(SPECIES, gq, j0 + i).sub(sq).mul(a)).mul(e).intoArray(gb, i);
        }
        for (; i < len; i++) {
            float e = eS[j0 + i];
            gb[i] = Math.fma(e, c1z, (gq[j0 + i] - sq) * a) * e;
        }
    }

    /** max(x, LOG_FLOOR) by a compare and a blend (a Java-semantics max is six instructions); NaN stays NaN. */
    private static FloatVector floor(FloatVector x) {
        return x.blend(LOG_FLOOR, x.lt(LOG_FLOOR));
    }

    /**
     * Max of the non-NaN logits of a dense teacher row (bf16 widened in registers; other types
     * through buf), −inf when there are none; see VectorOps.maxSkippingNaN. A NaN logit makes
     * the row's sums NaN, a NaN loss the trainer's guard reports.
     */
    private static float teacherMax(TeacherTargets.Dense d, long to, int vt, float[] buf) {
        if (d.type() != LogitType.BF16) {
            float m = Float.NEGATIVE_INFINITY;
            for (int j0 = 0; j0 < vt; j0 += BLOCK) {
                int len = Math.min(BLOCK, vt - j0);
                loadTeacher(d, to, j0, len, buf);
                m = VectorOps.greater(m, VectorOps.maxSkippingNaN(buf, len));
            }
            return m;
        }
        MemorySegment t = d.logits();
        int i = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (vt >= LANES) {
            FloatVector m0 = FloatVector.broadcast(SPECIES, m), m1 = m0;
            for (int bound = SPECIES.loopBound(vt) - 2 * LANES; i <= bound; i += 2 * LANES) {
                FloatVector x0 = widen(t, to + i), x1 = widen(t, to + i + LANES);
                m0 = m0.blend(x0, x0.compare(VectorOperators.GT, m0));
                m1 = m1.blend(x1, x1.compare(VectorOperators.GT, m1));
            }
            for (int bound = SPECIES.loopBound(vt); i < bound; i += LANES) {
                FloatVector x0 = widen(t, to + i);
                m0 = m0.blend(x0, x0.compare(VectorOperators.GT, m0));
            }
            m0 = m0.blend(m1, m1.compare(VectorOperators.GT, m0));
            for (int l = 0; l < LANES; l++) m = VectorOps.greater(m, m0.lane(l));
        }
        for (; i < vt; i++) m = VectorOps.greater(m, Float.intBitsToFloat(t.getAtIndex(SHORT, to + i) << 16));
        return m;
    }

    /**
     * Pass A's loop over one block: with d_s = s − ms and d_t = t − mt (t from tb), e_s =
     * exp(d_s/T) = 2^(d_s k) to eS and e_t = 2^(d_t k) to eT (both at j0), k = log2(e)/T (the
     * caller's scale2, folded into VectorOps.exp2's reduction). Returns {Σ e_s, Σ e_s², Σ e_t,
     * Σ e_t (d_t − d_s), fetched}, terms whose e_t underflows to 0 left out of the fourth (they
     * may be 0 · ∞). Each d is one exact-or-rounded subtraction; no d k is rounded (see exp2), and
     * at the maxima d = 0, so a one-column row's KL comes out 0, not an ulp of ms·k. Branch-free
     * loop body (see fklGradient).
     */
    private static float[] fklBlock(MemorySegment s, long o, int len, float ms, float scale2, float[] eS, int eso,
                                    float[] tb, float mt, float[] eT, int j0, long fetchS, long fetchEndS,
                                    MemorySegment t, long fetchT, long fetchEndT) {
        FloatVector zs = FloatVector.zero(SPECIES), zsq = zs, zt = zs, acc = zs;
        float lo = VectorOps.EXP2_LO / scale2;   // exp2's underflow: e_t = 0 below
        int i = 0, fetched = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            // one line of the next student row and half a line of its teacher row per iteration
            fetched += s.get(ValueLayout.JAVA_BYTE, Math.min(fetchS + i * 4L, fetchEndS))
                    + t.get(ValueLayout.JAVA_BYTE, Math.min(fetchT + i * 2L, fetchEndT));
            FloatVector ds = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms);
            FloatVector dt = FloatVector.fromArray(SPECIES, tb, i).sub(mt);
            FloatVector es = VectorOps.exp2(ds, scale2), et = VectorOps.exp2(dt, scale2);
            zs = zs.add(es);
            zsq = es.fma(es, zsq);
            zt = zt.add(et);
            acc = dt.sub(ds).blend(0f, dt.lt(lo)).fma(et, acc);
            es.intoArray(eS, eso + i);
            et.intoArray(eT, j0 + i);
        }
        float szs = VectorOps.sumLanes(zs), szsq = VectorOps.sumLanes(zsq), szt = VectorOps.sumLanes(zt), sacc = VectorOps.sumLanes(acc);
        for (; i < len; i++) {
            float ds = get(s, o + i) - ms, dt = tb[i] - mt;
            float es = VectorOps.exp2(ds, scale2), et = VectorOps.exp2(dt, scale2);
            szs += es;
            szsq = Math.fma(es, es, szsq);
            szt += et;
            if (dt >= lo) sacc = Math.fma(dt - ds, et, sacc);
            eS[eso + i] = es;
            eT[j0 + i] = et;
        }
        return new float[]{szs, szsq, szt, sacc, fetched};
    }

    /** LANES bf16 values at element index e, as fp32 (bf16 is the top half of an fp32). */
    private static FloatVector widen(MemorySegment t, long e) {
        ShortVector h = ShortVector.fromMemorySegment(HALF_SPECIES, t, e * 2L, ORDER);
        return ((IntVector) h.convertShape(VectorOperators.S2I, INT_SPECIES, 0)).lanewise(VectorOperators.LSHL, 16)
                .reinterpretAsFloats();
    }

    // ---------------------------------------------------------------- sparse teachers

    /**
     * sharedGradient when pass A left e in sc.eS and the CE term is e-squared (T = 2) or absent:
     * one loop, g = q cqw + c2 q² with q = e f_b, c2 = c1 Z_T² / Z_1 (softmax(s) = (q Z_T)² / Z_1
     * at T = 2; c2 = 0 without a hard label), block by block through sc.gb, last block first
     * (pass A ended on it; the zig-zag of denseForwardKl). The next row's lines were touched in
     * pass A (sparseBlock).
     */
    private static void squaredGradient(long so, MemorySegment g, int v, Student st, float invT,
                                        float c1, float cqw, Scratch sc) {
        float c2 = c1 == 0f ? 0f : (float) (c1 * Math.exp(2.0 * st.logZt() - st.logZ1()));
        float[] e = sc.eS, gb = sc.gb;
        for (int j0 = (v - 1) / BLOCK * BLOCK; j0 >= 0; j0 -= BLOCK) {   // last block first: pass A ended there
            int len = Math.min(BLOCK, v - j0);
            float f = (float) Math.exp((sc.blockMax[j0 / BLOCK] - st.max()) * (double) invT - st.logZt());
            int i = 0;
            for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                FloatVector q = FloatVector.fromArray(SPECIES, e, j0 + i).mul(f);
                q.mul(q).mul(c2).add(q.mul(cqw)).intoArray(gb, i);
            }
            for (; i < len; i++) {
                float q = e[j0 + i] * f;
                gb[i] = q * q * c2 + q * cqw;
            }
            MemorySegment.copy(gb, 0, g, F32, (so + j0) * 4L, len);
        }
    }

    /**
     * Writes dL/ds_j = c1 · softmax(s)_j + cq · q_j · w for every column (the gradient of a column
     * no sparse entry lists); the listed columns are fixed up by the caller.
     */
    private static void sharedGradient(MemorySegment s, long so, MemorySegment g, int v, Student st, float invT,
                                       float c1, float cqw, boolean storedE, Scratch sc) {
        if (storedE && (c1 == 0f || integerTemperature(invT) == 2)) {
            if (sc.eNative) {
                Objects.checkFromIndexSize(so * 4L, 4L * v, g.byteSize());
                NativeRows.squaredGradient(g.address() + so * 4L, sc.nativeET, sc.nativeBlockMax, v, st.max(), invT,
                        st.logZt(), st.logZ1(), c1, cqw);
            } else {
                squaredGradient(so, g, v, st, invT, c1, cqw, sc);
            }
            return;
        }
        float[] gb = sc.gb;
        if (c1 == 0f) Arrays.fill(sc.sb, 0f);
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            long o = so + j0;
            if (storedE) {
                // q = e · exp((m_b − m)/T − log Z_T), e left in sc.eS by pass A
                float f = (float) Math.exp((sc.blockMax[j0 / BLOCK] - st.max()) * (double) invT - st.logZt());
                System.arraycopy(sc.eS, j0, sc.qb, 0, len);
                VectorOps.scaleArray(sc.qb, len, f);
            } else {
                VectorOps.expAffine(s, o, len, st.max(), invT, st.logZt(), sc.qb);
            }
            if (c1 != 0f) hardLabelSoftmax(s, o, len, st.max(), invT, st.logZt(), st.logZ1(), sc);
            int i = 0;
            for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                FloatVector gv = FloatVector.fromArray(SPECIES, sc.qb, i).mul(cqw);
                FloatVector.fromArray(SPECIES, sc.sb, i).mul(c1).add(gv).intoArray(gb, i);
            }
            for (; i < len; i++) gb[i] = sc.sb[i] * c1 + sc.qb[i] * cqw;
            MemorySegment.copy(gb, 0, g, F32, o * 4L, len);
        }
    }

    /** Copies the student logits at a sparse row's listed ids into sc.listed (an in-place gradient overwrites them), checking each id. */
    private static void readListed(int r, MemorySegment s, long so, TeacherTargets teacher, Scratch sc) {
        MemorySegment ids;
        int k, vocab;
        String what;
        switch (teacher) {
            case TeacherTargets.TopK t -> { ids = t.ids(); k = t.k(); vocab = t.vocab(); what = "top-k id "; }
            case TeacherTargets.Sampled t -> { ids = t.ids(); k = t.samples(); vocab = t.vocab(); what = "sampled id "; }
            case TeacherTargets.Dense d -> { return; }
        }
        if (sc.listed.length < k) sc.listed = new float[k];
        long base = (long) r * k;
        for (int i = 0; i < k; i++) {
            int id = ids.getAtIndex(I32, base + i);
            if (id < 0 || id >= vocab) {
                throw new IllegalArgumentException(what + id + " at row " + r + ", entry " + i
                        + " is outside the teacher vocabulary [0, " + vocab + ")");
            }
            sc.listed[i] = get(s, so + id);
        }
    }

    private static void ensure(Scratch sc, int k, int v, boolean marks) {
        if (sc.q.length < k) {
            sc.q = new float[k];
            sc.lq = new float[k];
            sc.p = new float[k];
            sc.lp = new float[k];
        }
        if (marks && sc.marks.length < v) {
            sc.marks = new int[v];
            sc.markRow = 0;
        }
    }

    private static float topK(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.TopK t, int v,
                              Student st, float invT, DistillOptions o, float c1, float cq, boolean storeE, Scratch sc) {
        int k = t.k();
        ensure(sc, k, v, true);
        int mark = ++sc.markRow; // marks[j] == mark ⇔ j listed in this row (no clearing between rows)
        if (mark == Integer.MAX_VALUE) {
            Arrays.fill(sc.marks, 0);
            sc.markRow = mark = 1;
        }
        long base = (long) r * k;
        boolean renormalize = o.topKMode() == DistillOptions.TopKMode.RENORMALIZE;
        double lse = get(t.logsumexp(), r), sumQ = 0, tailAtShard = 1, maxT = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < k; i++) {
            int id = t.ids().getAtIndex(I32, base + i);
            if (sc.marks[id] == mark) {
                throw new IllegalArgumentException("top-k id " + id + " appears twice in row " + r);
            }
            sc.marks[id] = mark;
            float lq = (sc.listed[i] - st.max()) * invT - st.logZt();
            sc.lq[i] = lq;
            sc.q[i] = VectorOps.exp(lq);
            sumQ += sc.q[i];
            float logit = t.type().read(t.logits(), base + i);
            sc.p[i] = logit; // logits for now, probabilities below
            maxT = Math.max(maxT, logit);
            tailAtShard -= Math.exp(logit / (double) t.shardTemperature() - lse);
        }
        tailAtShard = Math.max(0, tailAtShard);
        boolean sameT = t.shardTemperature() == o.temperature();
        double renormZ = 0;
        if (renormalize || !sameT) {
            for (int i = 0; i < k; i++) renormZ += Math.exp((sc.p[i] - maxT) * invT);
        }
        boolean hasTail = k < v;
        // The teacher's tail is its mass outside the top-k within its own vocabulary: none when
        // renormalizing or when k covers that vocabulary (student padding columns hold no teacher mass).
        double pTail = renormalize || k == t.vocab() ? 0 : tailAtShard;
        double logRenormZ = Math.log(renormZ), logKept = Math.log(1 - tailAtShard), invTd = 1.0 / o.temperature();
        for (int i = 0; i < k; i++) {
            double lp;  // log p, in float64 from the stored logit (log of a rounded p would lose digits near p = 1)
            if (renormalize) lp = (sc.p[i] - maxT) * invTd - logRenormZ;
            else if (sameT) lp = sc.p[i] * invTd - lse;
            else lp = logKept + (sc.p[i] - maxT) * invTd - logRenormZ;
            sc.lp[i] = (float) lp;
            sc.p[i] = (float) Math.exp(lp);
        }
        double qTail = hasTail ? Math.max(0, 1 - sumQ) : 0;
        // per-category value and the gradient weight of the tail category ("w"), then fix-ups
        double value = 0, wTail, sumP = 1;
        double[] wListed = new double[k];
        switch (o.divergence()) {
            case Divergence.ForwardKl ignored -> {
                for (int i = 0; i < k; i++) {
                    if (sc.p[i] > 0) value += sc.p[i] * ((double) sc.lp[i] - sc.lq[i]);
                }
                double rho = qTail > 0 ? pTail / qTail : 0;
                if (pTail > 0) value += pTail * (Math.log(pTail) - Math.log(Math.max(qTail, Float.MIN_NORMAL)));
                // dL/ds_j = (1/T)(q_j ΣP − P_c q_j / Q_c): ΣP is 1 up to the rounding of stored logits
                // and logsumexp; using it keeps the gradient exact for the loss reported.
                sumP = pTail;
                for (int i = 0; i < k; i++) sumP += sc.p[i];
                wTail = sumP - rho;
            }
            case Divergence.ReverseKl ignored -> {
                double[] l = new double[k];
                double rkl = 0;
                for (int i = 0; i < k; i++) {
                    l[i] = sc.lq[i] - Math.max(sc.lp[i], LOG_FLOOR);
                    if (sc.q[i] > 0) rkl += sc.q[i] * l[i];
                }
                double lTail = qTail > 0 ? Math.log(qTail) - Math.max(pTail > 0 ? Math.log(pTail) : LOG_FLOOR, LOG_FLOOR) : 0;
                rkl += qTail * lTail;
                value = rkl;
                for (int i = 0; i < k; i++) wListed[i] = l[i] - rkl;
                wTail = lTail - rkl;
            }
            case Divergence.Jsd jsd -> {
                double b = jsd.beta();
                double[] gc = new double[k];
                double sumQg = 0;
                for (int i = 0; i < k; i++) {
                    // float64 p and q from their logs: log(q/m) is small when q ≈ p, and fp32 p, q would
                    // leave it with few correct digits
                    double pi = Math.exp(sc.lp[i]), qi = Math.exp(sc.lq[i]);
                    double m = b * pi + (1 - b) * qi;
                    if (pi > 0) value += b * pi * (sc.lp[i] - Math.log(m));
                    if (qi > 0) {
                        gc[i] = (1 - b) * (sc.lq[i] - Math.log(m));
                        value += qi * gc[i];
                        sumQg += qi * gc[i];
                    }
                }
                double mTail = b * pTail + (1 - b) * qTail, gTail = 0;
                if (pTail > 0) value += b * pTail * Math.log(pTail / mTail);
                if (qTail > 0) {
                    gTail = (1 - b) * Math.log(qTail / mTail);
                    value += qTail * gTail;
                    sumQg += qTail * gTail;
                }
                for (int i = 0; i < k; i++) wListed[i] = gc[i] - sumQg;
                wTail = gTail - sumQg;
            }
        }
        if (g != null) {
            sharedGradient(s, so, g, v, st, invT, c1, (float) (cq * wTail), storeE, sc);
            for (int i = 0; i < k; i++) {
                long idx = so + t.ids().getAtIndex(I32, base + i);
                double fix = o.divergence() instanceof Divergence.ForwardKl
                        ? cq * ((double) sc.q[i] * sumP - sc.p[i] - sc.q[i] * wTail)   // (q ΣP − p) in place of q·wTail
                        : cq * sc.q[i] * (wListed[i] - wTail);
                set(g, idx, (float) (get(g, idx) + fix));
            }
        }
        return (float) value;
    }

    private static float sampled(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Sampled t, int v,
                                 Student st, float invT, float c1, float cq, boolean storeE, Scratch sc) {
        int n = t.samples();
        ensure(sc, n, v, false);
        long base = (long) r * n;
        double weightSum = 0, crossEntropy = 0;
        for (int i = 0; i < n; i++) {
            int id = t.ids().getAtIndex(I32, base + i);
            float w = get(t.weights(), base + i);
            if (!(w >= 0) || Float.isInfinite(w)) {
                throw new IllegalArgumentException("sampled weight " + w + " at row " + r + ", sample " + i + " is not a finite non-negative number");
            }
            float lq = (sc.listed[i] - st.max()) * invT - st.logZt();
            crossEntropy -= w * (double) lq;
            weightSum += w;
        }
        // H(p̂, q) = −Σ p̂ log q; dH/ds_j = (1/T)(q_j Σw − p̂_j)
        if (g != null) {
            sharedGradient(s, so, g, v, st, invT, c1, (float) (cq * weightSum), storeE, sc);
            for (int i = 0; i < n; i++) {
                long idx = so + t.ids().getAtIndex(I32, base + i);
                set(g, idx, get(g, idx) - cq * get(t.weights(), base + i));
            }
        }
        return (float) crossEntropy;
    }
}
