package dev.distillery.runtime.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.function.Function;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.autograd.Labels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;

/**
 * Several teachers through the chunked LM head + loss. The mixture is held to a float64 mixture of
 * the same teachers given as one dense teacher (T · log Σ w_i softmax(t_i/T)); the mean of losses
 * to the weighted sum of single-teacher runs; both to a single teacher when the teachers are
 * copies of one. Loss and every parameter gradient, chunks that do not divide the rows.
 */
class TeacherEnsembleTest {

    private static final Gpt2Config CFG = new Gpt2Config(61, 8, 1, 12, 3);
    private static final int B = 3, T = 8, N = B * T, V = 59, CHUNK = 7;
    private static final float[] W = {0.3f, 0.7f};

    private static Tensor ints(Arena arena, String name, int n, Function<Integer, Integer> value, int... shape) {
        MemorySegment s = arena.allocate(4L * n);
        for (int i = 0; i < n; i++) s.setAtIndex(ValueLayout.JAVA_INT, i, value.apply(i));
        return new Tensor(name, shape, DType.I32, Device.CPU, s, false);
    }

    private static double[] randomTeacher(Rng rng) {
        double[] t = new double[N * V];
        for (int i = 0; i < t.length; i++) t[i] = Float.intBitsToFloat(Float.floatToIntBits((float) (3 * rng.nextGaussian())) & 0xffff0000);
        return t;
    }

    private static TeacherTargets.Dense bf16(Arena arena, double[] t) {
        MemorySegment s = arena.allocate(2L * t.length, 64);
        for (int i = 0; i < t.length; i++) DType.BF16.write(s, i, (float) t[i]);
        return new TeacherTargets.Dense(s, DType.BF16, V);
    }

    /** The mixture in float64 as an fp32 dense teacher at temperature temp. */
    private static TeacherTargets.Dense mixtureReference(Arena arena, double[] a, double[] b, double temp) {
        MemorySegment s = arena.allocate(4L * N * V, 64);
        for (int r = 0; r < N; r++) {
            double la = lse(a, r, temp), lb = lse(b, r, temp);
            for (int j = 0; j < V; j++) {
                double p = W[0] * Math.exp(a[r * V + j] / temp - la) + W[1] * Math.exp(b[r * V + j] / temp - lb);
                s.setAtIndex(ValueLayout.JAVA_FLOAT, (long) r * V + j, (float) (temp * Math.log(p)));
            }
        }
        return new TeacherTargets.Dense(s, DType.F32, V);
    }

    private static double lse(double[] t, int r, double temp) {
        double m = Double.NEGATIVE_INFINITY, s = 0;
        for (int j = 0; j < V; j++) m = Math.max(m, t[r * V + j] / temp);
        for (int j = 0; j < V; j++) s += Math.exp(t[r * V + j] / temp - m);
        return m + Math.log(s);
    }

    /** The loss and a copy of every gradient after one forward + backward against {@code teachers}. */
    private static double[] lossAndGradients(CpuKernels kernels, Gpt2 model, Tensor tokens, Tensor labels, TeacherEnsemble teachers, DistillOptions o) {
        try (Workspace ws = new Workspace(kernels, 1 << 16)) {
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, new Tape());
            model.parameters().zeroGrad();
            var loss = ops.distillationLoss(model.hidden(ops, tokens, B, T), model.lmHeadWeight(), teachers, Labels.of(labels), o,
                    DifferentiableOps.Reduction.MEAN, CHUNK, 1f);
            ops.tape().backward();
            float[] g = model.parameters().gradBlock().asSlice(0, 4 * model.parameters().blockElements()).toArray(ValueLayout.JAVA_FLOAT);
            double[] out = new double[g.length + 1];
            out[0] = loss.total();
            for (int i = 0; i < g.length; i++) out[i + 1] = g[i];
            return out;
        }
    }

    private static TeacherEnsemble one(TeacherTargets t) {
        return new TeacherEnsemble(List.of(TeacherRows.stored(t, null)), new float[]{1f}, TeacherEnsemble.Combination.MEAN_OF_LOSSES);
    }

    private static TeacherEnsemble two(TeacherTargets a, TeacherTargets b, TeacherEnsemble.Combination c) {
        return new TeacherEnsemble(List.of(TeacherRows.stored(a, null), TeacherRows.stored(b, null)), W, c);
    }

    private static void assertClose(String what, double[] expected, double[] actual, double tol) {
        assertEquals(expected[0], actual[0], tol * Math.abs(expected[0]), what + " loss");
        double diff = 0, scale = 1e-9;
        for (int i = 1; i < expected.length; i++) {
            diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
            scale = Math.max(scale, Math.abs(expected[i]));
        }
        assertTrue(diff / scale < tol, what + " gradients: relative difference " + diff / scale);
    }

    @Test
    void bothCombinationsMatchTheirDefinitions() {
        try (CpuKernels kernels = new CpuKernels(2, "auto"); Gpt2 model = new Gpt2(CFG, kernels); Arena arena = Arena.ofShared()) {
            model.initialize(3);
            Rng rng = new Rng(21);
            Tensor tokens = ints(arena, "tokens", N, i -> rng.nextInt(CFG.vocabSize()), B, T);
            Tensor labels = ints(arena, "labels", N, i -> i == 4 ? -100 : rng.nextInt(V), N);
            double[] a = randomTeacher(rng), b = randomTeacher(rng);
            TeacherTargets.Dense ta = bf16(arena, a), tb = bf16(arena, b);
            for (Divergence d : new Divergence[]{Divergence.forwardKl(), Divergence.reverseKl(), Divergence.jsd(0.5)}) {
                DistillOptions o = DistillOptions.of(2f, 0.3f).withDivergence(d);
                // the mixture against the float64 mixture given as one teacher
                assertClose(d + " mixture", lossAndGradients(kernels, model, tokens, labels, one(mixtureReference(arena, a, b, 2)), o),
                        lossAndGradients(kernels, model, tokens, labels, two(ta, tb, TeacherEnsemble.Combination.MIXTURE), o), 1e-4);
                // the mean of losses against the weighted single-teacher runs
                double[] la = lossAndGradients(kernels, model, tokens, labels, one(ta), o), lb = lossAndGradients(kernels, model, tokens, labels, one(tb), o);
                double[] weighted = new double[la.length];
                for (int i = 0; i < la.length; i++) weighted[i] = W[0] * la[i] + W[1] * lb[i];
                assertClose(d + " mean of losses", weighted, lossAndGradients(kernels, model, tokens, labels,
                        two(ta, tb, TeacherEnsemble.Combination.MEAN_OF_LOSSES), o), 1e-5);
                // two copies of one teacher are that teacher, both ways
                for (TeacherEnsemble.Combination c : TeacherEnsemble.Combination.values()) {
                    assertClose(d + " " + c + " of two copies", la, lossAndGradients(kernels, model, tokens, labels, two(ta, ta, c), o), 1e-4);
                }
            }
        }
    }
}
