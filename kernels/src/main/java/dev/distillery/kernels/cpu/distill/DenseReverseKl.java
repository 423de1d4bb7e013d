package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.distill.FusedDistillLoss.BLOCK;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

/**
 * Dense teacher, reverse KL: in the terms of docs/KERNELS.md#one-gradient-formula-for-all-of-them,
 * w_j = lq_j − lp_j and S = RKL, so g = cq q (lq − lp − RKL) + c1 softmax(s). C twin:
 * {@code dense_reverse_kl_row} (cpu/src/main/c/distill_rows.inc) for the rows at T = 2 or
 * T = 1; CUDA twin: {@code dense_row}; float64: {@code ReferenceDistillLoss.denseRow}.
 *
 * <p>{@link DenseForwardKl}'s plan: DenseRow's lazy maxima (fetching the next row meanwhile),
 * pass A computes e_s = exp((s − m_s)/T) and e_t's sum in one loop and keeps e_s (a scratch row:
 * s must survive for log q) and (t − m_t)/T (a per-thread row), pass B sums
 * RKL = Σ q (lq − max(lp, floor)) and leaves l = lq − max(lp, floor) over the second row, and pass C
 * writes the gradient from the two rows only, with no exp and no read of s or the teacher: 2 exps
 * per element. Zig-zag: A backwards, B forwards, C backwards.
 */
final class DenseReverseKl {

    /** log of fp32's smallest normal: reverse KL charges zero teacher mass at this log-probability. */
    static final float LOG_FLOOR = (float) Math.log(Float.MIN_NORMAL);

    private DenseReverseKl() {
    }

    /** @return {m_s + log Z_1 (the CE before − s[label]), RKL} */
    static float[] row(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                       int v, float invT, float c1, float cq, RowScratch sc) {
        int power = StudentPass.integerTemperature(invT);
        if (g != null && (power == 1 || power == 2)) {   // Z_1 from e_s: the passes C has too
            float[] ceKl = RowPasses.forDense(s, g, d, v).denseReverseKl(r, s, so, g, d, v, invT, power, c1, cq, sc);
            if (ceKl != null) return ceKl;
        }
        return javaRow(r, s, so, g, d, v, invT, power, c1, cq, sc);
    }

    /** The row in Java, every case. */
    static float[] javaRow(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                           int v, float invT, int power, float c1, float cq, RowScratch sc) {
        DenseRow row = DenseRow.start(r, s, so, d, v, sc);
        sc.rows(v);
        float[] tb = sc.teacher, eS = sc.eS, tScaled = sc.eT;   // tScaled: the row of (t − m_t)/T
        float scale2 = invT * VectorOps.LOG2E;
        double[] z = row.passA(r, s, so, d, v, invT, power, sc, (bi, j0, len, o, ms, mt) -> passABlock(s, o, len, ms, invT, scale2,
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
            rkl += passB(s, so + j0, Math.min(BLOCK, v - j0), ms, invT, lzs, lzt, eS, j0, fq, tScaled);
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
                passC(eS, j0, len, fq, tScaled, (float) rkl, cq, gb, sb, c1);
                MemorySegment.copy(gb, 0, g, F32, o * 4L, len);
            }
        }
        return new float[]{(float) (ms + Math.log(z1)), (float) rkl};
    }

    /**
     * Pass A over one block: {Σ e_s, Σ e_s², Σ e_t, 0, fetched}; e_s to eS, (t − mt)/T to tScaled.
     * Both exps in base 2 (see DenseForwardKl.passABlock): e_s from (s − ms) scale2, e_t from
     * ((t − mt)/T) log2(e), since tScaled keeps natural units for pass B's log p.
     */
    private static float[] passABlock(MemorySegment s, long o, int len, float ms, float invT, float scale2, float[] eS, int j0,
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
     * Pass B over one block, with q = e_s fq, lq = (s − ms)/T − lzs and lp = max((t − mt)/T − lzt,
     * floor): returns Σ q (lq − lp), terms with q = 0 left out, and writes l = lq − lp over tScaled
     * for pass C. One loop, no branch.
     */
    private static float passB(MemorySegment s, long o, int len, float ms, float invT, float lzs, float lzt,
                               float[] eS, int j0, float fq, float[] tScaled) {
        int i = 0;
        FloatVector acc = FloatVector.zero(SPECIES);
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector lq = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms).mul(invT).sub(lzs);
            FloatVector l = lq.sub(floor(FloatVector.fromArray(SPECIES, tScaled, j0 + i).sub(lzt)));
            FloatVector q = FloatVector.fromArray(SPECIES, eS, j0 + i).mul(fq);
            acc = acc.add(q.mul(l).blend(0f, q.compare(VectorOperators.LE, 0f)));
            l.intoArray(tScaled, j0 + i);
        }
        float sum = VectorOps.sumLanes(acc);
        for (; i < len; i++) {
            float q = eS[j0 + i] * fq;
            float l = ((get(s, o + i) - ms) * invT - lzs) - Math.max(tScaled[j0 + i] - lzt, LOG_FLOOR);
            if (q > 0f) sum += q * l;
            tScaled[j0 + i] = l;
        }
        return sum;
    }

    /** Pass C over one block into gb: cq q (l − rkl) + c1 sb, 0 for the first term where q = 0; reads the rows only. */
    private static void passC(float[] eS, int j0, int len, float fq, float[] l, float rkl, float cq, float[] gb, float[] sb, float c1) {
        int i = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
            FloatVector q = FloatVector.fromArray(SPECIES, eS, j0 + i).mul(fq);
            FloatVector gq = q.mul(FloatVector.fromArray(SPECIES, l, j0 + i).sub(rkl)).mul(cq).blend(0f, q.compare(VectorOperators.LE, 0f));
            FloatVector.fromArray(SPECIES, sb, i).mul(c1).add(gq).intoArray(gb, i);
        }
        for (; i < len; i++) {
            float q = eS[j0 + i] * fq;
            gb[i] = sb[i] * c1 + (q > 0f ? q * (l[j0 + i] - rkl) * cq : 0f);
        }
    }

    /** max(x, LOG_FLOOR) by a compare and a blend (a Java-semantics max is six instructions); NaN stays NaN. */
    private static FloatVector floor(FloatVector x) {
        return x.blend(LOG_FLOOR, x.lt(LOG_FLOOR));
    }
}
