package dev.distillery.kernels.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.conformance.KernelConformance;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.kernels.reference.ReferenceKernels;

/**
 * {@code selftest --device cuda}: every CUDA kernel of the fatbin and the cuBLAS GEMMs on fresh
 * random inputs at awkward sizes, against the CPU kernels on the same inputs. Outputs are
 * poisoned (NaN) on the device before each launch and accumulating gradients start from random
 * values, as in the CPU suite. Error = max |gpu − cpu| / max(|cpu|, 1% of the output's scale).
 */
public final class CudaConformance {

    private static final double TOL = 1e-4;        // fp32 kernels vs fp32 kernels
    private static final double TOL_GEMM = 1e-3;   // cuBLAS may use another summation order (TF32 off)

    private final CudaBackend gpu;
    private final Kernels cpu;
    private final SplittableRandom rng;
    private final Arena arena = Arena.ofShared();
    private final List<Long> allocations = new ArrayList<>();
    private final List<KernelConformance.Result> results = new ArrayList<>();

    private CudaConformance(CudaBackend gpu, Kernels cpu, long seed) {
        this.gpu = gpu;
        this.cpu = cpu;
        this.rng = new SplittableRandom(seed);
    }

    /** Runs every check; {@code quick} runs one size per kernel. */
    public static List<KernelConformance.Result> run(CudaBackend gpu, Kernels cpu, long seed, boolean quick) {
        CudaConformance c = new CudaConformance(gpu, cpu, seed);
        try {
            c.all(quick);
            return List.copyOf(c.results);
        } finally {
            for (long p : c.allocations) gpu.free(p);
            c.arena.close();
        }
    }

    private void all(boolean quick) {
        int[][] gemm = quick ? new int[][]{{7, 13, 5}} : new int[][]{{1, 1, 1}, {7, 13, 5}, {65, 129, 67}, {512, 768, 384}};
        int[][] rows = quick ? new int[][]{{13, 67}} : new int[][]{{1, 1}, {3, 7}, {13, 67}, {31, 384}, {7, 4097}, {300, 33}};
        int[] lengths = quick ? new int[]{131} : new int[]{1, 7, 131, 70001};
        int[][] classifier = quick ? new int[][]{{5, 1009}} : new int[][]{{1, 1}, {3, 11}, {5, 1009}, {4, 50257}};
        for (int[] s : gemm) gemms(s[0], s[1], s[2]);
        for (int n : lengths) elementwise(n);
        for (int[] s : rows) rowKernels(s[0], s[1]);
        for (int[] s : rows) embedding(Math.max(1, s[0] / 3), 3, s[1], 17);
        for (int[] s : classifier) classifier(s[0], s[1]);
        for (int[] s : classifier) distill(s[0], s[1]);
        for (int[] s : classifier) logitRows(s[0], s[1]);
        for (int[] s : rows) rmsNorm(s[0], s[1]);
        for (int n : lengths) swiGlu(n);
        for (int[] s : rows) ropeAndRepeatHeads(Math.max(1, s[0] / 3), 3, s[1]);
        for (int[] s : rows) attentionDecode(Math.max(1, s[0] / 3), s[0], Math.max(2, (s[1] / 4) & ~1));
        for (int[] s : rows) heads(Math.max(1, s[0] / 3), s[0], 3, Math.max(1, s[1] / 8));
        for (int[] s : rows) featureDistance(s[0], s[1]);
        for (int[] s : classifier) teacherMixture(s[0], s[1]);
    }

    /** The fused loss (JSD(0.5), T = 1.5, a hard label) against a mixture of an fp32 and a bf16 teacher, weights 0.25 and 0.75. */
    private void teacherMixture(int n, int v) {
        float[] s = random(n * v, 4), a = random(n * v, 4), bf = random(n * v, 4);
        int[] labels = new int[n];
        for (int r = 0; r < n; r++) labels[r] = rng.nextInt(v);
        DistillOptions o = DistillOptions.of(1.5f, 0.3f).withDivergence(Divergence.jsd(0.5));
        MemorySegment b = arena.allocate(2L * n * v, 64);
        for (int i = 0; i < n * v; i++) DType.BF16.write(b, i, bf[i]);
        MemorySegment ha = host(a), hs = host(s), rowDiv = host(new float[n]);
        TeacherTargets.Mixture mixture = new TeacherTargets.Mixture(List.of(new TeacherTargets.Dense(ha, DType.F32, v),
                new TeacherTargets.Dense(b, DType.BF16, v)), new float[]{0.25f, 0.75f});
        cpu.distillLoss(hs, hs, mixture, host(labels), null, rowDiv, n, v, o, 1f);
        CudaBackend.Ptr ds = device(host(s)), dl = device(host(labels)), ddiv = poisoned(n), none = new CudaBackend.Ptr(0);
        Object[] args = {ds, ds, device(ha), device(b), none, none, none, none, none, none, dl, poisoned(n), ddiv, n, v, v,
                CudaKernels.mixtureSpec(arena, mixture), params(o, 1f)};
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.DISTILL_MIXTURE, n, 256, args);
        record("distillMixture.jsd", n + "x" + v + " x2", floats(hs, n * v), download(ds, n * v), TOL, t0);
        record("distillMixture.divergence", n + "x" + v + " x2", floats(rowDiv, n), download(ddiv, n), TOL, t0);
    }

    /** Both feature distances against a bf16 teacher, loss and accumulated gradient. */
    private void featureDistance(int rows, int d) {
        String size = rows + "x" + d;
        int n = rows * d;
        float[] s = random(n, 1), g0 = random(n, 1);
        MemorySegment t = arena.allocate(2L * n, 64);
        float[] tf = random(n, 1);
        for (int i = 0; i < n; i++) DType.BF16.write(t, i, tf[i]);
        for (FeatureDistance distance : FeatureDistance.values()) {
            MemorySegment loss = host(new float[rows]), g = host(g0);
            cpu.featureDistance(distance, loss, g, host(s), t, DType.BF16, rows, d, 0.5f);
            CudaBackend.Ptr dLoss = poisoned(rows), dG = device(host(g0));
            long t0 = System.nanoTime();
            gpu.launch(CudaKernel.FEATURE_DISTANCE_BF16, rows, 256, dLoss, dG, device(host(s)), device(t), rows, d, distance.ordinal(), 0.5f);
            String name = "featureDistance." + distance.name().toLowerCase(java.util.Locale.ROOT);
            record(name, size, floats(loss, rows), download(dLoss, rows), TOL, t0);
            record(name + ".grad", size, floats(g, n), download(dG, n), TOL, t0);
        }
    }

    /**
     * Attention's heads apart (fp32, and rounded to bf16 as the reference rounds) and back (written, rounded to bf16, and added), against
     * the same moves in Java: every element must land bit for bit where it belongs.
     */
    private void heads(int b, int t, int nh, int hs) {
        int parts = 3, n = parts * b * t * nh * hs;
        String size = b + "x" + t + "x" + nh + "x" + hs + "x" + parts;
        float[] rows = random(n, 3), apart = headsApart(rows, b, t, nh, hs, parts), before = random(n, 1), sums = new float[n];
        for (int i = 0; i < n; i++) sums[i] = before[i] + rows[i];
        CudaBackend.Ptr dRows = device(host(rows)), dApart = poisoned(n), dApart16 = poisoned(n), dBack = poisoned(n), dSums = device(host(before));
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_HEADS_SPLIT, grid(n), 256, dApart, dRows, b, t, nh, hs, parts);
        record("headsSplit", size, apart, download(dApart, n), 0, t0);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_HEADS_SPLIT_BF16, grid(n), 256, dApart16, dRows, b, t, nh, hs, parts);
        record("headsSplit.bf16", size, roundedToBf16(apart), downloadBf16(dApart16, n), 0, t0);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_HEADS_MERGE, grid(n), 256, dBack, dApart, b, t, nh, hs, parts, 0);
        record("headsMerge", size, rows, download(dBack, n), 0, t0);
        CudaBackend.Ptr dBack16 = poisoned((n + 1) / 2);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_HEADS_MERGE_BF16, grid(n), 256, dBack16, dApart, b, t, nh, hs, parts);
        record("headsMerge.bf16", size, roundedToBf16(rows), downloadBf16(dBack16, n), 0, t0);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_HEADS_MERGE, grid(n), 256, dSums, dApart, b, t, nh, hs, parts, 1);
        record("headsMerge.accumulate", size, sums, download(dSums, n), 0, t0);
    }

    /** What {@code ops_heads_split} makes of (b·t, parts·nh·hs) rows: (parts, b, nh, t, hs), in Java loops. */
    static float[] headsApart(float[] rows, int b, int t, int nh, int hs, int parts) {
        float[] apart = new float[rows.length];
        for (int bi = 0; bi < b; bi++)
            for (int ti = 0; ti < t; ti++)
                for (int p = 0; p < parts; p++)
                    for (int h = 0; h < nh; h++)
                        for (int e = 0; e < hs; e++)
                            apart[(((p * b + bi) * nh + h) * t + ti) * hs + e] = rows[((bi * t + ti) * parts + p) * nh * hs + h * hs + e];
        return apart;
    }

    /** One query row per sequence over len of len + 2 cached rows, 4 query heads over 2 key/value heads of hs. */
    private void attentionDecode(int b, int len, int hs) {
        int nh = 4, kvh = 2, maxLen = len + 2, n = b * nh * hs;
        String size = b + "x" + len + "x" + nh + "/" + kvh + "x" + hs;
        float[] q = random(n, 1), k = random(b * maxLen * kvh * hs, 1), v = random(b * maxLen * kvh * hs, 1);
        MemorySegment out = host(new float[n]);
        cpu.attentionDecode(out, host(new float[b * nh * maxLen]), host(q), host(k), host(v), b, len, maxLen, nh, kvh, hs);
        CudaBackend.Ptr dOut = poisoned(n), dScores = poisoned(b * nh * maxLen);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ATTENTION_DECODE, b * nh, 256, dOut, dScores, device(host(q)), device(host(k)), device(host(v)), len, maxLen,
                nh, kvh, hs);
        record("attentionDecode", size, floats(out, n), download(dOut, n), TOL, t0);
    }

    /** RoPE over 2 heads of hs (even) inside rows of c + 3 floats, and 2 heads repeated 3 times. */
    private void ropeAndRepeatHeads(int b, int t, int c) {
        int hs = Math.max(2, (c / 2) & ~1), heads = 2, stride = heads * hs + 3, rows = b * t, n = rows * stride;
        String size = b + "x" + t + "x" + heads + "x" + hs;
        float[] x = random(n, 1), cs = new float[t * hs], dout = random(n, 1), d0 = random(n, 1);
        for (int i = 0; i < t * hs / 2; i++) {
            double a = rng.nextDouble() * 2 * Math.PI;
            cs[2 * i] = (float) Math.cos(a);
            cs[2 * i + 1] = (float) Math.sin(a);
        }
        MemorySegment out = host(x.clone());
        cpu.ropeForward(out, host(x), host(cs), b, t, heads, hs, stride, 1);
        CudaBackend.Ptr dx = device(host(x)), dcs = device(host(cs)), dOut = device(host(x));
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ROPE_ROTATE, grid((long) rows * heads * hs / 2), 256, dOut, dx, dcs, rows, t, heads, hs, stride, 1, 1f, 0);
        record("ropeForward", size, floats(out, n), download(dOut, n), TOL, t0);
        MemorySegment g = host(d0);
        cpu.ropeBackward(g, host(dout), host(cs), b, t, heads, hs, stride, 1);
        CudaBackend.Ptr dg = device(host(d0)), ddout = device(host(dout));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ROPE_ROTATE, grid((long) rows * heads * hs / 2), 256, dg, ddout, dcs, rows, t, heads, hs, stride, 1, -1f, 1);
        record("ropeBackward", size, floats(g, n), download(dg, n), TOL, t0);

        int group = 3, wide = heads * group * hs;
        float[] rep0 = random(rows * wide, 1), drep = random(rows * wide, 1);
        MemorySegment rep = host(rep0.clone());
        cpu.repeatHeadsForward(rep, wide, 0, host(x), stride, 1, rows, heads, group, hs);
        CudaBackend.Ptr dRep = device(host(rep0));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_REPEAT_HEADS_FORWARD, grid((long) rows * wide), 256, dRep, wide, 0, dx, stride, 1, rows, heads, group, hs);
        record("repeatHeadsForward", size, floats(rep, rows * wide), download(dRep, rows * wide), TOL, t0);
        MemorySegment gin = host(d0);
        cpu.repeatHeadsBackward(gin, stride, 1, host(drep), wide, 0, rows, heads, group, hs);
        CudaBackend.Ptr dGin = device(host(d0)), dDrep = device(host(drep));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_REPEAT_HEADS_BACKWARD, grid((long) rows * heads * hs), 256, dGin, stride, 1, dDrep, wide, 0, rows, heads, group, hs);
        record("repeatHeadsBackward", size, floats(gin, n), download(dGin, n), TOL, t0);
    }

    private void rmsNorm(int rows, int c) {
        String size = rows + "x" + c;
        int n = rows * c;
        float[] x = random(n, 2), w = random(c, 1), dout = random(n, 1), dx0 = random(n, 1), dw0 = random(c, 1);
        MemorySegment out = host(new float[n]), rstd = host(new float[rows]);
        cpu.rmsNormForward(out, DType.F32, rstd, host(x), host(w), rows, c, 1e-5f);
        CudaBackend.Ptr dx = device(host(x)), dw = device(host(w)), dOut = poisoned(n), dRstd = poisoned(rows);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_RMSNORM_FORWARD, rows, 256, dOut, dRstd, dx, dw, rows, c, 1e-5f);
        record("rmsNormForward", size, floats(out, n), download(dOut, n), TOL, t0);
        CudaBackend.Ptr dOut16 = poisoned((n + 1) / 2);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_RMSNORM_FORWARD_BF16, rows, 256, dOut16, poisoned(rows), dx, dw, rows, c, 1e-5f);
        record("rmsNormForward.bf16", size, roundedToBf16(download(dOut, n)), downloadBf16(dOut16, n), 0, t0);
        MemorySegment hdx = host(dx0), hdw = host(dw0);
        cpu.rmsNormBackward(hdx, hdw, host(dout), host(x), host(w), rstd, rows, c);
        CudaBackend.Ptr gx = device(host(dx0)), gw = device(host(dw0)), gdout = device(host(dout));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_RMSNORM_BACKWARD_INPUT, rows, 256, gx, gdout, dx, dw, dRstd, rows, c);
        ColumnSums.rmsNormWeight(gpu, poisoned(ColumnSums.scratchBytes(rows, c, 1) / 4).address(), gw, gdout, dx, dRstd, rows, c);
        record("rmsNormBackward", size, floats(hdx, n), download(gx, n), TOL, t0);
        record("rmsNormBackward.dweight", size, floats(hdw, c), download(gw, c), TOL, t0);
    }

    private void swiGlu(int n) {
        String size = Integer.toString(n);
        float[] gate = random(n, 6), up = random(n, 1), dout = random(n, 1), dg0 = random(n, 1), du0 = random(n, 1);
        MemorySegment out = host(new float[n]);
        cpu.swiGluForward(out, DType.F32, host(gate), host(up), n);
        CudaBackend.Ptr dgate = device(host(gate)), dup = device(host(up)), dOut = poisoned(n);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_SWIGLU_FORWARD, grid(n), 256, dOut, dgate, dup, (long) n);
        record("swiGluForward", size, floats(out, n), download(dOut, n), TOL, t0);
        CudaBackend.Ptr dOut16 = poisoned((n + 1) / 2);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_SWIGLU_FORWARD_BF16, grid(n), 256, dOut16, dgate, dup, (long) n);
        record("swiGluForward.bf16", size, roundedToBf16(download(dOut, n)), downloadBf16(dOut16, n), 0, t0);
        MemorySegment hg = host(dg0), hu = host(du0);
        cpu.swiGluBackward(hg, hu, host(dout), host(gate), host(up), n);
        CudaBackend.Ptr gg = device(host(dg0)), gu = device(host(du0)), gdout = device(host(dout));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_SWIGLU_BACKWARD, grid(n), 256, gg, gu, gdout, dgate, dup, (long) n);
        record("swiGluBackward.dgate", size, floats(hg, n), download(gg, n), TOL, t0);
        record("swiGluBackward.dup", size, floats(hu, n), download(gu, n), TOL, t0);
    }

    // ------------------------------------------------------------------ buffers

    private float[] random(int n, double scale) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) ((rng.nextDouble() * 2 - 1) * scale);
        return a;
    }

    private MemorySegment host(float[] x) {
        MemorySegment s = arena.allocate(4L * Math.max(1, x.length), 64);
        MemorySegment.copy(x, 0, s, ValueLayout.JAVA_FLOAT, 0, x.length);
        return s;
    }

    private MemorySegment host(int[] x) {
        MemorySegment s = arena.allocate(4L * Math.max(1, x.length), 64);
        MemorySegment.copy(x, 0, s, ValueLayout.JAVA_INT, 0, x.length);
        return s;
    }

    /** A device copy of a host segment. */
    private CudaBackend.Ptr device(MemorySegment h) {
        long p = gpu.alloc(h.byteSize());
        allocations.add(p);
        gpu.upload(p, h, h.byteSize());
        return new CudaBackend.Ptr(p);
    }

    /** A device buffer of n floats, all NaN. */
    private CudaBackend.Ptr poisoned(long n) {
        long p = gpu.alloc(4 * Math.max(1, n));
        allocations.add(p);
        gpu.launch(CudaKernel.OPS_FILL, grid(n), 256, new CudaBackend.Ptr(p), Float.NaN, n);
        return new CudaBackend.Ptr(p);
    }

    private float[] download(CudaBackend.Ptr p, int n) {
        MemorySegment h = arena.allocate(4L * Math.max(1, n), 64);
        gpu.download(h, p.address(), 4L * n);
        float[] x = new float[n];
        MemorySegment.copy(h, ValueLayout.JAVA_FLOAT, 0, x, 0, n);
        return x;
    }

    /** n bf16 values from the device, widened. */
    private float[] downloadBf16(CudaBackend.Ptr p, int n) {
        MemorySegment h = arena.allocate(2L * Math.max(1, n), 64);
        gpu.download(h, p.address(), 2L * n);
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = DType.BF16.read(h, i);
        return x;
    }

    /** x rounded as the GEMMs round their operands ({@code ReferenceKernels.roundToBf16}): what a kernel's bf16 twin must store, bit for bit. */
    private static float[] roundedToBf16(float[] x) {
        float[] r = new float[x.length];
        for (int i = 0; i < x.length; i++) r[i] = (float) ReferenceKernels.roundToBf16(x[i]);
        return r;
    }

    private static float[] floats(MemorySegment s, int n) {
        float[] x = new float[n];
        MemorySegment.copy(s, ValueLayout.JAVA_FLOAT, 0, x, 0, n);
        return x;
    }

    private static int grid(long n) {
        return (int) Math.max(1, Math.min(4096, (n + 255) / 256));
    }

    private static double error(float[] expected, float[] actual) {
        double scale = 0, worst = 0;
        for (float e : expected) scale = Math.max(scale, Math.abs(e));
        for (int i = 0; i < expected.length; i++) {
            double err = Math.abs(expected[i] - actual[i]) / Math.max(1e-30, Math.max(Math.abs(expected[i]), 1e-2 * scale));
            if (!(err <= worst)) worst = Double.isNaN(err) ? Double.NaN : Math.max(worst, err);
            if (Double.isNaN(worst)) return worst;
        }
        return worst;
    }

    private void record(String kernel, String size, float[] expected, float[] actual, double tol, long t0) {
        gpu.synchronize();
        results.add(new KernelConformance.Result(kernel, size, error(expected, actual), tol, (System.nanoTime() - t0) / 1e6));
    }

    // ------------------------------------------------------------------ checks

    private void gemms(int m, int n, int k) {
        for (boolean[] t : new boolean[][]{{false, false}, {false, true}, {true, false}}) {
            boolean ta = t[0], tb = t[1];
            float[] a = random(m * k, 1), b = random(k * n, 1), c0 = random(m * n, 1);
            int lda = ta ? m : k, ldb = tb ? k : n;
            MemorySegment hc = host(c0);
            cpu.gemm(ta, tb, m, n, k, 0.75f, host(a), lda, host(b), ldb, 0.5f, hc, n);
            CudaBackend.Ptr da = device(host(a)), db = device(host(b)), dc = device(host(c0));
            long t0 = System.nanoTime();
            CudaKernels.rowMajorGemm(gpu, ta, tb, m, n, k, 0.75f, da.address(), lda, 0, db.address(), ldb, 0, 0.5f, dc.address(), n, 0, 1);
            record("gemm" + (ta ? "T" : "N") + (tb ? "T" : "N"), m + "x" + n + "x" + k, floats(hc, m * n), download(dc, m * n), TOL_GEMM, t0);
        }
        int batch = 3;
        float[] a = random(batch * m * k, 1), b = random(batch * k * n, 1);
        MemorySegment hc = host(new float[batch * m * n]);
        cpu.gemmStridedBatched(false, true, m, n, k, 1f, host(a), k, (long) m * k, host(b), k, (long) n * k, 0f, hc, n, (long) m * n, batch);
        CudaBackend.Ptr da = device(host(a)), db = device(host(b)), dc = poisoned((long) batch * m * n);
        long t0 = System.nanoTime();
        CudaKernels.rowMajorGemm(gpu, false, true, m, n, k, 1f, da.address(), k, (long) m * k, db.address(), k, (long) n * k, 0f,
                dc.address(), n, (long) m * n, batch);
        record("gemmStridedBatched", batch + "x" + m + "x" + n + "x" + k, floats(hc, batch * m * n), download(dc, batch * m * n), TOL_GEMM, t0);
    }

    private void elementwise(int n) {
        String size = Integer.toString(n);
        float[] x = random(n, 3), y = random(n, 1), acc = random(n, 1);
        MemorySegment out = host(new float[n]);
        cpu.geluForward(out, DType.F32, host(x), n);
        CudaBackend.Ptr dx = device(host(x)), dy = device(host(y)), dout = poisoned(n);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_GELU_FORWARD, grid(n), 256, dout, dx, (long) n);
        record("geluForward", size, floats(out, n), download(dout, n), TOL, t0);
        CudaBackend.Ptr dout16 = poisoned((n + 1) / 2);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_GELU_FORWARD_BF16, grid(n), 256, dout16, dx, (long) n);
        record("geluForward.bf16", size, roundedToBf16(download(dout, n)), downloadBf16(dout16, n), 0, t0);

        MemorySegment g = host(acc);
        cpu.geluBackward(g, host(x), host(y), n);
        CudaBackend.Ptr dg = device(host(acc));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_GELU_BACKWARD, grid(n), 256, dg, dx, dy, (long) n);
        record("geluBackward", size, floats(g, n), download(dg, n), TOL, t0);

        MemorySegment r = host(new float[n]);
        cpu.residualForward(r, host(x), host(y), n);
        CudaBackend.Ptr dr = poisoned(n);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_RESIDUAL_FORWARD, grid(n), 256, dr, dx, dy, (long) n);
        record("residualForward", size, floats(r, n), download(dr, n), TOL, t0);

        double expected = cpu.sumOfSquares(host(x), n);
        int blocks = grid(n);
        CudaBackend.Ptr partials = poisoned(blocks);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_SUM_OF_SQUARES, blocks, 256, partials, dx, (long) n);
        double total = 0;
        for (float p : download(partials, blocks)) total += p;
        record("sumOfSquares", size, new float[]{(float) expected}, new float[]{(float) total}, TOL, t0);

        float[] p = random(n, 1), m = random(n, 0.1), v = random(n, 0.01);
        for (int i = 0; i < n; i++) v[i] = Math.abs(v[i]);
        MemorySegment hp = host(p), hm = host(m), hv = host(v);
        cpu.adamW(hp, host(y), hm, hv, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
        CudaBackend.Ptr dp = device(host(p)), dm = device(host(m)), dv = device(host(v));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ADAMW, grid(n), 256, dp, dy, dm, dv, (long) n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
        record("adamW", size, floats(hp, n), download(dp, n), TOL, t0);

        // the same update in one launch over chunks of 5, with a clipping factor: the first half with the decay, the rest without
        ParameterSpans spans = new ParameterSpans(new long[]{0, n / 2}, new long[]{n / 2, n - n / 2}, new float[]{0.1f, 0f});
        CudaKernels.AdamWChunks cut = CudaKernels.AdamWChunks.of(spans, 5);
        MemorySegment cp = host(p), cm = host(m), cv = host(v);
        cpu.adamWSpans(cp, host(y), cm, cv, spans, 0.37f, 1e-2f, 0.9f, 0.95f, 1e-8f, 3);
        CudaBackend.Ptr ep = device(host(p)), em = device(host(m)), ev = device(host(v));
        MemorySegment starts = arena.allocate(8L * Math.max(1, cut.count()), 8), lengths = arena.allocate(8L * Math.max(1, cut.count()), 8);
        MemorySegment.copy(cut.starts(), 0, starts, ValueLayout.JAVA_LONG, 0, cut.count());
        MemorySegment.copy(cut.lengths(), 0, lengths, ValueLayout.JAVA_LONG, 0, cut.count());
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ADAMW_CHUNKS, Math.min(cut.count(), 64), 256, ep, dy, em, ev, device(starts), device(lengths),
                device(host(cut.decays())), cut.count(), 0.37f, 1e-2f, 0.9f, 0.95f, 1e-8f, 3);
        record("adamWChunks", size, floats(cp, n), download(ep, n), TOL, t0);
    }

    private void rowKernels(int rows, int c) {
        String size = rows + "x" + c;
        int n = rows * c;
        float[] x = random(n, 2), w = random(c, 1), b = random(c, 1), dout = random(n, 1);
        MemorySegment out = host(new float[n]), mean = host(new float[rows]), rstd = host(new float[rows]);
        cpu.layerNormForward(out, DType.F32, mean, rstd, host(x), host(w), host(b), rows, c);
        CudaBackend.Ptr dx = device(host(x)), dw = device(host(w)), db = device(host(b));
        CudaBackend.Ptr dOut = poisoned(n), dMean = poisoned(rows), dRstd = poisoned(rows);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_LAYERNORM_FORWARD, rows, 256, dOut, dMean, dRstd, dx, dw, db, rows, c);
        record("layerNormForward", size, floats(out, n), download(dOut, n), TOL, t0);
        CudaBackend.Ptr dOut16 = poisoned((n + 1) / 2);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_LAYERNORM_FORWARD_BF16, rows, 256, dOut16, poisoned(rows), poisoned(rows), dx, dw, db, rows, c);
        record("layerNormForward.bf16", size, roundedToBf16(download(dOut, n)), downloadBf16(dOut16, n), 0, t0);

        float[] dx0 = random(n, 1), dw0 = random(c, 1), db0 = random(c, 1);
        MemorySegment hdx = host(dx0), hdw = host(dw0), hdb = host(db0);
        cpu.layerNormBackward(hdx, hdw, hdb, host(dout), host(x), host(w), mean, rstd, rows, c);
        CudaBackend.Ptr gx = device(host(dx0)), gw = device(host(dw0)), gb = device(host(db0)), gdout = device(host(dout));
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_LAYERNORM_BACKWARD_INPUT, rows, 256, gx, gdout, dx, dw, dMean, dRstd, rows, c);
        ColumnSums.layerNormParams(gpu, poisoned(ColumnSums.scratchBytes(rows, c, 2) / 4).address(), gw, gb, gdout, dx, dMean, dRstd, rows, c);
        record("layerNormBackward", size, floats(hdx, n), download(gx, n), TOL, t0);
        record("layerNormBackward.dweight", size, floats(hdw, c), download(gw, c), TOL, t0);
        record("layerNormBackward.dbias", size, floats(hdb, c), download(gb, c), TOL, t0);

        MemorySegment sr = host(db0);
        cpu.sumRows(sr, host(dout), rows, c);
        CudaBackend.Ptr dsr = device(host(db0));
        t0 = System.nanoTime();
        ColumnSums.sumRows(gpu, poisoned(ColumnSums.scratchBytes(rows, c, 1) / 4).address(), dsr, gdout, rows, c);
        record("sumRows", size, floats(sr, c), download(dsr, c), TOL, t0);

        // Causal attention softmax over rows of length c (rows = b·nh·t with t = c), against float64.
        int t = Math.min(c, 64), r = Math.max(1, rows) * t;
        float scale = 0.3f;
        float[] pre = random(r * t, 4), datt = random(r * t, 1), expected = new float[r * t];
        for (int row = 0; row < r; row++) {
            int q = row % t;
            double max = Double.NEGATIVE_INFINITY, sum = 0;
            for (int j = 0; j <= q; j++) max = Math.max(max, scale * (double) pre[row * t + j]);
            for (int j = 0; j <= q; j++) sum += Math.exp(scale * (double) pre[row * t + j] - max);
            for (int j = 0; j <= q; j++) expected[row * t + j] = (float) (Math.exp(scale * (double) pre[row * t + j] - max) / sum);
        }
        CudaBackend.Ptr dpre = device(host(pre)), datt0 = poisoned((long) r * t);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ATTENTION_SOFTMAX_FORWARD, r, 128, datt0, dpre, r, t, 0, t, scale);
        float[] att = download(datt0, r * t);
        record("attentionSoftmax", r + "x" + t, expected, att, TOL, t0);
        float[] expectedD = new float[r * t];
        for (int row = 0; row < r; row++) {
            int q = row % t;
            double dot = 0;
            for (int j = 0; j <= q; j++) dot += (double) att[row * t + j] * datt[row * t + j];
            for (int j = 0; j <= q; j++) expectedD[row * t + j] = (float) (scale * att[row * t + j] * (datt[row * t + j] - dot));
        }
        CudaBackend.Ptr dd = device(host(datt)), dpreGrad = poisoned((long) r * t);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ATTENTION_SOFTMAX_BACKWARD, r, 128, dpreGrad, dd, datt0, r, t, 0, t, scale);
        record("attentionSoftmaxBackward", r + "x" + t, expectedD, download(dpreGrad, r * t), TOL, t0);
    }

    private void embedding(int b, int t, int c, int vocab) {
        int[] tokens = new int[b * t];
        for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(vocab);
        float[] wte = random(vocab * c, 1), wpe = random(t * c, 1), dout = random(b * t * c, 1), dwte0 = random(vocab * c, 1),
                dwpe0 = random(t * c, 1);
        MemorySegment out = host(new float[b * t * c]);
        cpu.embeddingForward(out, host(tokens), null, host(wte), host(wpe), b, t, c, vocab);
        CudaBackend.Ptr dtok = device(host(tokens)), dwte = device(host(wte)), dwpe = device(host(wpe)), dOut = poisoned((long) b * t * c);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_EMBEDDING_FORWARD, grid((long) b * t * c), 256, dOut, dtok, dwte, dwpe, b, t, c);
        record("embeddingForward", b + "x" + t + "x" + c, floats(out, b * t * c), download(dOut, b * t * c), TOL, t0);
        MemorySegment gte = host(dwte0), gpe = host(dwpe0);
        cpu.embeddingBackward(gte, gpe, host(dout), host(tokens), null, b, t, c);
        CudaBackend.Ptr ggte = device(host(dwte0)), ggpe = device(host(dwpe0)), gdout = device(host(dout));
        t0 = System.nanoTime();
        int[] grouping = EmbeddingGrads.grouping(tokens, b, t);
        EmbeddingGrads.backward(gpu, ggte, ggpe, gdout, device(host(grouping)), EmbeddingGrads.groups(grouping, b * t), b, t, c);
        record("embeddingBackward", b + "x" + t + "x" + c, floats(gte, vocab * c), download(ggte, vocab * c), TOL, t0);
        record("embeddingBackward.dwpe", b + "x" + t + "x" + c, floats(gpe, t * c), download(ggpe, t * c), TOL, t0);
    }

    private void classifier(int n, int v) {
        float[] logits = random(n * v, 5);
        int[] targets = new int[n];
        for (int r = 0; r < n; r++) targets[r] = rng.nextInt(v);
        if (n > 2) targets[1] = -100;
        MemorySegment hl = host(logits), losses = host(new float[n]);
        cpu.softmaxCrossEntropy(losses, hl, host(targets), n, v, -100, true, 0.5f);
        CudaBackend.Ptr dl = device(host(logits)), dt = device(host(targets)), dloss = poisoned(n);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_SOFTMAX_CROSS_ENTROPY, n, 256, dloss, dl, dt, n, v, -100, 1, 0.5f);
        record("softmaxCrossEntropy", n + "x" + v, floats(losses, n), download(dloss, n), TOL, t0);
        record("softmaxCrossEntropy.dlogits", n + "x" + v, floats(hl, n * v), download(dl, n * v), TOL, t0);
    }

    /** logsumexpRows at T = 1.5, argmaxRows and sampleRows, against the CPU kernels. */
    private void logitRows(int n, int v) {
        float[] logits = random(n * v, 5);
        float scale = (float) (1 / 1.5);
        MemorySegment hl = host(logits), lse = host(new float[n]), ids = host(new int[n]);
        cpu.logsumexpRows(lse, hl, n, v, scale);
        cpu.argmaxRows(ids, hl, n, v);
        CudaBackend.Ptr dl = device(hl), dlse = poisoned(n), dids = poisoned(n);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_LOGSUMEXP_ROWS, n, 256, dlse, dl, n, v, scale);
        record("logsumexpRows", n + "x" + v, floats(lse, n), download(dlse, n), TOL, t0);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.OPS_ARGMAX_ROWS, n, 256, dids, dl, n, v);
        float[] expected = new float[n], actual = new float[n];
        MemorySegment got = arena.allocate(4L * n, 64);
        gpu.download(got, dids.address(), 4L * n);
        for (int r = 0; r < n; r++) {
            expected[r] = ids.getAtIndex(ValueLayout.JAVA_INT, r);
            actual[r] = got.getAtIndex(ValueLayout.JAVA_INT, r);
        }
        record("argmaxRows", n + "x" + v, expected, actual, 0, t0);

        // a token drawn from each row with the same uniform numbers, over every entry and over the top 3
        double[] u = new double[n];
        for (int r = 0; r < n; r++) u[r] = rng.nextDouble();
        MemorySegment hu = arena.allocate(8L * n, 64);
        MemorySegment.copy(u, 0, hu, ValueLayout.JAVA_DOUBLE, 0, n);
        CudaBackend.Ptr du = device(hu);
        for (int topK : new int[]{0, 3}) {
            cpu.sampleRows(ids, hl, hu, n, v, 0.8, topK);
            MemorySegment sampling = arena.allocate(16, 8);
            sampling.set(ValueLayout.JAVA_DOUBLE, 0, 0.8);
            sampling.set(ValueLayout.JAVA_INT, 8, topK);
            dids = poisoned(n);
            t0 = System.nanoTime();
            gpu.launch(CudaKernel.OPS_SAMPLE_ROWS, n, 256, dids, dl, du, n, v, sampling);
            gpu.download(got, dids.address(), 4L * n);
            for (int r = 0; r < n; r++) {
                expected[r] = ids.getAtIndex(ValueLayout.JAVA_INT, r);
                actual[r] = got.getAtIndex(ValueLayout.JAVA_INT, r);
            }
            record("sampleRows", n + "x" + v + " T 0.8 top-k " + topK, expected, actual, 0, t0);
        }
    }

    /** The fused distillation loss: dense bf16 forward KL, top-k f32 tail bucket, sampled. */
    private void distill(int n, int v) {
        float[] s = random(n * v, 4), t = random(n * v, 4);
        int[] labels = new int[n];
        for (int r = 0; r < n; r++) labels[r] = rng.nextInt(v);
        DistillOptions o = DistillOptions.of(2f, 0.5f).withDivergence(Divergence.forwardKl());
        MemorySegment params = params(o, 1f);

        MemorySegment tb = arena.allocate(2L * n * v, 64);
        for (int i = 0; i < n * v; i++) DType.BF16.write(tb, i, t[i]);
        MemorySegment hs = host(s), rowCe = host(new float[n]), rowDiv = host(new float[n]);
        cpu.distillLoss(hs, hs, new TeacherTargets.Dense(tb, DType.BF16, v), host(labels), rowCe, rowDiv, n, v, o, 1f);
        CudaBackend.Ptr ds = device(host(s)), dtb = device(tb), dl = device(host(labels)), dce = poisoned(n), ddiv = poisoned(n);
        long t0 = System.nanoTime();
        gpu.launch(CudaKernel.DISTILL_DENSE_BF16, n, 256, ds, ds, dtb, dl, dce, ddiv, n, v, v, params);
        record("distillDense.bf16", n + "x" + v, floats(hs, n * v), download(ds, n * v), TOL, t0);
        record("distillDense.divergence", n + "x" + v, floats(rowDiv, n), download(ddiv, n), TOL, t0);

        int k = Math.min(v, 64);
        int[] ids = new int[n * k];
        float[] topLogits = new float[n * k], lse = new float[n];
        for (int r = 0; r < n; r++) {
            // the k largest teacher logits of the row, and the row's logsumexp at T = 2
            Integer[] order = new Integer[v];
            for (int j = 0; j < v; j++) order[j] = j;
            final int row = r;
            java.util.Arrays.sort(order, (a, b) -> Float.compare(t[row * v + b], t[row * v + a]));
            double max = t[r * v + order[0]], sum = 0;
            for (int j = 0; j < v; j++) sum += Math.exp((t[r * v + j] - max) / 2.0);
            lse[r] = (float) (max / 2.0 + Math.log(sum));
            for (int i = 0; i < k; i++) {
                ids[r * k + i] = order[i];
                topLogits[r * k + i] = t[r * v + order[i]];
            }
        }
        MemorySegment hs2 = host(s);
        cpu.distillLoss(hs2, hs2, new TeacherTargets.TopK(host(ids), host(topLogits), DType.F32, host(lse), k, v, 2f),
                host(labels), null, null, n, v, o, 1f);
        CudaBackend.Ptr ds2 = device(host(s)), dids = device(host(ids)), dtop = device(host(topLogits)), dlse = device(host(lse));
        CudaBackend.Ptr ce2 = poisoned(n), div2 = poisoned(n);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.DISTILL_TOPK_F32, n, 256, ds2, ds2, dids, dtop, dlse, dl, ce2, div2, n, v, v, k, 2f, 0, params);
        record("distillTopK.f32", n + "x" + v + " k" + k, floats(hs2, n * v), download(ds2, n * v), TOL, t0);

        int samples = 16;
        int[] sids = new int[n * samples];
        float[] weights = new float[n * samples];
        for (int i = 0; i < sids.length; i++) {
            sids[i] = rng.nextInt(v);
            weights[i] = 1f / samples;
        }
        MemorySegment hs3 = host(s);
        cpu.distillLoss(hs3, hs3, new TeacherTargets.Sampled(host(sids), host(weights), samples, v, 2f), host(labels), null, null, n, v, o, 1f);
        CudaBackend.Ptr ds3 = device(host(s)), dsid = device(host(sids)), dwt = device(host(weights));
        CudaBackend.Ptr ce3 = poisoned(n), div3 = poisoned(n);
        t0 = System.nanoTime();
        gpu.launch(CudaKernel.DISTILL_SAMPLED, n, 256, ds3, ds3, dsid, dwt, dl, ce3, div3, n, v, samples, params);
        record("distillSampled", n + "x" + v + " s" + samples, floats(hs3, n * v), download(ds3, n * v), TOL, t0);
    }

    private MemorySegment params(DistillOptions o, float gradScale) {
        return CudaKernels.distillParams(arena, o, gradScale);
    }
}
