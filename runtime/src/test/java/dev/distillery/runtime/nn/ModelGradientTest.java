package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.function.DoubleSupplier;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.runtime.autograd.Labels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.distill.FeatureDistillation;

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
        try (CpuKernels kernels = new CpuKernels(2, "auto");
             LanguageModel model = make.apply(kernels);
             Workspace ws = new Workspace(kernels, 1 << 16).poisonAllocations();
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
            ops.crossEntropy(model.forward(ops, tokens, B, T), Labels.of(targets), 1f);
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
                DoubleSupplier loss = () -> ops.crossEntropy(model.forward(ops, tokens, B, T), Labels.of(targets), 1f).mean();
                checks += check(p, single, g[best], ops, loss, "max element", failures);
                checks += check(p, signs, expectSigns, ops, loss, "sign direction", failures);
            }
            assertTrue(failures.isEmpty(), failures.toString());
            assertTrue(checks == 2 * model.parameters().parameters().size());
        }
    }

    /**
     * Feature distillation through a whole Llama (hidden states 0, 1 and the final norm's 2, both
     * distances) into random teacher states of another width: every model parameter and every
     * projection against finite differences of the weighted feature loss.
     */
    @Test
    void featureLossGradientsMatchFiniteDifferencesThroughTheModelAndTheProjections() {
        for (FeatureDistance distance : FeatureDistance.values()) {
            try (CpuKernels kernels = new CpuKernels(2, "blas");
                 LanguageModel model = new Llama(new LlamaConfig(LlamaConfig.Family.LLAMA, VOCAB, T, 2, 12, 4, 2, 4, 20,
                         1e-5f, LlamaConfig.Rope.plain(10000), true), kernels);
                 Workspace ws = new Workspace(kernels, 1 << 16).poisonAllocations();
                 Arena arena = Arena.ofShared()) {
                Rng rng = new Rng(7);
                for (Tensor p : model.parameters().parameters()) {
                    boolean norm = p.name().contains("norm");
                    for (long i = 0; i < p.numel(); i++) p.setFloat(i, (float) ((norm ? 1 : 0) + 0.3 * rng.nextGaussian()));
                }
                int teacherWidth = 9;
                var spec = new FeatureDistillation.Spec(List.of(new FeatureDistillation.Pair(0, 1), new FeatureDistillation.Pair(1, 3),
                        new FeatureDistillation.Pair(2, 0)), distance, 0.7);
                FeatureDistillation features = new FeatureDistillation(spec, 2, 12, 3, teacherWidth, kernels);
                features.initialize(3);
                java.util.Map<Integer, MemorySegment> layers = new java.util.HashMap<>();
                for (int l : spec.teacherLayers()) {
                    MemorySegment m = arena.allocate(4L * B * T * teacherWidth, 64);
                    for (int i = 0; i < B * T * teacherWidth; i++) m.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) rng.nextGaussian());
                    layers.put(l, m);
                }
                FeatureDistillation.TeacherStates teacher = new FeatureDistillation.TeacherStates() {
                    public MemorySegment layer(int index) {
                        return layers.get(index);
                    }

                    public DType type() {
                        return DType.F32;
                    }
                };
                MemorySegment tok = arena.allocate(4L * B * T);
                for (int i = 0; i < B * T; i++) tok.setAtIndex(ValueLayout.JAVA_INT, i, rng.nextInt(VOCAB));
                Tensor tokens = new Tensor("tokens", new int[]{B, T}, DType.I32, Device.CPU, tok, false);
                Tape tape = new Tape();
                DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape);
                DoubleSupplier loss = () -> {
                    var tap = features.studentTap(ops);
                    model.hidden(ops, tokens, B, T, tap);
                    return spec.weight() * features.loss(ops, tap, teacher, 1f);
                };

                model.parameters().zeroGrad();
                features.projections().zeroGrad();
                ws.reset();
                loss.getAsDouble();
                tape.backward();

                StringBuilder failures = new StringBuilder();
                java.util.List<Tensor> all = new java.util.ArrayList<>(model.parameters().parameters());
                all.addAll(features.projections().parameters());
                for (Tensor p : all) {
                    float[] g = p.grad().toFloatArray();
                    int best = 0;
                    for (int i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[best])) best = i;
                    float[] single = new float[g.length];
                    single[best] = 1f;
                    check(p, single, g[best], ops, loss, distance + " max element", failures);
                }
                assertTrue(failures.isEmpty(), failures.toString());
                features.close();
            }
        }
    }

    /** Compares the directional derivative along u with the central difference of the loss. */
    private static int check(Tensor p, float[] u, double analytic, DifferentiableOps ops, DoubleSupplier loss, String what,
                             StringBuilder failures) {
        float[] saved = p.toFloatArray();
        double eps = 1e-2;
        double plus = lossAt(p, saved, u, eps, ops, loss);
        double minus = lossAt(p, saved, u, -eps, ops, loss);
        for (int i = 0; i < saved.length; i++) p.setFloat(i, saved[i]);
        double numeric = (plus - minus) / (2 * eps);
        double err = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), 1e-3);
        if (!(err <= 2e-2)) {   // NaN fails too
            failures.append(p.name()).append(' ').append(what).append(": backprop ").append(analytic)
                    .append(", finite difference ").append(numeric).append('\n');
        }
        return 1;
    }

    private static double lossAt(Tensor p, float[] saved, float[] u, double eps, DifferentiableOps ops, DoubleSupplier loss) {
        for (int i = 0; i < saved.length; i++) p.setFloat(i, (float) (saved[i] + eps * u[i]));
        ops.tape().setEnabled(false);
        ops.workspace().reset();
        double value = loss.getAsDouble();
        ops.tape().setEnabled(true);
        return value;
    }
}
