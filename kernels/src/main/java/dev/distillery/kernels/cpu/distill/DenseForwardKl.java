package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.set;
import static dev.distillery.kernels.cpu.distill.FusedDistillLoss.BLOCK;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;

/**
 * Dense teacher, forward KL: in the terms of docs/KERNELS.md#one-gradient-formula-for-all-of-them,
 * w_j = −p_j/q_j and S = −1, so dD/ds = (q − p)/T, written as g = cq (e_s/Z_s − e_t/Z_t) + c1 softmax(s).
 * C twin: {@code dense_forward_kl_row} (cpu/src/main/c/distill_rows.inc) for the rows whose gradient is
 * formed over e_s; CUDA twin: {@code dense_row}; float64: {@code ReferenceDistillLoss.denseRow}.
 *
 * <p>No pass reads the rows for their maxima: m_s and m_t are {@link DenseRow}'s lazy ones, and
 * pass A of the previous row has fetched the lines of this one. Pass A, block by block: one loop
 * computes e_s = exp((s − m_s)/T) and e_t = exp((t − m_t)/T), their sums, Σ e_s² (the hard-label
 * normalizer Z_1 at T = 2; T = 1 uses Z_s, other T one more exp per element), and
 * Σ e_t ((t − m_t) − (s − m_s)), which is the loss: KL = (1/T) Σ e_t d / Z_t − log Z_t + log Z_s,
 * so no logarithm per element and no pass re-reads s or t for it. e_t goes to a per-thread row;
 * e_s to an L1 block that one bulk copy moves over the gradient block it will become (over s,
 * which pass A has just consumed, when in place), or, when pass B needs s or a power of e_s (the
 * CE at T ≠ 2), to a per-thread row. Pass B scales them: q = e_s / Z_s, p = e_t / Z_t and (at
 * T = 2) softmax(s) = e_s² / Z_1 in registers.
 *
 * <p>Zig-zag: pass A walks the blocks last to first and pass B first to last, so each pass starts
 * on the lines the previous one touched last (with LRU eviction, a pass in the same order as the
 * last one misses on every line of a working set a little larger than the cache). Working set
 * per thread: the rows of s (= g in place), t and e_t, 10V bytes with a bf16 teacher (14V with an
 * e_s row), plus the next row's lines.
 */
final class DenseForwardKl {

    private DenseForwardKl() {
    }

    /** @return {m_s + log Z_1 (the CE before − s[label]), KL} */
    static float[] row(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                       int v, float invT, float c1, float cq, RowScratch sc) {
        int power = StudentPass.integerTemperature(invT);
        if (g != null && (power == 2 || power == 1 && c1 == 0f)) {   // gradient over e_s: the passes C has too
            float[] ceKl = RowPasses.forDense(s, g, d, v).denseForwardKl(r, s, so, g, d, v, invT, power, c1, cq, sc);
            if (ceKl != null) return ceKl;
        }
        return javaRow(r, s, so, g, d, v, invT, power, c1, cq, sc);
    }

    /** The row in Java, every case. */
    static float[] javaRow(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                           int v, float invT, int power, float c1, float cq, RowScratch sc) {
        DenseRow row = DenseRow.start(r, s, so, d, v, sc);
        sc.rows(v);
        float[] tb = sc.teacher, eS = sc.eS, eT = sc.eT;
        float scale2 = invT * VectorOps.LOG2E;   // exp(d/T) = 2^(d scale2): VectorOps.exp2
        // e_s over the gradient block it becomes (s when in place, already consumed by pass A):
        // 4V bytes less working set than an e_s row, when pass B needs neither s nor a power of e_s
        boolean eInG = g != null && (c1 == 0f || power == 2);
        DenseRow.Rescale rescale = !eInG ? DenseRow.scaling(eS, eT) : (from, to, fs, ft, dms, dmt) -> {
            for (int j = from; j < to; j++) {
                set(g, so + j, get(g, so + j) * fs);
                eT[j] *= ft;
            }
        };
        double[] z = row.passA(r, s, so, d, v, invT, power, sc, (bi, j0, len, o, ms, mt) -> {
            float[] sums = passABlock(s, o, len, ms, scale2, eInG ? sc.gb : eS, eInG ? 0 : j0, tb, mt, eT, j0,
                    row.fetchS(bi), row.fetchEndS(v), d.logits(), row.fetchT(bi), row.fetchEndT());
            if (eInG && !DenseRow.overflowed(sums)) MemorySegment.copy(sc.gb, 0, g, F32, o * 4L, len);   // s is still needed otherwise
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
                    passBInG(g, so + j0, eT, j0, len, a, b, c1z);
                    continue;
                }
                if (power == 0) {
                    VectorOps.expAffine(s, so + j0, len, ms, 1f, (float) lz1, sb);
                } else {
                    VectorOps.powerScaled(eS, j0, len, power, 1 / (float) z1, sb);
                }
                passB(eS, eT, j0, len, a, b, sb, c1, gb);
                MemorySegment.copy(gb, 0, g, F32, (so + j0) * 4L, len);
            }
        }
        return new float[]{(float) (ms + lz1), (float) kl};
    }

    /**
     * Pass A's loop over one block: with d_s = s − ms and d_t = t − mt (t from tb), e_s =
     * exp(d_s/T) = 2^(d_s k) to eS and e_t = 2^(d_t k) to eT (both at j0), k = log2(e)/T (the
     * caller's scale2, folded into VectorOps.exp2's reduction). Returns {Σ e_s, Σ e_s², Σ e_t,
     * Σ e_t (d_t − d_s), fetched}, terms whose e_t underflows to 0 left out of the fourth (they
     * may be 0 · ∞). Each d is one exact-or-rounded subtraction; no d k is rounded (see exp2), and
     * at the maxima d = 0, so a one-column row's KL comes out 0, not an ulp of ms·k. Each
     * iteration also reads one line of the next student row and half a line of its teacher row,
     * so that row arrives while this one computes. Branch-free body: C2 boxes vectors that meet
     * at a join in a loop. Shared with {@link DenseJsd}. C twin: {@code fkl_block}.
     */
    static float[] passABlock(MemorySegment s, long o, int len, float ms, float scale2, float[] eS, int eso,
                              float[] tb, float mt, float[] eT, int j0, long fetchS, long fetchEndS,
                              MemorySegment t, long fetchT, long fetchEndT) {
        FloatVector zs = FloatVector.zero(SPECIES), zsq = zs, zt = zs, acc = zs;
        float lo = VectorOps.EXP2_LO / scale2;   // exp2's underflow: e_t = 0 below
        int i = 0, fetched = 0;
        for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
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

    /**
     * Pass B over one block, CE term from a per-block softmax(s): gb = a e_s − b e_t + c1 sb, a =
     * cq/Z_s, b = cq/Z_t. No branch inside the vector loop (see passABlock).
     */
    private static void passB(float[] eS, float[] eT, int j0, int len, float a, float b, float[] sb, float c1, float[] gb) {
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
     * fused operations per vector. Stored to the segment directly: with three operations per
     * vector, the checks a segment store keeps in the loop cost less than staging the block in
     * an array and copying it (docs/KERNELS.md#stores-constants-and-max). C twin: the pass-B loop
     * of {@code dense_forward_kl_row}.
     */
    private static void passBInG(MemorySegment g, long go, float[] eT, int j0, int len, float a, float b, float c1z) {
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
}
