package dev.distillery.kernels.reference;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import java.util.function.Consumer;
import java.util.function.ToDoubleFunction;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.distill.FeatureDistance;

/**
 * Every backward of the float64 reference against central finite differences of its forward.
 * The CPU kernels are in turn held to these backwards by {@code KernelConformance}.
 */
class ReferenceKernelsGradientTest {

    private static final double H = 1e-6;
    private final SplittableRandom rng = new SplittableRandom();

    private double[] randn(int n) {
        double[] x = new double[n];
        for (int i = 0; i < n; i++) x[i] = rng.nextDouble(-2, 2);
        return x;
    }

    private static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) s += a[i] * b[i];
        return s;
    }

    /** Checks analytic[i] against (L(x + h e_i) - L(x - h e_i)) / 2h for every i. */
    private static void assertGradient(String what, double[] x, double[] analytic, ToDoubleFunction<double[]> loss) {
        double worst = 0;
        for (int i = 0; i < x.length; i++) {
            double saved = x[i];
            x[i] = saved + H;
            double plus = loss.applyAsDouble(x);
            x[i] = saved - H;
            double minus = loss.applyAsDouble(x);
            x[i] = saved;
            double numeric = (plus - minus) / (2 * H);
            worst = Math.max(worst, Math.abs(numeric - analytic[i]) / Math.max(1, Math.abs(numeric)));
        }
        assertTrue(worst < 1e-6, what + ": worst error " + worst);
    }

    @Test
    void linearBackwardMatchesFiniteDifferences() {
        int n = 3, c = 5, oc = 7;
        double[] inp = randn(n * c), w = randn(c * oc), b = randn(oc), dout = randn(n * oc);
        double[] dinp = new double[n * c], dw = new double[c * oc], db = new double[oc];
        ReferenceKernels.linearBackward(dinp, dw, db, dout, inp, w, n, c, oc);
        ToDoubleFunction<double[]> loss = ignored -> {
            double[] out = new double[n * oc];
            ReferenceKernels.linearForward(out, inp, w, b, n, c, oc);
            return dot(out, dout);
        };
        assertGradient("dinp", inp, dinp, loss);
        assertGradient("dweight", w, dw, loss);
        assertGradient("dbias", b, db, loss);
    }

    @Test
    void embeddingBackwardMatchesFiniteDifferences() {
        int b = 2, t = 3, c = 4, vocab = 5;
        int[] tokens = {1, 4, 1, 0, 4, 4};
        double[] wte = randn(vocab * c), wpe = randn(t * c), dout = randn(b * t * c);
        double[] dwte = new double[wte.length], dwpe = new double[wpe.length];
        ReferenceKernels.embeddingBackward(dwte, dwpe, dout, tokens, b, t, c);
        ToDoubleFunction<double[]> loss = ignored -> {
            double[] out = new double[b * t * c];
            ReferenceKernels.embeddingForward(out, tokens, wte, wpe, b, t, c);
            return dot(out, dout);
        };
        assertGradient("dwte", wte, dwte, loss);
        assertGradient("dwpe", wpe, dwpe, loss);
    }

    @Test
    void layerNormBackwardMatchesFiniteDifferences() {
        int n = 3, c = 7;
        double[] inp = randn(n * c), w = randn(c), b = randn(c), dout = randn(n * c);
        double[] out = new double[n * c], mean = new double[n], rstd = new double[n];
        ReferenceKernels.layerNormForward(out, mean, rstd, inp, w, b, n, c);
        double[] dinp = new double[n * c], dw = new double[c], db = new double[c];
        ReferenceKernels.layerNormBackward(dinp, dw, db, dout, inp, w, mean, rstd, n, c);
        ToDoubleFunction<double[]> loss = ignored -> {
            double[] o = new double[n * c];
            ReferenceKernels.layerNormForward(o, new double[n], new double[n], inp, w, b, n, c);
            return dot(o, dout);
        };
        assertGradient("dinp", inp, dinp, loss);
        assertGradient("dweight", w, dw, loss);
        assertGradient("dbias", b, db, loss);
    }

    @Test
    void rmsNormBackwardMatchesFiniteDifferences() {
        int n = 3, c = 7;
        double[] inp = randn(n * c), w = randn(c), dout = randn(n * c);
        double[] out = new double[n * c], rstd = new double[n];
        ReferenceKernels.rmsNormForward(out, rstd, inp, w, n, c, 1e-5);
        double[] dinp = new double[n * c], dw = new double[c];
        ReferenceKernels.rmsNormBackward(dinp, dw, dout, inp, w, rstd, n, c);
        ToDoubleFunction<double[]> loss = ignored -> {
            double[] o = new double[n * c];
            ReferenceKernels.rmsNormForward(o, new double[n], inp, w, n, c, 1e-5);
            return dot(o, dout);
        };
        assertGradient("dinp", inp, dinp, loss);
        assertGradient("dweight", w, dw, loss);
    }

    @Test
    void swiGluBackwardMatchesFiniteDifferences() {
        int n = 13;
        double[] gate = randn(n), up = randn(n), dout = randn(n), dgate = new double[n], dup = new double[n];
        for (int i = 0; i < n; i++) gate[i] *= 3;
        ReferenceKernels.swiGluBackward(dgate, dup, dout, gate, up, n);
        ToDoubleFunction<double[]> loss = ignored -> {
            double[] o = new double[n];
            ReferenceKernels.swiGluForward(o, gate, up, n);
            return dot(o, dout);
        };
        assertGradient("dgate", gate, dgate, loss);
        assertGradient("dup", up, dup, loss);
    }

    @Test
    void ropeBackwardMatchesFiniteDifferences() {
        int b = 2, t = 3, heads = 2, hs = 6, stride = 17, offset = 3;   // heads inside wider rows, as q sits in qkv
        double[] inp = randn(b * t * stride), dout = randn(b * t * stride), cosSin = angles(t, hs / 2), dinp = new double[inp.length];
        ReferenceKernels.ropeBackward(dinp, dout, cosSin, b, t, heads, hs, stride, offset);
        assertGradient("dinp", inp, dinp, x -> {
            double[] o = new double[x.length];   // zeros outside the heads: they carry no gradient
            ReferenceKernels.ropeForward(o, x, cosSin, b, t, heads, hs, stride, offset);
            return dot(o, dout);
        });
    }

    /** (t, pairs, 2) cos and sin of random angles. */
    private double[] angles(int t, int pairs) {
        double[] cs = new double[t * pairs * 2];
        for (int i = 0; i < t * pairs; i++) {
            double a = randn(1)[0] * 3;
            cs[2 * i] = Math.cos(a);
            cs[2 * i + 1] = Math.sin(a);
        }
        return cs;
    }

    @Test
    void repeatHeadsBackwardMatchesFiniteDifferences() {
        int rows = 3, heads = 2, group = 3, hs = 4, inStride = 11, inOffset = 2, outStride = 29, outOffset = 4;
        double[] inp = randn(rows * inStride), dout = randn(rows * outStride), dinp = new double[inp.length];
        ReferenceKernels.repeatHeadsBackward(dinp, inStride, inOffset, dout, outStride, outOffset, rows, heads, group, hs);
        assertGradient("dinp", inp, dinp, x -> {
            double[] o = new double[rows * outStride];
            ReferenceKernels.repeatHeadsForward(o, outStride, outOffset, x, inStride, inOffset, rows, heads, group, hs);
            return dot(o, dout);
        });
    }

    @Test
    void geluBackwardMatchesFiniteDifferences() {
        int n = 13;
        double[] inp = randn(n), dout = randn(n), dinp = new double[n];
        ReferenceKernels.geluBackward(dinp, inp, dout, n);
        assertGradient("dinp", inp, dinp, x -> {
            double[] o = new double[n];
            ReferenceKernels.geluForward(o, x, n);
            return dot(o, dout);
        });
    }

    @Test
    void attentionBackwardMatchesFiniteDifferences() {
        int b = 2, t = 5, c = 6, nh = 2;
        double[] qkv = randn(b * t * 3 * c), dout = randn(b * t * c);
        double[] out = new double[b * t * c], att = new double[b * nh * t * t];
        ReferenceKernels.attentionForward(out, att, qkv, b, t, c, nh);
        double[] dqkv = new double[qkv.length];
        ReferenceKernels.attentionBackward(dqkv, dout, qkv, att, b, t, c, nh);
        assertGradient("dqkv", qkv, dqkv, x -> {
            double[] o = new double[b * t * c];
            ReferenceKernels.attentionForward(o, new double[att.length], x, b, t, c, nh);
            return dot(o, dout);
        });
    }

    @Test
    void softmaxCrossEntropyGradientMatchesFiniteDifferences() {
        int n = 4, v = 11;
        double[] logits = randn(n * v);
        int[] targets = {3, -100, 10, 0};
        double[] dlogits = new double[n * v];
        ReferenceKernels.softmaxCrossEntropy(logits, targets, n, v, -100, dlogits, 1.0 / 3);
        assertGradient("dlogits", logits, dlogits, x -> {
            double sum = 0;
            for (double l : ReferenceKernels.softmaxCrossEntropy(x, targets, n, v, -100, null, 0)) sum += l;
            return sum / 3;
        });
    }

    @Test
    void featureDistanceGradientsMatchFiniteDifferences() {
        int n = 3, d = 7;
        for (FeatureDistance distance : FeatureDistance.values()) {
            double[] s = randn(n * d), t = randn(n * d), ds = new double[n * d];
            ReferenceKernels.featureDistance(distance, new double[n], ds, s, t, n, d, 0.5);
            assertGradient("d" + distance, s, ds, x -> {
                double[] loss = new double[n];
                ReferenceKernels.featureDistance(distance, loss, null, x, t, n, d, 0);
                return 0.5 * (loss[0] + loss[1] + loss[2]);
            });
        }
    }

    @Test
    void adamWFirstStepMovesEachParameterByLearningRate() {
        // With bias correction, step 1 gives m̂ = g, v̂ = g², so the update is lr · sign(g) (no decay).
        double[] p = randn(9), g = randn(9), before = p.clone();
        ReferenceKernels.adamW(p, g, new double[9], new double[9], 0.01, 0.9, 0.999, 0, 0, 1);
        Consumer<Integer> check = i -> assertTrue(Math.abs(before[i] - p[i] - 0.01 * Math.signum(g[i])) < 1e-12);
        for (int i = 0; i < 9; i++) check.accept(i);
    }
}
