package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.distill.FusedDistillLoss.BLOCK;

import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

/**
 * Dense teacher, generalized JSD(β) = β KL(p‖m) + (1−β) KL(q‖m), m = β p + (1−β) q: in the terms
 * of docs/KERNELS.md#one-gradient-formula-for-all-of-them, w_j = g_q = (1−β)(lq − lm) and
 * S = Σ q g_q, so g = cq q (g_q − S) + c1 softmax(s). C twin: {@code dense_jsd_row}
 * (cpu/src/main/c/distill_rows.inc) for the rows at T = 2 or T = 1; CUDA twin: {@code dense_row};
 * float64: {@code ReferenceDistillLoss.denseRow}.
 *
 * <p>{@link DenseForwardKl}'s plan. Pass A (backwards): its loop, e_s and e_t to per-thread rows
 * and their sums. Pass B (forwards): from those rows and one log per element, the value and
 * S; g_q overwrites e_t, no longer needed. Pass C (backwards): the gradient from the rows only.
 * Two exps and one log per element.
 */
final class DenseJsd {

    /** 2^64 and its log: log m = log(2^64 m) − 64 ln 2 keeps a subnormal mixture m out of log's −inf. */
    static final float MIX_SCALE = 0x1p64f, LOG_MIX_SCALE = (float) (64 * Math.log(2));

    private DenseJsd() {
    }

    /** @return {m_s + log Z_1 (the CE before − s[label]), JSD} */
    static float[] row(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                       int v, float invT, float beta, float c1, float cq, RowScratch sc) {
        int power = StudentPass.integerTemperature(invT);
        if (g != null && (power == 1 || power == 2)) {   // Z_1 from e_s: the passes C has too
            float[] ceJsd = RowPasses.forDense(s, g, d, v).denseJsd(r, s, so, g, d, v, invT, power, beta, c1, cq, sc);
            if (ceJsd != null) return ceJsd;
        }
        return javaRow(r, s, so, g, d, v, invT, power, beta, c1, cq, sc);
    }

    /** The row in Java, every case. */
    static float[] javaRow(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                           int v, float invT, int power, float beta, float c1, float cq, RowScratch sc) {
        DenseRow row = DenseRow.start(r, s, so, d, v, sc);
        sc.rows(v);
        float[] tb = sc.teacher, eS = sc.eS, eT = sc.eT;
        float scale2 = invT * VectorOps.LOG2E;   // exp(d/T) = 2^(d scale2): VectorOps.exp2
        double[] z = row.passA(r, s, so, d, v, invT, power, sc, (bi, j0, len, o, ms, mt) -> DenseForwardKl.passABlock(s, o, len, ms,
                scale2, eS, j0, tb, mt, eT, j0, row.fetchS(bi), row.fetchEndS(v), d.logits(), row.fetchT(bi), row.fetchEndT()),
                DenseRow.scaling(eS, eT));
        float ms = row.ms, mt = row.mt;
        double zs = z[0], z1 = z[1], zt = z[2];
        int nb = (v + BLOCK - 1) / BLOCK;
        float lzs = (float) Math.log(zs), lzt = (float) Math.log(zt), fs = (float) (1 / zs), ft = (float) (1 / zt);
        double value = 0, sumQg = 0;
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            TeacherBlocks.load(d, row.to, j0, len, tb);
            float[] sums = passB(s, so + j0, len, ms, invT, lzs, tb, mt, lzt, eS, eT, j0, fs, ft, beta);
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
                    passCSquared(eS, eT, j0, len, a, sq, (float) (c1 / z1), gb);
                } else {
                    if (power == 0) {
                        VectorOps.expAffine(s, o, len, ms, 1f, (float) Math.log(z1), sb);
                    } else {
                        VectorOps.powerScaled(eS, j0, len, power, (float) (1 / z1), sb);
                    }
                    passC(eS, eT, j0, len, a, sq, sb, c1, gb);
                }
                MemorySegment.copy(gb, 0, g, F32, o * 4L, len);
            }
        }
        return new float[]{(float) (ms + Math.log(z1)), (float) value};
    }

    /**
     * Pass B over one block, q = e_s fs, p = e_t ft, lq = (s − ms)/T − lzs, lp = (t − mt)/T − lzt,
     * lm = log m: returns {Σ β p (lp − lm) + Σ q g_q, Σ q g_q}, g_q = (1−β)(lq − lm), terms with
     * p = 0 or q = 0 left out, and writes g_q (0 where q = 0) over e_t. m is mixed at 2^64 times
     * its size (see MIX_SCALE): e_s fs can be subnormal, which log takes for 0.
     */
    private static float[] passB(MemorySegment s, long o, int len, float ms, float invT, float lzs, float[] tb,
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

    /** Pass C over one block into gb: g = e_s a (g_q − S) + c1 sb, a = cq fs, g_q in gq. */
    private static void passC(float[] eS, float[] gq, int j0, int len, float a, float sq, float[] sb, float c1, float[] gb) {
        int i = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector w = FloatVector.fromArray(SPECIES, gq, j0 + i).sub(sq).mul(a);
            FloatVector.fromArray(SPECIES, eS, j0 + i).fma(w, FloatVector.fromArray(SPECIES, sb, i).mul(c1)).intoArray(gb, i);
        }
        for (; i < len; i++) gb[i] = Math.fma(eS[j0 + i], (gq[j0 + i] - sq) * a, sb[i] * c1);
    }

    /** Pass C when softmax(s) = e_s² / Z_1 (T = 2) or there is no CE (c1z = 0): g = e_s (c1z e_s + a (g_q − S)). */
    private static void passCSquared(float[] eS, float[] gq, int j0, int len, float a, float sq, float c1z, float[] gb) {
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
}
