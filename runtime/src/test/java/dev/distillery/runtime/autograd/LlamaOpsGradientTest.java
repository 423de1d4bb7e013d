package dev.distillery.runtime.autograd;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;

/**
 * Backpropagation through one Llama block built from the tape's ops (RMSNorm, rotary positions,
 * grouped-query heads packed for attention, SwiGLU, PyTorch-layout linears) and an LM head,
 * against central finite differences of the cross-entropy: for every parameter and the input, its
 * largest-gradient element and the sign(g) direction over it, as TransformerGradientTest does.
 */
class LlamaOpsGradientTest {

    private static final int B = 2, T = 5, C = 12, HEADS = 4, KV_HEADS = 2, HS = 4, INTER = 20, V = 23;

    private final List<Tensor> params = new ArrayList<>();

    private Tensor param(Arena arena, Rng rng, String name, double center, int... shape) {
        long n = 1;
        for (int d : shape) n *= d;
        MemorySegment m = arena.allocate(4 * n, 64);
        for (long i = 0; i < n; i++) m.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) (center + 0.3 * rng.nextGaussian()));
        Tensor t = new Tensor(name, shape, DType.F32, Device.CPU, m, true);
        params.add(t);
        return t;
    }

    private record Block(Tensor x, Tensor n1, Tensor wq, Tensor wk, Tensor wv, Tensor wo, Tensor n2, Tensor wg, Tensor wu, Tensor wd,
                         Tensor head, Tensor cosSin, Tensor targets) {
        Tensor logits(DifferentiableOps ops) {
            Tensor h = ops.rmsNorm(x, n1, 1e-5f);
            Tensor q = ops.rope(ops.matmulTransposed(h, wq), cosSin, B, T, HEADS);
            Tensor k = ops.rope(ops.matmulTransposed(h, wk), cosSin, B, T, KV_HEADS);
            Tensor qkv = ops.packQkv(q, k, ops.matmulTransposed(h, wv), HEADS, KV_HEADS);
            Tensor x2 = ops.add(x, ops.matmulTransposed(ops.attention(qkv, B, T, HEADS), wo));
            Tensor h2 = ops.rmsNorm(x2, n2, 1e-5f);
            Tensor m = ops.matmulTransposed(ops.swiGlu(ops.matmulTransposed(h2, wg), ops.matmulTransposed(h2, wu)), wd);
            return ops.matmulTransposed(ops.add(x2, m), head);
        }

        double loss(DifferentiableOps ops) {
            ops.tape().setEnabled(false);
            ops.workspace().reset();
            double loss = ops.crossEntropy(logits(ops), targets, 1f).mean();
            ops.tape().setEnabled(true);
            return loss;
        }
    }

    @Test
    void everyParameterGradientThroughALlamaBlockMatchesFiniteDifferences() {
        try (CpuKernels kernels = new CpuKernels(2, "blas"); Workspace ws = new Workspace(kernels, 1 << 16); Arena arena = Arena.ofShared()) {
            Rng rng = new Rng(7);
            int a = HEADS * HS, kv = KV_HEADS * HS;
            MemorySegment cs = arena.allocate(4L * T * HS, 64), tgt = arena.allocate(4L * B * T, 64);
            for (int i = 0; i < T * HS / 2; i++) {
                double angle = (i / (HS / 2)) * Math.pow(100, -2.0 * (i % (HS / 2)) / HS);
                cs.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * i, (float) Math.cos(angle));
                cs.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * i + 1, (float) Math.sin(angle));
            }
            for (int i = 0; i < B * T; i++) tgt.setAtIndex(ValueLayout.JAVA_INT, i, rng.nextInt(V));
            Block blk = new Block(param(arena, rng, "x", 0, B * T, C), param(arena, rng, "n1", 1, C), param(arena, rng, "wq", 0, a, C),
                    param(arena, rng, "wk", 0, kv, C), param(arena, rng, "wv", 0, kv, C), param(arena, rng, "wo", 0, C, a),
                    param(arena, rng, "n2", 1, C), param(arena, rng, "wg", 0, INTER, C), param(arena, rng, "wu", 0, INTER, C),
                    param(arena, rng, "wd", 0, C, INTER), param(arena, rng, "head", 0, V, C),
                    new Tensor("cosSin", new int[]{T, HS}, DType.F32, Device.CPU, cs, false),
                    new Tensor("targets", new int[]{B * T}, DType.I32, Device.CPU, tgt, false));
            Tape tape = new Tape();
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape);
            ws.reset();
            ops.crossEntropy(blk.logits(ops), blk.targets(), 1f);
            tape.backward();
            List<float[]> grads = new ArrayList<>();
            for (Tensor p : params) grads.add(p.grad().toFloatArray());   // before the workspace is reused

            StringBuilder failures = new StringBuilder();
            for (int pi = 0; pi < params.size(); pi++) {
                Tensor p = params.get(pi);
                float[] g = grads.get(pi);
                int best = 0;
                for (int i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[best])) best = i;
                float[] single = new float[g.length], signs = new float[g.length];
                single[best] = 1f;
                double expectSigns = 0;
                for (int i = 0; i < g.length; i++) {
                    signs[i] = (float) (Math.signum(g[i]) / Math.sqrt(g.length));
                    expectSigns += signs[i] * g[i];
                }
                check(p, single, g[best], blk, ops, "max element", failures);
                check(p, signs, expectSigns, blk, ops, "sign direction", failures);
            }
            assertTrue(failures.isEmpty(), failures.toString());
        }
    }

    private static void check(Tensor p, float[] u, double analytic, Block blk, DifferentiableOps ops, String what, StringBuilder failures) {
        float[] saved = p.toFloatArray();
        double eps = 1e-2;
        for (int i = 0; i < saved.length; i++) p.setFloat(i, (float) (saved[i] + eps * u[i]));
        double plus = blk.loss(ops);
        for (int i = 0; i < saved.length; i++) p.setFloat(i, (float) (saved[i] - eps * u[i]));
        double minus = blk.loss(ops);
        for (int i = 0; i < saved.length; i++) p.setFloat(i, saved[i]);
        double numeric = (plus - minus) / (2 * eps);
        double err = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), 1e-3);
        if (err > 2e-2) {
            failures.append(p.name()).append(' ').append(what).append(": backprop ").append(analytic)
                    .append(", finite difference ").append(numeric).append('\n');
        }
    }
}
