package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.I32;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.set;

import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.kernels.cpu.distill.StudentPass.Student;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * A sampled teacher's row after {@link SparseRows#begin}: the soft cross-entropy
 * H(p̂, q) = −Σ p̂ log q with p̂_j = Σ_s w_s [id_s = j], and its gradient
 * dH/ds_j = (1/T)(q_j Σw − p̂_j): the shared gradient with w = Σw, then −w_s at each sampled id.
 * CUDA twin: {@code sampled_row}; float64: {@code ReferenceDistillLoss.sampledRow}.
 */
final class SampledRows {

    private SampledRows() {
    }

    /** @return the cross-entropy of row r (unscaled by T²) */
    static float row(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Sampled t, int v,
                     Student st, float invT, float c1, float cq, boolean storeE, RowScratch sc) {
        int n = t.samples();
        sc.sparse(n, v, false);
        long base = (long) r * n;
        double weightSum = 0, crossEntropy = 0;
        for (int i = 0; i < n; i++) {
            float w = get(t.weights(), base + i);
            if (!(w >= 0) || Float.isInfinite(w)) {
                throw new BadRowException(r, "sampled weight " + w + " (sample " + i + ") is not a finite non-negative number");
            }
            float lq = (sc.listed[i] - st.max()) * invT - st.logZt();
            crossEntropy -= w * (double) lq;
            weightSum += w;
        }
        if (g != null) {
            SparseRows.sharedGradient(s, so, g, v, st, invT, c1, (float) (cq * weightSum), storeE, sc);
            for (int i = 0; i < n; i++) {
                long idx = so + t.ids().getAtIndex(I32, base + i);
                set(g, idx, get(g, idx) - cq * get(t.weights(), base + i));
            }
        }
        return (float) crossEntropy;
    }
}
