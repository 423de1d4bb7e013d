package dev.distillery.kernels.reference;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;

/** The reference distillation gradient against central finite differences of its own loss, in float64. */
class ReferenceDistillLossGradientTest {

    private final SplittableRandom rng = new SplittableRandom();

    private void check(ReferenceDistillLoss.Teacher teacher, int n, int v, DistillOptions o, int[] labels, String what) {
        double[] s = new double[n * v];
        for (int i = 0; i < s.length; i++) s[i] = 2 * rng.nextGaussian();
        ReferenceDistillLoss.Result r = ReferenceDistillLoss.compute(s, teacher, labels, n, v, o, 1.0);
        double h = 1e-6, worst = 0;
        for (int i = 0; i < s.length; i++) {
            double saved = s[i];
            s[i] = saved + h;
            double plus = ReferenceDistillLoss.compute(s, teacher, labels, n, v, o, 1.0).total();
            s[i] = saved - h;
            double minus = ReferenceDistillLoss.compute(s, teacher, labels, n, v, o, 1.0).total();
            s[i] = saved;
            double numeric = (plus - minus) / (2 * h);
            worst = Math.max(worst, Math.abs(numeric - r.grad()[i]) / Math.max(1, Math.abs(numeric)));
        }
        assertTrue(worst < 1e-6, what + ": worst error " + worst);
    }

    @Test
    void everyDivergenceAndTeacherKindMatchesFiniteDifferences() {
        int n = 3, vt = 9, v = 11;
        double[] t = new double[n * vt];
        for (int i = 0; i < t.length; i++) t[i] = 2 * rng.nextGaussian();
        int[] labels = {4, -100, 10};
        int k = 3;
        int[] ids = {0, 5, 8, 1, 2, 3, 7, 6, 4};
        double[] topLogits = new double[n * k], lse = new double[n];
        for (int r = 0; r < n; r++) {
            for (int i = 0; i < k; i++) topLogits[r * k + i] = t[r * vt + ids[r * k + i]];
            double sum = 0;
            for (int j = 0; j < vt; j++) sum += Math.exp(t[r * vt + j] / 2.0);
            lse[r] = Math.log(sum);
        }
        ReferenceDistillLoss.Teacher dense = new ReferenceDistillLoss.Dense(t, vt);
        ReferenceDistillLoss.Teacher topK = new ReferenceDistillLoss.TopK(ids, topLogits, lse, k, vt, 2.0);
        double[] t2 = new double[n * vt];
        for (int i = 0; i < t2.length; i++) t2[i] = 3 * rng.nextGaussian();
        ReferenceDistillLoss.Teacher mixture = new ReferenceDistillLoss.Mixture(
                java.util.List.of(new ReferenceDistillLoss.Dense(t, vt), new ReferenceDistillLoss.Dense(t2, vt)), new double[]{0.3, 0.7});
        ReferenceDistillLoss.Teacher sampled = new ReferenceDistillLoss.Sampled(new int[]{1, 1, 2, 0, 8, 3}, new double[]{0.2, 0.3, 0.5, 1, 0.4, 0.6}, 2, vt);
        for (Divergence d : new Divergence[]{Divergence.forwardKl(), Divergence.reverseKl(), Divergence.jsd(0.4)}) {
            DistillOptions o = DistillOptions.of(2f, 0.3f).withDivergence(d);
            check(dense, n, v, o, labels, "dense " + d);
            check(topK, n, v, o, labels, "top-k tail " + d);
            check(topK, n, v, o.withTopKMode(DistillOptions.TopKMode.RENORMALIZE), labels, "top-k renormalized " + d);
            check(dense, n, v, o.withTemperatureSquared(false), labels, "dense no T² " + d);
            check(mixture, n, v, o, labels, "mixture of two " + d);
        }
        check(sampled, n, v, DistillOptions.of(2f, 0.3f), labels, "sampled");
    }
}
