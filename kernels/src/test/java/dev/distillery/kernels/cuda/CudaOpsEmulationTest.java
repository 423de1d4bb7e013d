package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.cpu.CpuKernels;

/**
 * The transformer ops of {@code cuda/src/main/cuda/transformer_ops.cu} under the CPU emulation
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
        gate = gcc.build("ops_gate.cpp", "ops_gate", "-O1");
        asan = gcc.build("ops_gate.cpp", "ops_gate_asan", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined");
        tsan = gcc.build("ops_gate.cpp", "ops_gate_tsan", "-O1", "-fsanitize=thread");
        cpu = new CpuKernels(2, "auto");
    }

    @AfterAll
    static void cleanUp() throws IOException {
        if (cpu != null) cpu.close();
        if (gcc != null) gcc.close();
    }

    // ------------------------------------------------------------------ the wire format

    /** One buffer: f32 or i32 values. */
    private record Buf(boolean ints, float[] f, int[] i) {
        static Buf of(float[] f) {
            return new Buf(false, f.clone(), null);
        }

        static Buf of(int[] i) {
            return new Buf(true, null, i.clone());
        }

        int count() {
            return ints ? i.length : f.length;
        }
    }

    /** Runs op under the emulation; returns every buffer after the kernel, in order. */
    private static List<float[]> emulate(Path binary, int op, int[] ints, float[] floats, Buf... bufs) throws Exception {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        ByteBuffer b = ByteBuffer.allocate(1 << 16).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(op).putInt(ints.length);
        for (int x : ints) b.putInt(x);
        b.putInt(floats.length);
        for (float x : floats) b.putFloat(x);
        b.putInt(bufs.length);
        bytes.write(b.array(), 0, b.position());
        for (Buf buf : bufs) {
            ByteBuffer h = ByteBuffer.allocate(12 + 4 * buf.count()).order(ByteOrder.LITTLE_ENDIAN);
            h.putInt(buf.ints() ? 1 : 0).putLong(buf.count());
            for (int k = 0; k < buf.count(); k++) {
                if (buf.ints()) h.putInt(buf.i()[k]);
                else h.putFloat(buf.f()[k]);
            }
            bytes.write(h.array(), 0, h.position());
        }
        Path in = work.resolve("ops-in.bin"), out = work.resolve("ops-out.bin");
        Files.write(in, bytes.toByteArray());
        Process p = new ProcessBuilder(binary.toString(), in.toString(), out.toString()).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "the gate hung");
        assertEquals(0, p.exitValue(), "op " + op + " under emulation failed:\n" + log);
        ByteBuffer r = ByteBuffer.wrap(Files.readAllBytes(out)).order(ByteOrder.LITTLE_ENDIAN);
        List<float[]> result = new ArrayList<>();
        for (Buf buf : bufs) {
            float[] v = new float[buf.count()];
            for (int k = 0; k < v.length; k++) v[k] = buf.ints() ? r.getInt() : r.getFloat();
            result.add(v);
        }
        return result;
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

    private static final int[][] ROWS = {{1, 1}, {3, 7}, {13, 33}, {5, 97}};
    private static final int[] LENGTHS = {1, 7, 33, 1031};

    // ------------------------------------------------------------------ the ops

    @Test
    void elementwiseOpsMatchTheJavaKernels() throws Exception {
        for (Path bin : List.of(gate, asan, tsan)) {
            for (int n : LENGTHS) {
                if (bin == tsan && n > 33) continue; // ThreadSanitizer: small sizes only
                int[] launch = {3, 64, n};
                float[] x = random(n, 3), y = random(n, 1), d = random(n, 1), acc = random(n, 1);
                try (Arena a = Arena.ofShared()) {
                    MemorySegment out = seg(a, nan(n));
                    cpu.geluForward(out, seg(a, x), n);
                    close("gelu n=" + n, arr(out, n), emulate(bin, 4, launch, new float[0], Buf.of(nan(n)), Buf.of(x)).get(0), 1e-4);
                    MemorySegment dx = seg(a, acc);
                    cpu.geluBackward(dx, seg(a, x), seg(a, d), n);
                    close("gelu backward n=" + n, arr(dx, n), emulate(bin, 5, launch, new float[0], Buf.of(acc), Buf.of(x), Buf.of(d)).get(0), 1e-4);
                    MemorySegment r = seg(a, nan(n));
                    cpu.residualForward(r, seg(a, x), seg(a, y), n);
                    close("residual n=" + n, arr(r, n), emulate(bin, 6, launch, new float[0], Buf.of(nan(n)), Buf.of(x), Buf.of(y)).get(0), 0);
                    MemorySegment s = seg(a, acc);
                    cpu.accumulate(s, seg(a, x), n);
                    close("accumulate n=" + n, arr(s, n), emulate(bin, 7, launch, new float[0], Buf.of(acc), Buf.of(x)).get(0), 0);
                    MemorySegment sc = seg(a, x);
                    cpu.scale(sc, 0.37f, n);
                    close("scale n=" + n, arr(sc, n), emulate(bin, 15, launch, new float[]{0.37f}, Buf.of(x)).get(0), 0);
                    float[] filled = emulate(bin, 16, launch, new float[]{-2.5f}, Buf.of(nan(n))).get(0);
                    for (float v : filled) assertEquals(-2.5f, v);
                    // Sum of squares: per-block partials, added on the host.
                    float[] partials = emulate(bin, 12, launch, new float[0], Buf.of(nan(3)), Buf.of(x)).get(0);
                    double total = 0;
                    for (float p : partials) total += p;
                    double expected = cpu.sumOfSquares(seg(a, x), n);
                    assertEquals(expected, total, 1e-5 * expected, "sum of squares n=" + n);
                    // AdamW at step 3.
                    float[] p = random(n, 1), g = random(n, 1), m = random(n, 0.1), v = random(n, 0.01);
                    for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
                    MemorySegment ps = seg(a, p), ms = seg(a, m), vs = seg(a, v);
                    cpu.adamW(ps, seg(a, g), ms, vs, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
                    List<float[]> o = emulate(bin, 11, new int[]{3, 64, n, 3}, new float[]{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f},
                            Buf.of(p), Buf.of(g), Buf.of(m), Buf.of(v));
                    close("adamW params n=" + n, arr(ps, n), o.get(0), 1e-4);
                    close("adamW m n=" + n, arr(ms, n), o.get(2), 1e-5);
                    close("adamW v n=" + n, arr(vs, n), o.get(3), 1e-5);
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
                    cpu.layerNormForward(out, mean, rstd, seg(a, x), seg(a, w), seg(a, bias), rows, c);
                    List<float[]> o = emulate(bin, 2, new int[]{rows, 64, rows, c}, new float[0], Buf.of(nan(n)), Buf.of(nan(rows)),
                            Buf.of(nan(rows)), Buf.of(x), Buf.of(w), Buf.of(bias));
                    close("layernorm" + at, arr(out, n), o.get(0), 2e-4);
                    close("layernorm rstd" + at, arr(rstd, rows), o.get(2), 1e-4);
                    // layernorm backward (accumulating into random prefills)
                    float[] dx0 = random(n, 1), dw0 = random(c, 1), db0 = random(c, 1);
                    MemorySegment dx = seg(a, dx0), dw = seg(a, dw0), db = seg(a, db0);
                    cpu.layerNormBackward(dx, dw, db, seg(a, dout), seg(a, x), seg(a, w), mean, rstd, rows, c);
                    o = emulate(bin, 3, new int[]{2, 64, rows, c}, new float[0], Buf.of(dx0), Buf.of(dw0), Buf.of(db0), Buf.of(dout),
                            Buf.of(x), Buf.of(w), Buf.of(arr(mean, rows)), Buf.of(arr(rstd, rows)));
                    close("layernorm dinp" + at, arr(dx, n), o.get(0), 2e-4);
                    close("layernorm dweight" + at, arr(dw, c), o.get(1), 2e-4);
                    close("layernorm dbias" + at, arr(db, c), o.get(2), 2e-4);
                    // bias rows
                    MemorySegment br = seg(a, nan(n));
                    cpu.broadcastRows(br, seg(a, bias), rows, c);
                    close("broadcastRows" + at, arr(br, n), emulate(bin, 8, new int[]{2, 64, rows, c}, new float[0], Buf.of(nan(n)),
                            Buf.of(bias)).get(0), 0);
                    MemorySegment sr = seg(a, db0);
                    cpu.sumRows(sr, seg(a, dout), rows, c);
                    close("sumRows" + at, arr(sr, c), emulate(bin, 9, new int[]{2, 64, rows, c}, new float[0], Buf.of(db0),
                            Buf.of(dout)).get(0), 1e-5);
                    // fused softmax cross-entropy, gradient in place; one ignored row when there are several
                    float[] logits = random(n, 5);
                    int[] targets = new int[rows];
                    for (int r = 0; r < rows; r++) targets[r] = rng.nextInt(c);
                    if (rows > 2) targets[1] = -100;
                    MemorySegment ls = seg(a, logits), losses = seg(a, nan(rows));
                    cpu.softmaxCrossEntropy(losses, ls, seg(a, targets), rows, c, -100, true, 0.25f);
                    o = emulate(bin, 10, new int[]{rows, 64, rows, c, -100, 1}, new float[]{0.25f}, Buf.of(nan(rows)), Buf.of(logits),
                            Buf.of(targets));
                    close("softmaxCE losses" + at, arr(losses, rows), o.get(0), 1e-5);
                    close("softmaxCE dlogits" + at, arr(ls, n), o.get(1), 1e-4);
                }
            }
        }
    }

    @Test
    void embeddingMatchesTheJavaKernel() throws Exception {
        for (int[] s : new int[][]{{1, 1, 1}, {2, 5, 7}, {3, 4, 33}}) {
            int b = s[0], t = s[1], c = s[2], vocab = 11;
            int[] tokens = new int[b * t];
            for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(vocab);
            tokens[0] = tokens[tokens.length - 1];  // a repeated id: two rows add into one dwte row
            float[] wte = random(vocab * c, 1), wpe = random(t * c, 1), dout = random(b * t * c, 1);
            float[] dwte0 = random(vocab * c, 1), dwpe0 = random(t * c, 1);
            try (Arena a = Arena.ofShared()) {
                MemorySegment out = seg(a, nan(b * t * c));
                cpu.embeddingForward(out, seg(a, tokens), seg(a, wte), seg(a, wpe), b, t, c, vocab);
                close("embedding", arr(out, b * t * c), emulate(gate, 0, new int[]{2, 64, b, t, c}, new float[0], Buf.of(nan(b * t * c)),
                        Buf.of(tokens), Buf.of(wte), Buf.of(wpe)).get(0), 0);
                MemorySegment dwte = seg(a, dwte0), dwpe = seg(a, dwpe0);
                cpu.embeddingBackward(dwte, dwpe, seg(a, dout), seg(a, tokens), b, t, c);
                List<float[]> o = emulate(asan, 1, new int[]{2, 64, b, t, c}, new float[0], Buf.of(dwte0), Buf.of(dwpe0), Buf.of(dout),
                        Buf.of(tokens));
                close("embedding dwte", arr(dwte, vocab * c), o.get(0), 1e-5);
                close("embedding dwpe", arr(dwpe, t * c), o.get(1), 1e-5);
            }
        }
    }

    /** The causal softmax pieces of attention against float64 loops (their GEMMs are cuBLAS's). */
    @Test
    void attentionSoftmaxMatchesFloat64() throws Exception {
        for (int[] s : new int[][]{{1, 1}, {3, 5}, {2, 37}}) {
            int rows = s[0] * s[1], t = s[1];
            float scale = 0.3f;
            float[] pre = random(rows * t, 4), datt = random(rows * t, 1);
            List<float[]> o = emulate(asan, 13, new int[]{rows, 64, rows, t}, new float[]{scale}, Buf.of(nan(rows * t)), Buf.of(pre));
            float[] att = o.get(0);
            float[] d = emulate(gate, 14, new int[]{rows, 64, rows, t}, new float[]{scale}, Buf.of(nan(rows * t)), Buf.of(datt),
                    Buf.of(att)).get(0);
            float[] expAtt = new float[rows * t], expD = new float[rows * t];
            for (int r = 0; r < rows; r++) {
                int q = r % t;
                double max = Double.NEGATIVE_INFINITY, sum = 0, dot = 0;
                for (int j = 0; j <= q; j++) max = Math.max(max, scale * (double) pre[r * t + j]);
                for (int j = 0; j <= q; j++) sum += Math.exp(scale * (double) pre[r * t + j] - max);
                for (int j = 0; j <= q; j++) expAtt[r * t + j] = (float) (Math.exp(scale * (double) pre[r * t + j] - max) / sum);
                for (int j = 0; j <= q; j++) dot += (double) att[r * t + j] * datt[r * t + j];
                for (int j = 0; j <= q; j++) expD[r * t + j] = (float) (scale * att[r * t + j] * (datt[r * t + j] - dot));
            }
            close("attention softmax " + rows + "x" + t, expAtt, att, 1e-5);
            close("attention softmax backward " + rows + "x" + t, expD, d, 1e-4);
        }
    }
}
