package dev.distillery.kernels.reference;

import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;

/**
 * The float64 reference of the fused distillation loss, written from the definitions: build the
 * teacher distribution over categories (every vocabulary entry, or the top-k entries plus a tail
 * bucket, or the sampled estimate), build the student's over the same categories, evaluate the
 * divergence, and differentiate it through q = softmax(s/T) with the chain rule
 * dL/ds_j = (1/T) q_j (∂L/∂Q_{c(j)} − Σ_c Q_c ∂L/∂Q_c). Nothing is fused or streamed. One method
 * per teacher kind ({@code denseRow}, {@code topKRow}, {@code sampledRow}, {@code mixtureRow}),
 * named like the rows of kernels.cpu.distill and cuda/src/main/cuda/distill_loss.cu.
 */
public final class ReferenceDistillLoss {

    /** Loss and gradient of one call, per row and summed. */
    public record Result(double[] ce, double[] divergence, double[] grad, double total, int rows) {
    }

    /** A teacher in float64 form. */
    public sealed interface Teacher {
        int vocab();
    }

    /** Dense logits (n, vocab); -inf allowed. */
    public record Dense(double[] logits, int vocab) implements Teacher {
    }

    /** ids and logits (n, k), logsumexp (n) of logits / shardTemperature. */
    public record TopK(int[] ids, double[] logits, double[] logsumexp, int k, int vocab, double shardTemperature) implements Teacher {
    }

    /** ids and weights (n, samples). */
    public record Sampled(int[] ids, double[] weights, int samples, int vocab) implements Teacher {
    }

    /**
     * Dense teachers of one vocabulary and their weights: P = Σ_i w_i softmax(t_i/T) / Σ_i w_i (the
     * kernels' weights are floats whose sum is 1 only to rounding; the mixture they read is normalized).
     */
    public record Mixture(java.util.List<Dense> teachers, double[] weights) implements Teacher {
        @Override
        public int vocab() {
            return teachers.getFirst().vocab();
        }
    }

    private static final double LOG_FLOOR = Math.log(Float.MIN_NORMAL);

    private ReferenceDistillLoss() {
    }

    /**
     * @param student   (n, v) logits
     * @param labels    (n) or null
     * @param gradScale factor on d(Σ_rows total)/ds
     */
    public static Result compute(double[] student, Teacher teacher, int[] labels, int n, int v, DistillOptions o,
                                 double gradScale) {
        double t = o.temperature(), alpha = o.alpha();
        double[] ce = new double[n], div = new double[n], grad = new double[n * v];
        double total = 0;
        int rows = 0;
        for (int r = 0; r < n; r++) {
            if (labels != null && labels[r] == o.ignoreIndex()) continue;
            rows++;
            double[] s = java.util.Arrays.copyOfRange(student, r * v, (r + 1) * v);
            double[] lq = logSoftmax(s, t);
            // hard-label cross-entropy at T = 1
            double[] dCe = new double[v];
            if (labels != null) {
                double[] l1 = logSoftmax(s, 1);
                ce[r] = -l1[labels[r]];
                for (int j = 0; j < v; j++) dCe[j] = Math.exp(l1[j]) - (j == labels[r] ? 1 : 0);
            }
            // categories: cat[j] = category of vocabulary entry j; log P per category
            int[] cat = new int[v];
            Categories teacherRow = switch (teacher) {
                case Dense d -> denseRow(d, r, v, t, cat);
                case TopK k -> topKRow(k, r, t, o, cat);
                case Sampled sm -> sampledRow(sm, r, v, cat);
                case Mixture m -> mixtureRow(m, r, v, t, cat);
            };
            double[] logP = teacherRow.logP();
            boolean crossEntropyOnly = teacherRow.crossEntropyOnly();
            int cats = logP.length;
            double[] logQ = new double[cats];
            java.util.Arrays.fill(logQ, Double.NEGATIVE_INFINITY);
            for (int j = 0; j < v; j++) logQ[cat[j]] = logAddExp(logQ[cat[j]], lq[j]);
            // divergence value, and per vocabulary entry j the term q_j · ∂L/∂Q_{c(j)} and Σ_c Q_c ∂L/∂Q_c
            double value = 0, sumQdQ = 0;
            double[] qdQ = new double[v];
            switch (o.divergence()) {
                case Divergence.ForwardKl ignored -> {
                    // ∂L/∂Q_c = −P_c/Q_c, so q_j ∂L/∂Q_c = −P_c exp(lq_j − log Q_c) and Σ Q ∂L/∂Q = −Σ P
                    for (int c = 0; c < cats; c++) {
                        if (logP[c] == Double.NEGATIVE_INFINITY) continue;
                        double pc = Math.exp(logP[c]);
                        value += pc * ((crossEntropyOnly ? 0 : logP[c]) - logQ[c]);
                        sumQdQ -= pc;
                    }
                    for (int j = 0; j < v; j++) {
                        double lp = logP[cat[j]];
                        qdQ[j] = lp == Double.NEGATIVE_INFINITY ? 0 : -Math.exp(lp + lq[j] - logQ[cat[j]]);
                    }
                }
                case Divergence.ReverseKl ignored -> {
                    double[] l = new double[cats];
                    for (int c = 0; c < cats; c++) {
                        l[c] = logQ[c] - Math.max(logP[c], LOG_FLOOR);
                        if (logQ[c] == Double.NEGATIVE_INFINITY) continue;
                        value += Math.exp(logQ[c]) * l[c];
                        sumQdQ += Math.exp(logQ[c]) * (l[c] + 1);
                    }
                    // q log q → 0 as q → 0: a −inf student logit adds nothing (not 0 · −inf)
                    for (int j = 0; j < v; j++) qdQ[j] = lq[j] == Double.NEGATIVE_INFINITY ? 0 : Math.exp(lq[j]) * (l[cat[j]] + 1);
                }
                case Divergence.Jsd jsd -> {
                    double b = jsd.beta();
                    double[] gc = new double[cats];
                    for (int c = 0; c < cats; c++) {
                        double pc = Math.exp(logP[c]), qc = Math.exp(logQ[c]);
                        double m = b * pc + (1 - b) * qc;
                        if (pc > 0) value += b * pc * (logP[c] - Math.log(m));
                        if (qc > 0) {
                            gc[c] = (1 - b) * (logQ[c] - Math.log(m));
                            value += qc * gc[c];
                            sumQdQ += qc * gc[c];
                        }
                    }
                    for (int j = 0; j < v; j++) qdQ[j] = Math.exp(lq[j]) * gc[cat[j]];
                }
            }
            double divScale = o.divergenceScale();
            div[r] = divScale * value;
            for (int j = 0; j < v; j++) {
                double dDiv = (qdQ[j] - Math.exp(lq[j]) * sumQdQ) / t;  // (1/T) q_j (∂L/∂Q_c − Σ Q ∂L/∂Q)
                grad[r * v + j] = gradScale * (alpha * dCe[j] + (1 - alpha) * divScale * dDiv);
            }
            total += alpha * ce[r] + (1 - alpha) * div[r];
        }
        return new Result(ce, div, grad, total, rows);
    }

    /** A teacher row as categories: log P per category; crossEntropyOnly for sampled rows (the value is −Σ p̂ log q). */
    private record Categories(double[] logP, boolean crossEntropyOnly) {
    }

    /** Dense teacher: every vocabulary entry its own category, log P = log softmax(t/T), −inf past the teacher's vocabulary. */
    private static Categories denseRow(Dense d, int r, int v, double t, int[] cat) {
        double[] tl = new double[v];
        for (int j = 0; j < v; j++) tl[j] = j < d.vocab() ? d.logits()[r * d.vocab() + j] : Double.NEGATIVE_INFINITY;
        double[] logP = logSoftmax(tl, t);
        for (int j = 0; j < v; j++) cat[j] = j;
        return new Categories(logP, false);
    }

    /** A mixture of dense teachers: every vocabulary entry its own category, log P = log Σ_i w_i softmax(t_i/T) / Σ_i w_i. */
    private static Categories mixtureRow(Mixture m, int r, int v, double t, int[] cat) {
        double[] logP = new double[v];
        java.util.Arrays.fill(logP, Double.NEGATIVE_INFINITY);
        double sum = 0;
        for (double w : m.weights()) sum += w;
        for (int i = 0; i < m.teachers().size(); i++) {
            double[] lp = denseRow(m.teachers().get(i), r, v, t, cat).logP();
            double lw = Math.log(m.weights()[i] / sum);
            for (int j = 0; j < v; j++) logP[j] = logAddExp(logP[j], lw + lp[j]);
        }
        return new Categories(logP, false);
    }

    /** Top-k teacher: the k listed ids and one tail category holding the teacher's mass outside them. */
    private static Categories topKRow(TopK k, int r, double t, DistillOptions o, int[] cat) {
        int kk = k.k();
        double[] logP = new double[kk + 1];
        java.util.Arrays.fill(cat, kk);
        double[] topLogits = new double[kk];
        for (int i = 0; i < kk; i++) {
            cat[k.ids()[r * kk + i]] = i;
            topLogits[i] = k.logits()[r * kk + i];
        }
        double tailAtShard = 1;
        for (int i = 0; i < kk; i++) tailAtShard -= Math.exp(topLogits[i] / k.shardTemperature() - k.logsumexp()[r]);
        tailAtShard = Math.max(0, tailAtShard);
        double[] renorm = logSoftmax(topLogits, t);
        boolean renormalize = o.topKMode() == DistillOptions.TopKMode.RENORMALIZE;
        boolean sameT = t == k.shardTemperature();
        for (int i = 0; i < kk; i++) {
            if (renormalize) logP[i] = renorm[i];
            else if (sameT) logP[i] = topLogits[i] / t - k.logsumexp()[r];
            else logP[i] = Math.log(1 - tailAtShard) + renorm[i];
        }
        // no teacher tail when renormalizing or when the top-k lists the teacher's whole vocabulary
        logP[kk] = renormalize || kk == k.vocab() ? Double.NEGATIVE_INFINITY : Math.log(tailAtShard);
        return new Categories(logP, false);
    }

    /** Sampled teacher: p̂_j = Σ_s w_s [id_s = j] per vocabulary entry; the reported divergence is the cross-entropy −Σ p̂ log q. */
    private static Categories sampledRow(Sampled sm, int r, int v, int[] cat) {
        double[] pHat = new double[v];
        for (int i = 0; i < sm.samples(); i++) pHat[sm.ids()[r * sm.samples() + i]] += sm.weights()[r * sm.samples() + i];
        double[] logP = new double[v];
        for (int j = 0; j < v; j++) logP[j] = Math.log(pHat[j]);
        for (int j = 0; j < v; j++) cat[j] = j;
        return new Categories(logP, true);
    }

    /** log softmax(x / t) in float64; -inf entries get -inf. */
    public static double[] logSoftmax(double[] x, double t) {
        double mx = Double.NEGATIVE_INFINITY;
        for (double value : x) mx = Math.max(mx, value);
        double sum = 0;
        for (double value : x) sum += Math.exp((value - mx) / t);
        double lse = Math.log(sum);
        double[] out = new double[x.length];
        for (int i = 0; i < x.length; i++) out[i] = (x[i] - mx) / t - lse;
        return out;
    }

    private static double logAddExp(double a, double b) {
        if (a == Double.NEGATIVE_INFINITY) return b;
        if (b == Double.NEGATIVE_INFINITY) return a;
        double m = Math.max(a, b);
        return m + Math.log(Math.exp(a - m) + Math.exp(b - m));
    }

    /** softmax(x / t) in float64; -inf entries get 0. */
    public static double[] softmax(double[] x, double t) {
        double mx = Double.NEGATIVE_INFINITY;
        for (double value : x) mx = Math.max(mx, value);
        double[] out = new double[x.length];
        double sum = 0;
        for (int i = 0; i < x.length; i++) {
            out[i] = Math.exp((x[i] - mx) / t);
            sum += out[i];
        }
        for (int i = 0; i < x.length; i++) out[i] /= sum;
        return out;
    }
}
