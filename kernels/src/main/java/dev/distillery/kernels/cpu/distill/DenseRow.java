package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.distill.FusedDistillLoss.BLOCK;

import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * What every dense row shares, whatever its divergence: the lazy maxima, the lines of the next
 * row that pass A fetches, and pass A itself, block by block, last block first. C twin: the head
 * and the pass-A loop of {@code dense_forward_kl_row} in cpu/src/main/c/distill_rows.inc.
 *
 * <p>The maxima are lazy. Exps need a shift at or near the row's maximum, not the maximum itself:
 * a row's sums and loss are the same for any shift, up to rounding, as long as no exp overflows
 * or every one underflows. So no pass reads the whole row for its maxima: they start as the exact
 * maxima of the block pass A visits first (the last; the whole row's when that block has none that
 * is finite), which are at most the row's, so no exp underflows for want of a larger one. A block
 * whose exps land far above them (a block sum over {@link #RAISE}: exps up to 2^56, whose squares,
 * sums and products with the logits stay finite in fp32; {@code VectorOps.exp2} gives +inf, not
 * garbage, past 2^127) raises them to its own maxima; what pass A has done so far is rescaled (the
 * rows by a {@link Rescale}, the sums here) and the block runs again. With real logits a row
 * rarely spreads that far (56 octaves: 77 logits at T = 2, 39 at T = 1). A student row without a
 * finite maximum, a diverged model, gives a NaN loss, which the trainer's guard reports.
 * docs/KERNELS.md#passes-and-memory.
 */
final class DenseRow {

    /** A block's sums above this (2^56) mean its exps ran against maxima far below its own. */
    static final float RAISE = 0x1p56f;

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

    /**
     * Row r's starting maxima (its teacher row at sc.teacherAt), and where the lines of this
     * thread's next row (RowScratch.nextRow, sc.nextTeacherAt) are.
     */
    static DenseRow start(int r, MemorySegment s, long so, TeacherTargets.Dense d, int v, RowScratch sc) {
        int vt = d.vocab(), first = (v - 1) / BLOCK * BLOCK;   // pass A's first block
        long to = sc.teacherAt;
        float ms = VectorOps.maxSkippingNaN(s, so + first, v - first);
        if (!Float.isFinite(ms)) ms = VectorOps.maxSkippingNaN(s, so, v);
        float mt = first < vt ? TeacherBlocks.max(d, to + first, vt - first, sc.teacher) : Float.NEGATIVE_INFINITY;
        if (!Float.isFinite(mt)) mt = TeacherBlocks.max(d, to, vt, sc.teacher);
        TeacherBlocks.checkMax(r, mt);
        return new DenseRow(to, vt, ms, mt, (long) sc.nextRow * v * 4L, sc.nextTeacherAt * 2L);
    }

    /**
     * Byte offset in the next student row where the fetches of this row's bi-th block of pass A
     * start: blocks fetch the next row in the order pass A visits them (pass A runs backwards; the
     * fetches still run forwards), a line per 16 columns.
     */
    long fetchS(int bi) {
        return nextS + (long) bi * BLOCK * 4L;
    }

    /** The last byte of the next student row: fetches stop there. */
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
     * A divergence's loop of pass A over one block (columns [j0, j0 + len), student at element o,
     * bi-th in pass A's order) against the maxima ms and mt: returns {Σ e_s, Σ e_s², Σ e_t,
     * Σ e_t (d_t − d_s) or 0, fetched} (d = logit − max), and leaves the student row as it was
     * when they are {@link #overflowed}. Called once per block, not per element.
     */
    @FunctionalInterface
    interface PassABlock {
        float[] run(int bi, int j0, int len, long o, float ms, float mt);
    }

    /**
     * A divergence's rows of pass A over columns [from, to), the blocks done before a raise of the
     * maxima by dms and dmt: e_s scaled by fs = exp(−dms/T), e_t by ft = exp(−dmt/T) (or
     * (t − m_t)/T lowered by dmt/T).
     */
    @FunctionalInterface
    interface Rescale {
        void run(int from, int to, float fs, float ft, float dms, float dmt);
    }

    /** Rescale for rows of e_s and e_t. */
    static Rescale scaling(float[] eS, float[] eT) {
        return (from, to, fs, ft, dms, dmt) -> {
            for (int j = from; j < to; j++) {
                eS[j] *= fs;
                eT[j] *= ft;
            }
        };
    }

    /** Whether a block's sums ({Σ e_s, Σ e_s², Σ e_t, ...}) are over {@link #RAISE}. */
    static boolean overflowed(float[] sums) {
        return sums[0] > RAISE || sums[2] > RAISE;
    }

    /**
     * Pass A, last block first (see DenseForwardKl's zig-zag): per block, the teacher block widened
     * into sc.teacher (−inf past the teacher's vocabulary), Σ exp(s − m_s) by its own exp when
     * T is not 1 or 2, then the divergence's loop over the block, against the running maxima; a
     * block over {@link #RAISE} raises them (see the class comment) and runs again. Returns
     * {Z_s, Z_1, Z_t, Σ e_t (d_t − d_s)} at the final maxima (ms, mt; d = logit − max, or 0 for a
     * divergence without the fourth), after a NaN in Z_t has been reported by row and column.
     */
    double[] passA(int r, MemorySegment s, long so, TeacherTargets.Dense d, int v, float invT, int power, RowScratch sc,
                   PassABlock block, Rescale rescale) {
        double zs = 0, zsq = 0, z1 = 0, zt = 0, acc = 0;
        boolean ownZ1 = power != 1 && power != 2;
        int nb = (v + BLOCK - 1) / BLOCK;
        for (int bi = 0; bi < nb; bi++) {
            int j0 = (nb - 1 - bi) * BLOCK;
            int len = Math.min(BLOCK, v - j0);
            long o = so + j0;
            TeacherBlocks.load(d, to, j0, len, sc.teacher);
            float z1b = ownZ1 ? VectorOps.expSumAffine(s, o, len, ms, 1f) : 0f;
            float[] sums = z1b > RAISE ? null : block.run(bi, j0, len, o, ms, mt);
            if (sums == null || overflowed(sums)) {
                float ms2 = VectorOps.greater(ms, VectorOps.maxSkippingNaN(s, o, len));
                float mt2 = VectorOps.greater(mt, VectorOps.maxSkippingNaN(sc.teacher, len));
                TeacherBlocks.checkMax(r, mt2);
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
        TeacherBlocks.checkSum(r, zt, d, to);
        if (power == 1) z1 = zs;
        if (power == 2) z1 = zsq;                      // e_s^2 = exp(s − ms)
        return new double[]{zs, z1, zt, acc};
    }
}
