package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.reference.ReferenceKernels;

/**
 * The transformer ops of {@code cuda/src/main/cuda/transformer_ops.cu} under the CPU emulation
 * gate ({@code kernel_gate.cpp}, every kernel of the registry by name)
 * (a thread per CUDA thread, barriers with a watchdog, red zones), held to the Java kernels on the
 * same inputs at awkward sizes, with outputs poisoned (NaN) and accumulating gradients pre-filled
 * with random values; then the same cases under AddressSanitizer + UBSan, and the small ones under
 * ThreadSanitizer (a missing __syncthreads between reductions shows up there as a data race).
 */
class CudaOpsEmulationTest {

    private static Path work, gate, asan, tsan;
    private static CpuKernels cpu;
    private final SplittableRandom rng = new SplittableRandom();

    private static EmulationBuild gcc;

    @BeforeAll
    static void compile() throws Exception {
        gcc = new EmulationBuild("distillery-ops-gate");
        work = gcc.work();
        gate = gcc.build("kernel_gate.cpp", "kernel_gate", "-O1");
        asan = gcc.build("kernel_gate.cpp", "kernel_gate_asan", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined");
        tsan = gcc.build("kernel_gate.cpp", "kernel_gate_tsan", "-O1", "-fsanitize=thread");
        cpu = new CpuKernels(2, "auto");
    }

    @AfterAll
    static void cleanUp() throws IOException {
        if (cpu != null) cpu.close();
        if (gcc != null) gcc.close();
    }

    /** One launch of {@code kernel} for a gate binary. */
    private static GateCall call(CudaKernel kernel, int grid, int block) {
        return new GateCall(kernel, grid, block);
    }

    // ------------------------------------------------------------------ helpers

    private float[] random(int n, double scale) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) ((rng.nextDouble() * 2 - 1) * scale);
        return a;
    }

    private static float[] nan(int n) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, Float.NaN);
        return a;
    }

    private static MemorySegment seg(Arena a, float[] x) {
        MemorySegment s = a.allocate(4L * Math.max(1, x.length), 64);
        MemorySegment.copy(x, 0, s, ValueLayout.JAVA_FLOAT, 0, x.length);
        return s;
    }

    private static MemorySegment seg(Arena a, int[] x) {
        MemorySegment s = a.allocate(4L * Math.max(1, x.length), 64);
        MemorySegment.copy(x, 0, s, ValueLayout.JAVA_INT, 0, x.length);
        return s;
    }

    private static float[] arr(MemorySegment s, int n) {
        float[] x = new float[n];
        MemorySegment.copy(s, ValueLayout.JAVA_FLOAT, 0, x, 0, n);
        return x;
    }

    /**
     * Elementwise |CUDA − Java| / max(|Java|, 1% of the largest |Java|) ≤ tol: relative where values
     * are large, absolute against the output's scale where sums cancel. Device-math ulp differences
     * (std::tanh vs the Java polynomial) stay far below it; a wrong element is off by O(1).
     */
    private static void close(String what, float[] expected, float[] actual, double tol) {
        assertEquals(expected.length, actual.length, what);
        double scale = 0;
        for (float e : expected) scale = Math.max(scale, Math.abs(e));
        for (int i = 0; i < expected.length; i++) {
            double err = Math.abs(expected[i] - actual[i]) / Math.max(1e-6, Math.max(Math.abs(expected[i]), 1e-2 * scale));
            if (!(err <= tol)) throw new AssertionError(what + "[" + i + "]: CUDA " + actual[i] + " vs Java " + expected[i]);
        }
    }

    /**
     * |CUDA − Java| ≤ tol × magnitude for every element: for a result that is a difference of larger
     * terms (a cross-entropy is logsumexp − logit), whose rounding scales with the terms, not the result.
     */
    private static void closeAbsolute(String what, float[] expected, float[] actual, double tol, double magnitude) {
        assertEquals(expected.length, actual.length, what);
        for (int i = 0; i < expected.length; i++) {
            if (!(Math.abs(expected[i] - actual[i]) <= tol * magnitude)) throw new AssertionError(what + "[" + i + "]: CUDA " + actual[i] + " vs Java " + expected[i]);
        }
    }

    // the last two make 2 and 3 row chunks for the partial column sums (ColumnSums), the last with a short one
    private static final int[][] ROWS = {{1, 1}, {3, 7}, {13, 33}, {5, 97}, {40, 5}, {70, 33}};
    private static final int[] LENGTHS = {1, 7, 33, 1031};

    // ------------------------------------------------------------------ the ops

    @Test
    void elementwiseOpsMatchTheJavaKernels() throws Exception {
        for (Path bin : List.of(gate, asan, tsan)) {
            for (int n : LENGTHS) {
                if (bin == tsan && n > 33) continue; // ThreadSanitizer: small sizes only
                float[] x = random(n, 3), y = random(n, 1), d = random(n, 1), acc = random(n, 1);
                try (Arena a = Arena.ofShared()) {
                    MemorySegment out = seg(a, nan(n));
                    cpu.geluForward(out, DType.F32, seg(a, x), n);
                    float[] gelu = call(CudaKernel.OPS_GELU_FORWARD, 3, 64).floats(nan(n)).floats(x).i64(n).runOrFail(bin, work).floats(0);
                    close("gelu n=" + n, arr(out, n), gelu, 1e-4);
                    sameBitsRounded("gelu to bf16 n=" + n, gelu, call(CudaKernel.OPS_GELU_FORWARD_BF16, 3, 64).poisonedShorts(n).floats(x).i64(n)
                            .runOrFail(bin, work).shorts(0));
                    MemorySegment dx = seg(a, acc);
                    cpu.geluBackward(dx, seg(a, x), seg(a, d), n);
                    close("gelu backward n=" + n, arr(dx, n), call(CudaKernel.OPS_GELU_BACKWARD, 3, 64).floats(acc).floats(x).floats(d).i64(n)
                            .runOrFail(bin, work).floats(0), 1e-4);
                    // SwiGLU (expf against the Java exp polynomial: ulps apart; the accumulation is held to its summands' scale)
                    MemorySegment sw = seg(a, nan(n));
                    cpu.swiGluForward(sw, DType.F32, seg(a, x), seg(a, y), n);
                    float[] swiglu = call(CudaKernel.OPS_SWIGLU_FORWARD, 3, 64).floats(nan(n)).floats(x).floats(y).i64(n).runOrFail(bin, work).floats(0);
                    close("swiglu n=" + n, arr(sw, n), swiglu, 1e-4);
                    sameBitsRounded("swiglu to bf16 n=" + n, swiglu, call(CudaKernel.OPS_SWIGLU_FORWARD_BF16, 3, 64).poisonedShorts(n).floats(x)
                            .floats(y).i64(n).runOrFail(bin, work).shorts(0));
                    float[] dg0 = random(n, 1), du0 = random(n, 1);
                    MemorySegment dg = seg(a, dg0), du = seg(a, du0);
                    cpu.swiGluBackward(dg, du, seg(a, d), seg(a, x), seg(a, y), n);
                    GateCall.Outcome sb = call(CudaKernel.OPS_SWIGLU_BACKWARD, 3, 64).floats(dg0).floats(du0).floats(d).floats(x).floats(y).i64(n)
                            .runOrFail(bin, work);
                    closeAbsolute("swiglu dgate n=" + n, arr(dg, n), sb.floats(0), 1e-5, 4);
                    closeAbsolute("swiglu dup n=" + n, arr(du, n), sb.floats(1), 1e-5, 4);
                    MemorySegment r = seg(a, nan(n));
                    cpu.residualForward(r, seg(a, x), seg(a, y), n);
                    close("residual n=" + n, arr(r, n), call(CudaKernel.OPS_RESIDUAL_FORWARD, 3, 64).floats(nan(n)).floats(x).floats(y).i64(n)
                            .runOrFail(bin, work).floats(0), 0);
                    MemorySegment s = seg(a, acc);
                    cpu.accumulate(s, seg(a, x), n);
                    close("accumulate n=" + n, arr(s, n), call(CudaKernel.OPS_ACCUMULATE, 3, 64).floats(acc).floats(x).i64(n).runOrFail(bin, work).floats(0), 0);
                    MemorySegment sc = seg(a, x);
                    cpu.scale(sc, 0.37f, n);
                    close("scale n=" + n, arr(sc, n), call(CudaKernel.OPS_SCALE, 3, 64).floats(x).f32(0.37f).i64(n).runOrFail(bin, work).floats(0), 0);
                    float[] filled = call(CudaKernel.OPS_FILL, 3, 64).floats(nan(n)).f32(-2.5f).i64(n).runOrFail(bin, work).floats(0);
                    for (float v : filled) assertEquals(-2.5f, v);
                    // bf16 operands: ties to even, a subnormal to zero, NaN kept, bit for bit the reference's
                    float[] toRound = x.clone();
                    toRound[0] = Float.NaN;
                    if (n > 3) {
                        toRound[1] = 1e-40f;
                        toRound[2] = 1f + 1f / 256;
                        toRound[3] = -(1f + 3f / 256);
                    }
                    short[] rounded = call(CudaKernel.OPS_ROUND_TO_BF16, 3, 64).poisonedShorts(n).floats(toRound).i64(n).runOrFail(bin, work).shorts(0);
                    for (int i = 0; i < n; i++) {
                        double want = ReferenceKernels.roundToBf16(toRound[i]);
                        float got = Float.intBitsToFloat((rounded[i] & 0xffff) << 16);
                        if (Double.isNaN(want)) assertTrue(Float.isNaN(got), "round_to_bf16 NaN at " + i);
                        else assertEquals(Double.doubleToRawLongBits(want), Double.doubleToRawLongBits(got), "round_to_bf16 of " + toRound[i] + " at " + i);
                    }
                    // Sum of squares: per-block partials, added on the host.
                    float[] partials = call(CudaKernel.OPS_SUM_OF_SQUARES, 3, 64).floats(nan(3)).floats(x).i64(n).runOrFail(bin, work).floats(0);
                    double total = 0;
                    for (float p : partials) total += p;
                    double expected = cpu.sumOfSquares(seg(a, x), n);
                    assertEquals(expected, total, 1e-5 * expected, "sum of squares n=" + n);
                    // AdamW at step 3.
                    float[] p = random(n, 1), g = random(n, 1), m = random(n, 0.1), v = random(n, 0.01);
                    for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
                    MemorySegment ps = seg(a, p), ms = seg(a, m), vs = seg(a, v);
                    cpu.adamW(ps, seg(a, g), ms, vs, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
                    GateCall.Outcome o = call(CudaKernel.OPS_ADAMW, 3, 64).floats(p).floats(g).floats(m).floats(v).i64(n)
                            .f32(1e-2f).f32(0.9f).f32(0.95f).f32(1e-8f).f32(0.1f).i32(3).runOrFail(bin, work);
                    close("adamW params n=" + n, arr(ps, n), o.floats(0), 1e-4);
                    close("adamW m n=" + n, arr(ms, n), o.floats(2), 1e-5);
                    close("adamW v n=" + n, arr(vs, n), o.floats(3), 1e-5);
                }
            }
        }
    }

    /** Decoding over a KV cache: one query row per sequence, plain and grouped heads, more positions than threads. */
    @Test
    void attentionOverAKeyValueCacheMatchesTheJavaKernel() throws Exception {
        for (Path bin : List.of(gate, asan, tsan)) {
            for (int[] shape : new int[][]{{1, 1, 1, 1, 1, 2}, {2, 5, 7, 4, 2, 6}, {1, 70, 73, 2, 1, 10}}) {
                int b = shape[0], len = shape[1], maxLen = shape[2], nh = shape[3], kvh = shape[4], hs = shape[5];
                String at = " at b " + b + ", " + len + " of " + maxLen + ", " + nh + "/" + kvh + " heads of " + hs;
                float[] q = random(b * nh * hs, 1), k = random(b * maxLen * kvh * hs, 1), v = random(b * maxLen * kvh * hs, 1);
                try (Arena a = Arena.ofShared()) {
                    MemorySegment out = seg(a, nan(b * nh * hs));
                    cpu.attentionDecode(out, seg(a, nan(b * nh * maxLen)), seg(a, q), seg(a, k), seg(a, v), b, len, maxLen, nh, kvh, hs);
                    GateCall.Outcome o = call(CudaKernel.OPS_ATTENTION_DECODE, b * nh, 64).floats(nan(b * nh * hs)).floats(nan(b * nh * maxLen))
                            .floats(q).floats(k).floats(v).i32(len).i32(maxLen).i32(nh).i32(kvh).i32(hs).runOrFail(bin, work);
                    closeAbsolute("attention decode" + at, arr(out, b * nh * hs), o.floats(0), 1e-5, 2);
                }
            }
        }
    }

    /** Hidden-state distances: both kinds, fp32, fp16 and bf16 teachers, with and without a gradient, rows wider than the block. */
    @Test
    void featureDistancesMatchTheJavaKernel() throws Exception {
        for (Path bin : List.of(gate, asan, tsan)) {
            for (int[] shape : new int[][]{{1, 1}, {3, 7}, {2, 150}}) {
                int n = shape[0], d = shape[1];
                for (DType type : DType.logitTypes()) {
                    CudaKernel kernel = CudaKernel.valueOf("FEATURE_DISTANCE_" + type.name());
                    for (FeatureDistance distance : FeatureDistance.values()) {
                        for (boolean withGrad : new boolean[]{true, false}) {
                            String at = " " + distance + " " + type + (withGrad ? "" : " no grad") + " at " + n + "x" + d;
                            float[] st = random(n * d, 1), g0 = random(n * d, 1);
                            try (Arena a = Arena.ofShared()) {
                                MemorySegment t = a.allocate((long) type.bytes() * n * d, 64);
                                for (int i = 0; i < n * d; i++) type.write(t, i, (float) (rng.nextDouble() * 2 - 1));
                                MemorySegment loss = seg(a, nan(n)), g = seg(a, g0);
                                cpu.featureDistance(distance, loss, withGrad ? g : null, seg(a, st), t, type, n, d, 0.5f);
                                GateCall c = call(kernel, n, 64).floats(nan(n));
                                c = withGrad ? c.floats(g0) : c.nullPointer();
                                GateCall.Outcome o = c.floats(st).bytes(t).i32(n).i32(d).i32(distance.ordinal()).f32(0.5f).runOrFail(bin, work);
                                close("feature loss" + at, arr(loss, n), o.floats(0), 1e-5);
                                if (withGrad) close("feature gradient" + at, arr(g, n * d), o.floats(1), 1e-5);
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void rotaryPositionsAndRepeatedHeadsMatchTheJavaKernels() throws Exception {
        for (Path bin : List.of(gate, asan, tsan)) {
            for (int[] shape : new int[][]{{1, 1, 1, 2}, {2, 3, 2, 6}, {1, 7, 3, 10}}) {
                int b = shape[0], t = shape[1], heads = shape[2], hs = shape[3], stride = heads * hs + 3, rows = b * t, n = rows * stride;
                String at = " at " + b + "x" + t + "x" + heads + "x" + hs;
                float[] x = random(n, 1), cs = new float[t * hs], dout = random(n, 1), d0 = random(n, 1);
                for (int i = 0; i < t * hs / 2; i++) {
                    double angle = rng.nextDouble() * 2 * Math.PI;
                    cs[2 * i] = (float) Math.cos(angle);
                    cs[2 * i + 1] = (float) Math.sin(angle);
                }
                try (Arena a = Arena.ofShared()) {
                    MemorySegment out = seg(a, x);   // in place, as the runtime rotates q and k inside qkv
                    cpu.ropeForward(out, out, seg(a, cs), b, t, heads, hs, stride, 1);
                    GateCall.Outcome o = call(CudaKernel.OPS_ROPE_ROTATE, 2, 64).floats(x).floats(x).floats(cs).i32(rows).i32(t).i32(heads)
                            .i32(hs).i32(stride).i32(1).f32(1f).i32(0).runOrFail(bin, work);
                    close("rope" + at, arr(out, n), o.floats(0), 1e-5);
                    MemorySegment g = seg(a, d0);
                    cpu.ropeBackward(g, seg(a, dout), seg(a, cs), b, t, heads, hs, stride, 1);
                    o = call(CudaKernel.OPS_ROPE_ROTATE, 2, 64).floats(d0).floats(dout).floats(cs).i32(rows).i32(t).i32(heads)
                            .i32(hs).i32(stride).i32(1).f32(-1f).i32(1).runOrFail(bin, work);
                    closeAbsolute("rope backward" + at, arr(g, n), o.floats(0), 1e-6, 4);
                    int group = 3, wide = heads * group * hs;
                    MemorySegment rep = seg(a, nan(rows * wide));
                    cpu.repeatHeadsForward(rep, wide, 0, seg(a, x), stride, 1, rows, heads, group, hs);
                    o = call(CudaKernel.OPS_REPEAT_HEADS_FORWARD, 2, 64).floats(nan(rows * wide)).i32(wide).i32(0).floats(x).i32(stride).i32(1)
                            .i32(rows).i32(heads).i32(group).i32(hs).runOrFail(bin, work);
                    assertArrayEquals(arr(rep, rows * wide), o.floats(0), "repeat heads" + at);
                    float[] drep = random(rows * wide, 1);
                    MemorySegment gin = seg(a, d0);
                    cpu.repeatHeadsBackward(gin, stride, 1, seg(a, drep), wide, 0, rows, heads, group, hs);
                    o = call(CudaKernel.OPS_REPEAT_HEADS_BACKWARD, 2, 64).floats(d0).i32(stride).i32(1).floats(drep).i32(wide).i32(0)
                            .i32(rows).i32(heads).i32(group).i32(hs).runOrFail(bin, work);
                    closeAbsolute("repeat heads backward" + at, arr(gin, n), o.floats(0), 1e-6, 5);
                }
            }
        }
    }

    @Test
    void rowOpsMatchTheJavaKernels() throws Exception {
        for (Path bin : List.of(gate, asan, tsan)) {
            for (int[] shape : ROWS) {
                int rows = shape[0], c = shape[1], n = rows * c;
                if (bin == tsan && n > 300) continue; // ThreadSanitizer: small sizes only
                String at = " at " + rows + "x" + c;
                float[] x = random(n, 2), w = random(c, 1), bias = random(c, 1), dout = random(n, 1);
                try (Arena a = Arena.ofShared()) {
                    // layernorm forward
                    MemorySegment out = seg(a, nan(n)), mean = seg(a, nan(rows)), rstd = seg(a, nan(rows));
                    cpu.layerNormForward(out, DType.F32, mean, rstd, seg(a, x), seg(a, w), seg(a, bias), rows, c);
                    GateCall.Outcome o = call(CudaKernel.OPS_LAYERNORM_FORWARD, rows, 64).floats(nan(n)).floats(nan(rows)).floats(nan(rows))
                            .floats(x).floats(w).floats(bias).i32(rows).i32(c).runOrFail(bin, work);
                    close("layernorm" + at, arr(out, n), o.floats(0), 2e-4);
                    close("layernorm rstd" + at, arr(rstd, rows), o.floats(2), 1e-4);
                    // its bf16 twin: the same row, rounded as the GEMMs round (the CPU's rule), and the same statistics
                    GateCall.Outcome o16 = call(CudaKernel.OPS_LAYERNORM_FORWARD_BF16, rows, 64).poisonedShorts(n).floats(nan(rows))
                            .floats(nan(rows)).floats(x).floats(w).floats(bias).i32(rows).i32(c).runOrFail(bin, work);
                    sameBitsRounded("layernorm to bf16" + at, o.floats(0), o16.shorts(0));
                    assertArrayEquals(o.floats(2), o16.floats(2), "layernorm rstd beside a bf16 output" + at);
                    // layernorm backward (accumulating into random prefills)
                    float[] dx0 = random(n, 1), dw0 = random(c, 1), db0 = random(c, 1);
                    MemorySegment dx = seg(a, dx0), dw = seg(a, dw0), db = seg(a, db0);
                    cpu.layerNormBackward(dx, dw, db, seg(a, dout), seg(a, x), seg(a, w), mean, rstd, rows, c);
                    o = call(CudaKernel.OPS_LAYERNORM_BACKWARD_INPUT, rows, 64).floats(dx0).floats(dout).floats(x).floats(w)
                            .floats(arr(mean, rows)).floats(arr(rstd, rows)).i32(rows).i32(c).runOrFail(bin, work);
                    close("layernorm dinp" + at, arr(dx, n), o.floats(0), 2e-4);
                    // the parameter sums in the kernels' two launches (one when the rows make one chunk)
                    int k = ColumnSums.chunks(rows), grid = k * ((c + 31) / 32), chunkRows = ColumnSums.chunkRows(rows);
                    float[] gw, gb;
                    if (k == 1) {
                        o = call(CudaKernel.OPS_LAYERNORM_PARAMS_PARTIAL, grid, 64).floats(dw0).floats(db0).floats(dout).floats(x)
                                .floats(arr(mean, rows)).floats(arr(rstd, rows)).i32(rows).i32(c).i32(chunkRows).i32(1).runOrFail(bin, work);
                        gw = o.floats(0);
                        gb = o.floats(1);
                    } else {
                        o = call(CudaKernel.OPS_LAYERNORM_PARAMS_PARTIAL, grid, 64).floats(nan(k * c)).floats(nan(k * c)).floats(dout).floats(x)
                                .floats(arr(mean, rows)).floats(arr(rstd, rows)).i32(rows).i32(c).i32(chunkRows).i32(0).runOrFail(bin, work);
                        o = call(CudaKernel.OPS_SUM_PARTIALS, 2, 64).floats(dw0).floats(o.floats(0)).floats(db0).floats(o.floats(1))
                                .i32(k).i32(c).runOrFail(bin, work);
                        gw = o.floats(0);
                        gb = o.floats(2);
                    }
                    close("layernorm dweight" + at, arr(dw, c), gw, 2e-4);
                    close("layernorm dbias" + at, arr(db, c), gb, 2e-4);
                    // RMSNorm forward and backward (the Llama family)
                    MemorySegment rOut = seg(a, nan(n)), rRstd = seg(a, nan(rows));
                    cpu.rmsNormForward(rOut, DType.F32, rRstd, seg(a, x), seg(a, w), rows, c, 1e-5f);
                    o = call(CudaKernel.OPS_RMSNORM_FORWARD, rows, 64).floats(nan(n)).floats(nan(rows)).floats(x).floats(w)
                            .i32(rows).i32(c).f32(1e-5f).runOrFail(bin, work);
                    close("rmsnorm" + at, arr(rOut, n), o.floats(0), 2e-4);
                    close("rmsnorm rstd" + at, arr(rRstd, rows), o.floats(1), 1e-4);
                    o16 = call(CudaKernel.OPS_RMSNORM_FORWARD_BF16, rows, 64).poisonedShorts(n).floats(nan(rows)).floats(x).floats(w)
                            .i32(rows).i32(c).f32(1e-5f).runOrFail(bin, work);
                    sameBitsRounded("rmsnorm to bf16" + at, o.floats(0), o16.shorts(0));
                    float[] rdx0 = random(n, 1), rdw0 = random(c, 1);
                    MemorySegment rdx = seg(a, rdx0), rdw = seg(a, rdw0);
                    cpu.rmsNormBackward(rdx, rdw, seg(a, dout), seg(a, x), seg(a, w), rRstd, rows, c);
                    o = call(CudaKernel.OPS_RMSNORM_BACKWARD_INPUT, rows, 64).floats(rdx0).floats(dout).floats(x).floats(w)
                            .floats(arr(rRstd, rows)).i32(rows).i32(c).runOrFail(bin, work);
                    close("rmsnorm dinp" + at, arr(rdx, n), o.floats(0), 2e-4);
                    float[] grw;
                    if (k == 1) {
                        grw = call(CudaKernel.OPS_RMSNORM_WEIGHT_PARTIAL, grid, 64).floats(rdw0).floats(dout).floats(x)
                                .floats(arr(rRstd, rows)).i32(rows).i32(c).i32(chunkRows).i32(1).runOrFail(bin, work).floats(0);
                    } else {
                        float[] partial = call(CudaKernel.OPS_RMSNORM_WEIGHT_PARTIAL, grid, 64).floats(nan(k * c)).floats(dout).floats(x)
                                .floats(arr(rRstd, rows)).i32(rows).i32(c).i32(chunkRows).i32(0).runOrFail(bin, work).floats(0);
                        grw = call(CudaKernel.OPS_SUM_PARTIALS, 2, 64).floats(rdw0).floats(partial).nullPointer().nullPointer()
                                .i32(k).i32(c).runOrFail(bin, work).floats(0);
                    }
                    close("rmsnorm dweight" + at, arr(rdw, c), grw, 2e-4);
                    // bias rows
                    MemorySegment br = seg(a, nan(n));
                    cpu.broadcastRows(br, seg(a, bias), rows, c);
                    close("broadcastRows" + at, arr(br, n), call(CudaKernel.OPS_BROADCAST_ROWS, 2, 64).floats(nan(n))
                            .floats(bias).i32(rows).i32(c).runOrFail(bin, work).floats(0), 0);
                    MemorySegment sr = seg(a, db0);
                    cpu.sumRows(sr, seg(a, dout), rows, c);
                    float[] gs;
                    if (k == 1) {
                        gs = call(CudaKernel.OPS_SUM_ROWS_PARTIAL, grid, 64).floats(db0).floats(dout).i32(rows).i32(c).i32(chunkRows).i32(1)
                                .runOrFail(bin, work).floats(0);
                    } else {
                        float[] partial = call(CudaKernel.OPS_SUM_ROWS_PARTIAL, grid, 64).floats(nan(k * c)).floats(dout).i32(rows).i32(c)
                                .i32(chunkRows).i32(0).runOrFail(bin, work).floats(0);
                        gs = call(CudaKernel.OPS_SUM_PARTIALS, 2, 64).floats(db0).floats(partial).nullPointer().nullPointer().i32(k).i32(c)
                                .runOrFail(bin, work).floats(0);
                    }
                    // chunked sums add in another order than the Java rows: rounding scales with the rows' magnitudes, not the sum
                    closeAbsolute("sumRows" + at, arr(sr, c), gs, 1e-6, rows + 1);
                    // fused softmax cross-entropy, gradient in place; one ignored row when there are several
                    float[] logits = random(n, 5);
                    int[] targets = new int[rows];
                    for (int r = 0; r < rows; r++) targets[r] = rng.nextInt(c);
                    if (rows > 2) targets[1] = -100;
                    MemorySegment ls = seg(a, logits), losses = seg(a, nan(rows));
                    cpu.softmaxCrossEntropy(losses, ls, seg(a, targets), rows, c, -100, true, 0.25f);
                    o = call(CudaKernel.OPS_SOFTMAX_CROSS_ENTROPY, rows, 64).floats(nan(rows)).floats(logits).ints(targets)
                            .i32(rows).i32(c).i32(-100).i32(1).f32(0.25f).runOrFail(bin, work);
                    // |logit| ≤ 5, so logsumexp − logit is a difference of terms up to 5 + ln c
                    closeAbsolute("softmaxCE losses" + at, arr(losses, rows), o.floats(0), 1e-5, 5 + Math.log(c));
                    close("softmaxCE dlogits" + at, arr(ls, n), o.floats(1), 1e-4);
                    // logsumexp and argmax of rows, the logits left as they were
                    float scale = 1 / 1.5f;
                    MemorySegment lse = seg(a, nan(rows)), ids = seg(a, new int[rows]);
                    cpu.logsumexpRows(lse, seg(a, logits), rows, c, scale);
                    cpu.argmaxRows(ids, seg(a, logits), rows, c);
                    o = call(CudaKernel.OPS_LOGSUMEXP_ROWS, rows, 64).floats(nan(rows)).floats(logits).i32(rows).i32(c).f32(scale)
                            .runOrFail(bin, work);
                    close("logsumexpRows" + at, arr(lse, rows), o.floats(0), 1e-5);
                    assertArrayEquals(logits, o.floats(1), "logsumexpRows left the logits" + at);
                    o = call(CudaKernel.OPS_ARGMAX_ROWS, rows, 64).ints(new int[rows]).floats(logits).i32(rows).i32(c).runOrFail(bin, work);
                    assertArrayEquals(ids.toArray(ValueLayout.JAVA_INT), o.ints(0), "argmaxRows" + at);
                    // a token drawn from each row, as the CPU draws it with the same uniform numbers, over every entry and over
                    // the top 2: these rows, then as many rows of small integers (ties at the k-th largest, kept lowest ids first)
                    float[] both = java.util.Arrays.copyOf(logits, 2 * n);
                    for (int i = n; i < 2 * n; i++) both[i] = rng.nextInt(4);
                    double[] uniforms = new double[2 * rows];
                    for (int r = 0; r < 2 * rows; r++) uniforms[r] = rng.nextDouble();
                    MemorySegment us = a.allocate(16L * rows, 8), drawn = seg(a, new int[2 * rows]);
                    MemorySegment.copy(uniforms, 0, us, ValueLayout.JAVA_DOUBLE, 0, 2 * rows);
                    // (not the 13-row shape: its barriers under three builds cost a minute; the conformance suite under
                    // emulation draws from 5 rows of 1,009 at six temperatures and top-k)
                    for (double[] tk : rows > 5 ? new double[0][] : new double[][]{{0.6, 0}, {1.4, 2}}) {
                        double temperature = tk[0];
                        int topK = (int) tk[1];
                        MemorySegment sampling = a.allocate(16, 8);
                        sampling.set(ValueLayout.JAVA_DOUBLE, 0, temperature);
                        sampling.set(ValueLayout.JAVA_INT, 8, topK);
                        cpu.sampleRows(drawn, seg(a, both), us, 2 * rows, c, temperature, topK);
                        o = call(CudaKernel.OPS_SAMPLE_ROWS, 2 * rows, 64).ints(new int[2 * rows]).floats(both).bytes(us).i32(2 * rows).i32(c)
                                .struct(sampling).runOrFail(bin, work);
                        assertArrayEquals(drawn.toArray(ValueLayout.JAVA_INT), o.ints(0), "sampleRows T " + temperature + " top-k " + topK + at);
                        assertArrayEquals(both, o.floats(1), "sampleRows left the logits" + at);
                    }
                }
            }
        }
    }

    @Test
    void embeddingMatchesTheJavaKernel() throws Exception {
        for (int[] s : new int[][]{{1, 1, 1}, {2, 5, 7}, {3, 4, 33}, {4, 40, 37}}) {
            int b = s[0], t = s[1], c = s[2], vocab = 11;
            int[] tokens = new int[b * t];
            for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(vocab);
            tokens[0] = tokens[tokens.length - 1];  // a repeated id: two rows add into one dwte row
            float[] wte = random(vocab * c, 1), wpe = random(t * c, 1), dout = random(b * t * c, 1);
            float[] dwte0 = random(vocab * c, 1), dwpe0 = random(t * c, 1);
            try (Arena a = Arena.ofShared()) {
                MemorySegment out = seg(a, nan(b * t * c));
                cpu.embeddingForward(out, seg(a, tokens), null, seg(a, wte), seg(a, wpe), b, t, c, vocab);
                close("embedding", arr(out, b * t * c), call(CudaKernel.OPS_EMBEDDING_FORWARD, 2, 64).floats(nan(b * t * c))
                        .ints(tokens).floats(wte).floats(wpe).i32(b).i32(t).i32(c).runOrFail(gate, work).floats(0), 0);
                MemorySegment dwte = seg(a, dwte0), dwpe = seg(a, dwpe0);
                cpu.embeddingBackward(dwte, dwpe, seg(a, dout), seg(a, tokens), null, b, t, c);
                int[] grouping = EmbeddingGrads.grouping(tokens, b, t);
                float[] gpe = call(CudaKernel.OPS_EMBEDDING_BACKWARD_POSITIONS, 2, 64).floats(dwpe0).floats(dout).i32(b).i32(t).i32(c)
                        .runOrFail(asan, work).floats(0);
                float[] gte = call(CudaKernel.OPS_EMBEDDING_BACKWARD_TOKENS, 2, 64).floats(dwte0).floats(dout).ints(grouping)
                        .i32(EmbeddingGrads.groups(grouping, b * t)).i32(c).runOrFail(asan, work).floats(0);
                // the device adds a token's positions in the order (t, b), the Java kernel in (b, t)
                closeAbsolute("embedding dwte", arr(dwte, vocab * c), gte, 1e-6, b * t + 1);
                closeAbsolute("embedding dwpe", arr(dwpe, t * c), gpe, 1e-6, b + 1);
            }
        }
    }

    /**
     * The causal softmax pieces of attention against float64 loops (their GEMMs are cuBLAS's), over
     * whole squares and over bands of query rows that start past the first row.
     */
    @Test
    void attentionSoftmaxMatchesFloat64() throws Exception {
        // heads, band rows, first row, row width
        for (int[] s : new int[][]{{1, 1, 0, 1}, {3, 5, 0, 5}, {2, 37, 0, 37}, {3, 4, 6, 10}, {2, 7, 32, 39}}) {
            int band = s[1], row0 = s[2], t = s[3], rows = s[0] * band;
            float scale = 0.3f;
            float[] pre = random(rows * t, 4), datt = random(rows * t, 1);
            float[] att = call(CudaKernel.OPS_ATTENTION_SOFTMAX_FORWARD, rows, 64).floats(nan(rows * t)).floats(pre).i32(rows).i32(band)
                    .i32(row0).i32(t).f32(scale).runOrFail(asan, work).floats(0);
            float[] d = call(CudaKernel.OPS_ATTENTION_SOFTMAX_BACKWARD, rows, 64).floats(nan(rows * t)).floats(datt).floats(att)
                    .i32(rows).i32(band).i32(row0).i32(t).f32(scale).runOrFail(gate, work).floats(0);
            float[] expAtt = new float[rows * t], expD = new float[rows * t];
            for (int r = 0; r < rows; r++) {
                int q = row0 + r % band;
                double max = Double.NEGATIVE_INFINITY, sum = 0, dot = 0;
                for (int j = 0; j <= q; j++) max = Math.max(max, scale * (double) pre[r * t + j]);
                for (int j = 0; j <= q; j++) sum += Math.exp(scale * (double) pre[r * t + j] - max);
                for (int j = 0; j <= q; j++) expAtt[r * t + j] = (float) (Math.exp(scale * (double) pre[r * t + j] - max) / sum);
                for (int j = 0; j <= q; j++) dot += (double) att[r * t + j] * datt[r * t + j];
                for (int j = 0; j <= q; j++) expD[r * t + j] = (float) (scale * att[r * t + j] * (datt[r * t + j] - dot));
            }
            String shape = s[0] + "x" + band + " from row " + row0 + " of " + t;
            close("attention softmax " + shape, expAtt, att, 1e-5);
            close("attention softmax backward " + shape, expD, d, 1e-4);
        }
    }

    /**
     * Attention's heads apart and back: every element of (b·t, parts·nh·hs) rows lands at its
     * (part, batch, head, time, dim) place, in fp32 and rounded to bf16 (bit for bit the
     * reference's rounding), and comes back written over NaN or added to what is there.
     */
    @Test
    void headsSplitAndMergeMoveEveryElement() throws Exception {
        int[][] shapes = {{1, 1, 1, 1, 1}, {2, 3, 2, 5, 3}, {3, 7, 3, 4, 1}, {2, 33, 5, 8, 3}};
        for (Path bin : List.of(gate, asan, tsan)) {
            for (int[] sh : shapes) {
                int b = sh[0], t = sh[1], nh = sh[2], hs = sh[3], parts = sh[4], n = b * t * nh * hs * parts;
                if (bin == tsan && n > 100) continue; // ThreadSanitizer: small sizes only
                String what = b + "x" + t + "x" + nh + "x" + hs + "x" + parts;
                float[] rows = random(n, 3), apart = CudaConformance.headsApart(rows, b, t, nh, hs, parts);
                float[] split = call(CudaKernel.OPS_HEADS_SPLIT, 3, 64).floats(nan(n)).floats(rows).i32(b).i32(t).i32(nh).i32(hs).i32(parts)
                        .runOrFail(bin, work).floats(0);
                assertArrayEquals(apart, split, "heads split " + what);
                short[] split16 = call(CudaKernel.OPS_HEADS_SPLIT_BF16, 3, 64).poisonedShorts(n).floats(rows).i32(b).i32(t).i32(nh).i32(hs)
                        .i32(parts).runOrFail(bin, work).shorts(0);
                for (int i = 0; i < n; i++) {
                    float got = Float.intBitsToFloat((split16[i] & 0xffff) << 16);
                    assertEquals((float) ReferenceKernels.roundToBf16(apart[i]), got, "heads split to bf16 " + what + " at " + i);
                }
                float[] merged = call(CudaKernel.OPS_HEADS_MERGE, 3, 64).floats(nan(n)).floats(apart).i32(b).i32(t).i32(nh).i32(hs).i32(parts)
                        .i32(0).runOrFail(bin, work).floats(0);
                assertArrayEquals(rows, merged, "heads merged " + what);
                sameBitsRounded("heads merged to bf16 " + what, rows, call(CudaKernel.OPS_HEADS_MERGE_BF16, 3, 64).poisonedShorts(n).floats(apart)
                        .i32(b).i32(t).i32(nh).i32(hs).i32(parts).runOrFail(bin, work).shorts(0));
                float[] before = random(n, 1), sums = new float[n];
                for (int i = 0; i < n; i++) sums[i] = before[i] + rows[i];
                float[] added = call(CudaKernel.OPS_HEADS_MERGE, 3, 64).floats(before).floats(apart).i32(b).i32(t).i32(nh).i32(hs).i32(parts)
                        .i32(1).runOrFail(bin, work).floats(0);
                assertArrayEquals(sums, added, "heads merged and added " + what);
            }
        }
    }

    /**
     * AdamW over a whole block in one launch: spans with different weight decays, cut into chunks
     * (one span into several, a gap of elements between spans that belongs to none), must give
     * the bits of one ops_adamw launch per span and leave the gap alone.
     */
    @Test
    void adamWOverChunksOfSpansMatchesOneLaunchPerSpan() throws Exception {
        int n = 203;
        long[][] spans = {{0, 57}, {60, 100}, {160, 43}};
        float[] decays = {0.1f, 0f, 0.1f};
        for (Path bin : List.of(gate, asan, tsan)) {
            float[] p = random(n, 1), g = random(n, 1), m = random(n, 0.1), v = random(n, 0.01);
            for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
            float[] wantP = p.clone(), wantM = m.clone(), wantV = v.clone(), scaled = g.clone();
            for (int i = 0; i < n; i++) scaled[i] *= 0.37f;   // ops_scale's product
            for (int s = 0; s < spans.length; s++) {
                int at = (int) spans[s][0], len = (int) spans[s][1];
                GateCall.Outcome one = call(CudaKernel.OPS_ADAMW, 3, 64).floats(slice(p, at, len)).floats(slice(scaled, at, len))
                        .floats(slice(m, at, len)).floats(slice(v, at, len)).i64(len).f32(3e-3f).f32(0.9f).f32(0.999f).f32(1e-8f)
                        .f32(decays[s]).i32(5).runOrFail(bin, work);
                System.arraycopy(one.floats(0), 0, wantP, at, len);
                System.arraycopy(one.floats(2), 0, wantM, at, len);
                System.arraycopy(one.floats(3), 0, wantV, at, len);
            }
            long[] offsets = new long[spans.length], lengths = new long[spans.length];
            for (int i = 0; i < spans.length; i++) {
                offsets[i] = spans[i][0];
                lengths[i] = spans[i][1];
            }
            CudaKernels.AdamWChunks cut = CudaKernels.AdamWChunks.of(new ParameterSpans(offsets, lengths, decays), 16);
            GateCall.Outcome all = call(CudaKernel.OPS_ADAMW_CHUNKS, 3, 64).floats(p).floats(g).floats(m).floats(v).bytes(longs(cut.starts()))
                    .bytes(longs(cut.lengths())).floats(cut.decays()).i32(cut.count()).f32(0.37f).f32(3e-3f).f32(0.9f).f32(0.999f).f32(1e-8f).i32(5)
                    .runOrFail(bin, work);
            assertArrayEquals(wantP, all.floats(0), "params");
            assertArrayEquals(wantM, all.floats(2), "first moments");
            assertArrayEquals(wantV, all.floats(3), "second moments");
            assertArrayEquals(g, all.floats(1), "the gradients left as they were");
        }
    }

    private static float[] slice(float[] x, int at, int len) {
        return java.util.Arrays.copyOfRange(x, at, at + len);
    }

    private static MemorySegment longs(long[] x) {
        return MemorySegment.ofArray(x);
    }

    /** A bf16 output holds the fp32 twin's values rounded by the GEMMs' rule ({@code VectorOps.bf16Bits}), bit for bit. */
    private static void sameBitsRounded(String what, float[] fp32, short[] bf16) {
        for (int i = 0; i < fp32.length; i++) {
            assertEquals(dev.distillery.kernels.cpu.VectorOps.bf16Bits(fp32[i]), bf16[i], what + " at " + i + " (" + fp32[i] + ")");
        }
    }
}
