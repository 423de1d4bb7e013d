package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.I32;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.set;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;

import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.kernels.cpu.Float64Exp;
import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.cpu.distill.StudentPass.Student;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * A top-k teacher's row after {@link SparseRows#begin}: the k listed entries and the tail bucket
 * in float64, per docs/KERNELS.md#one-gradient-formula-for-all-of-them with one category per listed
 * id and one for the tail; then the gradient every unlisted column shares (w = the tail's weight)
 * and the listed columns' own, written over it. CUDA twin: {@code topk_row}; float64:
 * {@code ReferenceDistillLoss.topKRow}.
 */
final class TopKRows {

    private TopKRows() {
    }

    /** @return the divergence of row r (unscaled by T²) */
    static float row(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.TopK t, int v,
                     Student st, float invT, DistillOptions o, float c1, float cq, boolean storeE, RowScratch sc) {
        int k = t.k();
        sc.sparse(k, v, true);
        int mark = ++sc.markRow;
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
                throw new BadRowException(r, "top-k id " + id + " is listed twice");
            }
            sc.marks[id] = mark;
            float lq = (sc.listed[i] - st.max()) * invT - st.logZt();
            sc.lq[i] = lq;
            sc.q[i] = VectorOps.exp(lq);
            sumQ += sc.q[i];
            float logit = t.type().read(t.logits(), base + i);
            sc.p[i] = logit; // logits for now, probabilities below
            maxT = Math.max(maxT, logit);
            sc.lpShard[i] = logit / (double) t.shardTemperature() - lse;
        }
        // the teacher's k exps in float64, a vector at a time: a Math.exp call each took 4–10% of a top-64 row
        Float64Exp.exp(sc.lpShard, sc.pShard, k);
        for (int i = 0; i < k; i++) tailAtShard -= sc.pShard[i];
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
            // log p, in float64 from the stored logit (log of a rounded p would lose digits near p = 1);
            // at the shard's temperature, p is the listed mass the tail was taken from
            double lp;
            if (renormalize) lp = (sc.p[i] - maxT) * invTd - logRenormZ;
            else if (sameT) lp = sc.lpShard[i];
            else lp = logKept + (sc.p[i] - maxT) * invTd - logRenormZ;
            sc.lp[i] = (float) lp;
            sc.p[i] = (float) (sameT && !renormalize ? sc.pShard[i] : Math.exp(lp));
        }
        double qTail = hasTail ? Math.max(0, 1 - sumQ) : 0;
        // per-category value and the gradient weight of the tail category ("w"), then each listed one's
        double value = 0, wTail, sumP = 1;
        double[] wListed = sc.wListed;
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
                double[] l = sc.categoryTerm;
                double rkl = 0;
                for (int i = 0; i < k; i++) {
                    l[i] = sc.lq[i] - Math.max(sc.lp[i], DenseReverseKl.LOG_FLOOR);
                    if (sc.q[i] > 0) rkl += sc.q[i] * l[i];
                }
                double lTail = qTail > 0
                        ? Math.log(qTail) - Math.max(pTail > 0 ? Math.log(pTail) : DenseReverseKl.LOG_FLOOR, DenseReverseKl.LOG_FLOOR) : 0;
                rkl += qTail * lTail;
                value = rkl;
                for (int i = 0; i < k; i++) wListed[i] = l[i] - rkl;
                wTail = lTail - rkl;
            }
            case Divergence.Jsd jsd -> {
                double b = jsd.beta();
                double[] gc = sc.categoryTerm;
                double sumQg = 0;
                for (int i = 0; i < k; i++) {
                    // float64 p and q from their logs: log(q/m) is small when q ≈ p, and fp32 p, q would
                    // leave it with few correct digits
                    double pi = Math.exp(sc.lp[i]), qi = Math.exp(sc.lq[i]);
                    double m = b * pi + (1 - b) * qi;
                    if (pi > 0) value += b * pi * (sc.lp[i] - Math.log(m));
                    gc[i] = 0;
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
            SparseRows.sharedGradient(s, so, g, v, st, invT, c1, (float) (cq * wTail), storeE, sc);
            // The listed columns are written whole, not corrected: q·wTail can dwarf their gradient
            // (wTail = ΣP − P_tail/Q_tail when the student leaves less mass outside the top-k than
            // the teacher), and adding its negative back would leave its rounding behind.
            int power = StudentPass.integerTemperature(invT);
            double ceScale = c1 == 0f || power == 0 ? 0 : c1 * Math.exp(power * (double) st.logZt() - st.logZ1());
            for (int i = 0; i < k; i++) {
                long idx = so + t.ids().getAtIndex(I32, base + i);
                double div = o.divergence() instanceof Divergence.ForwardKl
                        ? cq * ((double) sc.q[i] * sumP - sc.p[i])
                        : cq * sc.q[i] * wListed[i];
                set(g, idx, (float) (hardLabelTerm(sc.listed[i], sc.q[i], st, power, c1, ceScale) + div));
            }
        }
        return (float) value;
    }

    /**
     * c1 softmax(s) at a listed column, as the shared gradient forms it: (q Z_T)^T / Z_1 for an
     * integer T (ceScale = c1 Z_T^T / Z_1), else its own exp.
     */
    private static double hardLabelTerm(float listed, float q, Student st, int power, float c1, double ceScale) {
        if (c1 == 0f) return 0;
        if (power == 0) return c1 * Math.exp((double) listed - st.max() - st.logZ1());
        double qp = q;
        for (int j = 1; j < power; j++) qp *= q;
        return ceScale * qp;
    }
}
