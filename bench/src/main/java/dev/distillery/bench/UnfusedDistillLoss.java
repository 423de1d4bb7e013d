package dev.distillery.bench;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.stream.IntStream;

import dev.distillery.kernels.DType;

/**
 * The baseline for the fused loss benchmark: the same forward-KL distillation loss (T² scaling,
 * alpha-weighted hard-label CE) composed the way an eager framework runs it, one full pass and
 * one (n, V) buffer per step: log_softmax(s/T), log_softmax(t/T), softmax(t/T), the KL sum, then
 * the backward T (exp(log q) − p) and the CE term. Plain Java loops (Math.exp/log), rows split
 * over the common fork-join pool.
 */
public final class UnfusedDistillLoss {

    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private UnfusedDistillLoss() {
    }

    /** log_softmax(x[r] / t) into out[r] for every row; x is fp32 or a typed teacher. */
    static void logSoftmax(MemorySegment x, DType type, MemorySegment out, int n, int v, float t) {
        IntStream.range(0, n).parallel().forEach(r -> {
            long o = (long) r * v;
            float mx = Float.NEGATIVE_INFINITY;
            for (int j = 0; j < v; j++) mx = Math.max(mx, type.read(x, o + j) / t);
            double sum = 0;
            for (int j = 0; j < v; j++) sum += Math.exp(type.read(x, o + j) / t - mx);
            float lse = (float) (mx + Math.log(sum));
            for (int j = 0; j < v; j++) out.setAtIndex(F, o + j, type.read(x, o + j) / t - lse);
        });
    }

    /** out = exp(x), elementwise over n·v. */
    static void exp(MemorySegment x, MemorySegment out, int n, int v) {
        IntStream.range(0, n).parallel().forEach(r -> {
            long o = (long) r * v;
            for (int j = 0; j < v; j++) out.setAtIndex(F, o + j, (float) Math.exp(x.getAtIndex(F, o + j)));
        });
    }

    /**
     * Dense teacher: returns the mean loss and writes dL/ds into grad.
     * Buffers logq, logp, p are (n, v) fp32 scratch.
     */
    public static double dense(MemorySegment s, MemorySegment teacher, DType type, int[] labels, MemorySegment grad,
                               MemorySegment logq, MemorySegment logp, MemorySegment p, MemorySegment logq1,
                               int n, int v, float t, float alpha) {
        logSoftmax(s, DType.F32, logq, n, v, t);        // pass 1
        logSoftmax(teacher, type, logp, n, v, t);           // pass 2
        exp(logp, p, n, v);                                 // pass 3
        double kl = IntStream.range(0, n).parallel().mapToDouble(r -> { // pass 4
            long o = (long) r * v;
            double sum = 0;
            for (int j = 0; j < v; j++) {
                float pj = p.getAtIndex(F, o + j);
                if (pj > 0) sum += pj * (logp.getAtIndex(F, o + j) - logq.getAtIndex(F, o + j));
            }
            return sum;
        }).sum();
        logSoftmax(s, DType.F32, logq1, n, v, 1f);     // pass 5: the hard-label CE
        double ce = 0;
        for (int r = 0; r < n; r++) ce -= logq1.getAtIndex(F, (long) r * v + labels[r]);
        float scale = 1f / n;
        IntStream.range(0, n).parallel().forEach(r -> {     // pass 6: backward
            long o = (long) r * v;
            for (int j = 0; j < v; j++) {
                float q = (float) Math.exp(logq.getAtIndex(F, o + j));
                float sm = (float) Math.exp(logq1.getAtIndex(F, o + j));
                float g = (1 - alpha) * t * (q - p.getAtIndex(F, o + j)) + alpha * (sm - (j == labels[r] ? 1 : 0));
                grad.setAtIndex(F, o + j, g * scale);
            }
        });
        return (alpha * ce + (1 - alpha) * t * t * kl) / n;
    }

    /**
     * Top-k teacher (tail bucket): the same passes over the student, plus gathers at the k ids.
     * ids (n, k) int32, logits (n, k) fp32, lse (n) at temperature t.
     */
    public static double topK(MemorySegment s, int[] ids, float[] logits, float[] lse, int k, int[] labels,
                              MemorySegment grad, MemorySegment logq, MemorySegment logq1, int n, int v, float t, float alpha) {
        logSoftmax(s, DType.F32, logq, n, v, t);
        logSoftmax(s, DType.F32, logq1, n, v, 1f);
        double[] rowLoss = new double[n];
        double[] rho = new double[n];
        IntStream.range(0, n).parallel().forEach(r -> {
            double kl = 0, sumP = 0, sumQ = 0;
            for (int i = 0; i < k; i++) {
                double lp = logits[r * k + i] / t - lse[r], pv = Math.exp(lp);
                double lq = logq.getAtIndex(F, (long) r * v + ids[r * k + i]);
                kl += pv * (lp - lq);
                sumP += pv;
                sumQ += Math.exp(lq);
            }
            double pTail = Math.max(0, 1 - sumP), qTail = Math.max(1e-30, 1 - sumQ);
            if (pTail > 0) kl += pTail * (Math.log(pTail) - Math.log(qTail));
            rho[r] = pTail / qTail;
            rowLoss[r] = (1 - alpha) * t * t * kl - alpha * logq1.getAtIndex(F, (long) r * v + labels[r]);
        });
        float scale = 1f / n;
        IntStream.range(0, n).parallel().forEach(r -> {
            long o = (long) r * v;
            for (int j = 0; j < v; j++) {
                float q = (float) Math.exp(logq.getAtIndex(F, o + j));
                float sm = (float) Math.exp(logq1.getAtIndex(F, o + j));
                grad.setAtIndex(F, o + j, scale * ((1 - alpha) * t * q * (float) (1 - rho[r]) + alpha * (sm - (j == labels[r] ? 1 : 0))));
            }
            for (int i = 0; i < k; i++) {
                long idx = o + ids[r * k + i];
                float q = (float) Math.exp(logq.getAtIndex(F, idx));
                float pv = (float) Math.exp(logits[r * k + i] / t - lse[r]);
                grad.setAtIndex(F, idx, grad.getAtIndex(F, idx) + scale * (1 - alpha) * t * (q * (float) rho[r] - pv));
            }
        });
        double sum = 0;
        for (double l : rowLoss) sum += l;
        return sum / n;
    }
}
