package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;

/**
 * Backpropagation through whole models of both families against central finite differences of
 * the loss: GPT-2 (vocab 37, ctx 7, 2 layers, d 12, 3 heads); Llama with grouped-query attention
 * (4 query heads over 2 key/value heads) and a tied head; Qwen2 with q/k/v biases, an untied head
 * and Llama 3's rope scaling. The kernels are fp32, so each check
 * uses a direction along which the derivative is large compared with fp32 rounding of the loss:
 * for every parameter tensor, its largest-gradient element and the sign(g) direction over it.
 */
class ModelGradientTest {

    private static final int B = 2, T = 7, VOCAB = 37;

    @Test
    void everyGpt2ParameterGradientMatchesFiniteDifferences() {
        everyParameterGradientMatchesFiniteDifferences(k -> new Gpt2(new Gpt2Config(VOCAB, T, 2, 12, 3), k));
    }

    @Test
    void everyLlamaParameterGradientMatchesFiniteDifferencesWithGroupedQueriesAndATiedHead() {
        everyParameterGradientMatchesFiniteDifferences(k -> new Llama(new LlamaConfig(LlamaConfig.Family.LLAMA, VOCAB, T, 2, 12, 4, 2, 4, 20,
                1e-5f, LlamaConfig.Rope.plain(10000), true), k));
    }

    @Test
    void everyQwen2ParameterGradientMatchesFiniteDifferencesWithBiasesAndAnUntiedHead() {
        var rope = new LlamaConfig.Rope(500000, new LlamaConfig.Rope.Llama3Scaling(8, 1, 4, 4));
        everyParameterGradientMatchesFiniteDifferences(k -> new Llama(new LlamaConfig(LlamaConfig.Family.QWEN2, VOCAB, T + 3, 2, 16, 4, 1, 6,
                24, 1e-6f, rope, false), k));
    }

    private static void everyParameterGradientMatchesFiniteDifferences(java.util.function.Function<CpuKernels, LanguageModel> make) {
        try (CpuKernels kernels = new CpuKernels(2, "blas");
             LanguageModel model = make.apply(kernels);
             Workspace ws = new Workspace(kernels, 1 << 16);
             Arena arena = Arena.ofShared()) {
            Rng rng = new Rng(42);
            // Weights of order 0.3 instead of GPT-2's 0.02, so gradients stand well above fp32 noise.
            for (Tensor p : model.parameters().parameters()) {
                boolean lnWeight = (p.name().contains("ln_") || p.name().contains("norm")) && p.name().endsWith(".weight");
                for (long i = 0; i < p.numel(); i++) p.setFloat(i, (float) ((lnWeight ? 1 : 0) + 0.3 * rng.nextGaussian()));
            }
            MemorySegment tok = arena.allocate(4L * B * T), tgt = arena.allocate(4L * B * T);
            for (int i = 0; i < B * T; i++) {
                tok.setAtIndex(ValueLayout.JAVA_INT, i, rng.nextInt(VOCAB));
                tgt.setAtIndex(ValueLayout.JAVA_INT, i, i == 3 ? DifferentiableOps.IGNORE_INDEX : rng.nextInt(VOCAB));
            }
            tok.setAtIndex(ValueLayout.JAVA_INT, 5, tok.getAtIndex(ValueLayout.JAVA_INT, 1)); // a repeated token
            Tensor tokens = new Tensor("tokens", new int[]{B, T}, DType.I32, Device.CPU, tok, false);
            Tensor targets = new Tensor("targets", new int[]{B * T}, DType.I32, Device.CPU, tgt, false);
            Tape tape = new Tape();
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape);

            model.parameters().zeroGrad();
            ws.reset();
            ops.crossEntropy(model.forward(ops, tokens, B, T), targets, 1f);
            tape.backward();

            StringBuilder failures = new StringBuilder();
            int checks = 0;
            for (Tensor p : model.parameters().parameters()) {
                float[] g = p.grad().toFloatArray();
                int best = 0;
                for (int i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[best])) best = i;
                float[] single = new float[g.length];
                single[best] = 1f;
                float[] signs = new float[g.length];
                double expectSigns = 0;
                for (int i = 0; i < g.length; i++) {
                    signs[i] = (float) (Math.signum(g[i]) / Math.sqrt(g.length));
                    expectSigns += signs[i] * g[i];
                }
                checks += check(p, single, g[best], model, ops, tokens, targets, "max element", failures);
                checks += check(p, signs, expectSigns, model, ops, tokens, targets, "sign direction", failures);
            }
            assertTrue(failures.isEmpty(), failures.toString());
            assertTrue(checks == 2 * model.parameters().parameters().size());
        }
    }

    /** Compares the directional derivative along u with the central difference of the loss. */
    private static int check(Tensor p, float[] u, double analytic, LanguageModel model, DifferentiableOps ops,
                             Tensor tokens, Tensor targets, String what, StringBuilder failures) {
        float[] saved = p.toFloatArray();
        double eps = 1e-2;
        double plus = lossAt(p, saved, u, eps, model, ops, tokens, targets);
        double minus = lossAt(p, saved, u, -eps, model, ops, tokens, targets);
        for (int i = 0; i < saved.length; i++) p.setFloat(i, saved[i]);
        double numeric = (plus - minus) / (2 * eps);
        double err = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), 1e-3);
        if (err > 2e-2) {
            failures.append(p.name()).append(' ').append(what).append(": backprop ").append(analytic)
                    .append(", finite difference ").append(numeric).append('\n');
        }
        return 1;
    }

    private static double lossAt(Tensor p, float[] saved, float[] u, double eps, LanguageModel model,
                                 DifferentiableOps ops, Tensor tokens, Tensor targets) {
        for (int i = 0; i < saved.length; i++) p.setFloat(i, (float) (saved[i] + eps * u[i]));
        ops.tape().setEnabled(false);
        ops.workspace().reset();
        double loss = ops.crossEntropy(model.forward(ops, tokens, B, T), targets, 1f).mean();
        ops.tape().setEnabled(true);
        return loss;
    }
}
