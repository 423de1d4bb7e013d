package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.distill.FusedDistillLoss.BLOCK;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.cpu.VectorOps;
import jdk.incubator.vector.FloatVector;

/**
 * Pass A over a sparse row's student logits: online max and Σ exp for softmax(s/T) and softmax(s),
 * optionally keeping e = exp((s − m_b)/T) for the gradient pass. C twin: {@code student_pass}
 * (cpu/src/main/c/distill_rows.inc); CUDA twin: {@code student_pass} (cuda/src/main/cuda/distill_loss.cu).
 */
final class StudentPass {

    /**
     * A student row after pass A: the shift max (the row's maximum, or below it: the lazy maximum
     * of {@link #run}), log Σ exp((s − max)/T), log Σ exp(s − max). CUDA twin: {@code struct Student}
     * (whose max is the row's).
     */
    record Student(float max, float logZt, float logZ1) {
    }

    private StudentPass() {
    }

    /**
     * T when the temperature is a small integer (1..8), else 0. Then softmax(s) = e^T / Z1 with
     * e = exp((s − max)/T) already computed for softmax(s/T): one exp per element serves both.
     */
    static int integerTemperature(float invT) {
        float t = 1f / invT;
        return t == Math.rint(t) && t >= 1 && t <= 8 && invT == 1f / t ? (int) t : 0;
    }

    /**
     * Σexp for softmax(s/T) and softmax(s) over one student row, shifted by DenseRow's lazy
     * maximum: it starts as the first block's (the row's when that block has none finite) and
     * rises to a block's own when that block's sums pass {@link DenseRow#RAISE}, the sums so far
     * rescaled and the block run again. With eOut, also writes e = exp((s − m_b)/T) for column j
     * at eOut[j], m_b the maximum its block was shifted by (recorded in sc.blockMax): the
     * gradient pass rescales instead of recomputing the exp.
     */
    static Student run(MemorySegment s, long so, int v, float invT, float[] eOut, RowScratch sc) {
        int power = integerTemperature(invT);
        if (eOut != null && sc.blockMax.length < (v + BLOCK - 1) / BLOCK) sc.blockMax = new float[(v + BLOCK - 1) / BLOCK];
        long nextS = (long) sc.nextRow * v * 4L, fetchEnd = nextS + v * 4L - 1;
        float m = VectorOps.maxSkippingNaN(s, so, Math.min(BLOCK, v));
        if (!Float.isFinite(m)) m = VectorOps.maxSkippingNaN(s, so, v);
        double zt = 0, z1 = 0;
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            long o = so + j0;
            float[] sums = block(s, o, len, m, invT, power, eOut, j0, nextS + j0 * 4L, fetchEnd, sc);
            if (!(sums[0] <= DenseRow.RAISE && sums[1] <= DenseRow.RAISE)) {
                float bm = VectorOps.maxSkippingNaN(s, o, len);
                if (bm > m) {
                    zt *= Math.exp((m - bm) * (double) invT);
                    z1 *= Math.exp(m - (double) bm);
                    m = bm;
                    sc.raises++;
                    sums = block(s, o, len, m, invT, power, eOut, j0, nextS + j0 * 4L, fetchEnd, sc);
                }
            }
            if (eOut != null) sc.blockMax[j0 / BLOCK] = m;
            zt += sums[0];
            z1 += sums[1];
        }
        return new Student(m, (float) Math.log(zt), (float) Math.log(z1));
    }

    /**
     * One block's {Σ exp((s − m)/T), Σ exp(s − m), ...}: the second as a power of the first's exps
     * when T is an integer, else by its own exp; with eOut, the first's exps kept at eOut[oo..].
     */
    private static float[] block(MemorySegment s, long o, int len, float m, float invT, int power, float[] eOut, int oo,
                                 long fetch, long fetchEnd, RowScratch sc) {
        float z1 = power == 0 ? VectorOps.expSumAffine(s, o, len, m, 1f) : 0f;
        float[] sums;
        if (eOut != null) {
            sums = keepingE(s, o, len, m, invT * VectorOps.LOG2E, Math.max(power, 1), eOut, oo, fetch, fetchEnd);
            sc.fetched += (long) sums[2];
        } else if (power > 0) {
            sums = VectorOps.expSumAndPower(s, o, len, m, invT, power);
        } else {
            sums = new float[]{VectorOps.expSumAffine(s, o, len, m, invT), 0f};
        }
        if (power == 0) sums[1] = z1;
        return sums;
    }

    /**
     * One block of pass A with e kept: e = exp((s − m)/T) = 2^((s − m) k), k = log2(e)/T (scale2;
     * see DenseForwardKl.passABlock), to out[oo + i]; returns {Σ e, Σ e^power, fetched}. Each
     * iteration also reads one line of this thread's next student row, so that row arrives while
     * this one computes its exps. C twin: {@code student_block}.
     */
    private static float[] keepingE(MemorySegment s, long o, int len, float m, float scale2, int power,
                                    float[] out, int oo, long fetch, long fetchEnd) {
        FloatVector acc = FloatVector.zero(SPECIES), accP = acc;
        int i = 0, fetched = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            fetched += s.get(ValueLayout.JAVA_BYTE, Math.min(fetch + i * 4L, fetchEnd));
            FloatVector e = VectorOps.exp2(FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(m), scale2);
            e.intoArray(out, oo + i);
            acc = acc.add(e);
            accP = power == 2 ? e.fma(e, accP) : accP.add(VectorOps.power(e, power));
        }
        float s1 = VectorOps.sumLanes(acc), sp = VectorOps.sumLanes(accP);
        for (; i < len; i++) {
            float e = VectorOps.exp2(get(s, o + i) - m, scale2);
            out[oo + i] = e;
            s1 += e;
            sp = power == 2 ? Math.fma(e, e, sp) : sp + VectorOps.power(e, power);
        }
        return new float[]{s1, sp, fetched};
    }

    /** sb = softmax(s) for one block, from qb = softmax(s/T) when T is an integer, else by its own exp. */
    static void hardLabelSoftmax(MemorySegment s, long o, int len, float ms, float invT, float lzq, float lz1, RowScratch sc) {
        int power = integerTemperature(invT);
        if (power > 0) {
            // e = q · Z_T, e^T ≤ 2^56 (pass A raised any block past it), softmax(s) = e^T / Z_1
            VectorOps.powerScaled(sc.qb, len, (float) Math.exp(lzq), power, (float) Math.exp(-lz1), sc.sb);
        } else {
            VectorOps.expAffine(s, o, len, ms, 1f, lz1, sc.sb);
        }
    }
}
