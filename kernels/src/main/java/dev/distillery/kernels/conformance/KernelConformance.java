package dev.distillery.kernels.conformance;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.kernels.reference.ReferenceDistillLoss;
import dev.distillery.kernels.reference.ReferenceKernels;

/**
 * Runs every kernel of a {@link Kernels} implementation on fresh random inputs and compares it
 * with {@link ReferenceKernels} in float64. One suite serves the unit tests and
 * {@code trainer.jar selftest}, so both hold a backend to the same checks.
 *
 * <p>Forward outputs are poisoned with NaN before the kernel runs, so an unwritten element
 * fails the check. Backward outputs start from random values, so a kernel that overwrites instead
 * of accumulating fails too. Sizes include 1, primes and lengths that are not multiples of any
 * vector width.
 *
 * <p>Error measure: max |actual − reference| over all outputs, divided by max(|reference|, 1e-6)
 * (the error relative to the output's scale, which is what float32 can promise).
 */
public final class KernelConformance {

    /** One kernel at one size. */
    public record Result(String kernel, String size, double maxRelError, double tolerance, double millis) {
        public boolean passed() {
            return maxRelError <= tolerance; // false for NaN
        }
    }

    /** Shapes of one suite run; {@link #standard()} for tests and selftest, {@link #quick()} for smoke runs. */
    public record Sizes(int[][] gemm, int[][] rows, int[][] attention, int[] elementwise, int[][] classifier) {
        public static Sizes standard() {
            return new Sizes(
                    // one row or one column of C: small ones, and ones whose matrix is large enough for the CPU's sgemv;
                    // 2053 x 131 x 1 as a linear (c = 1) has one row of weight gradient for two threads' side-by-side half
                    new int[][]{{1, 1, 1}, {1, 37, 19}, {23, 1, 17}, {1, 1031, 131}, {1031, 1, 131}, {7, 13, 5}, {17, 31, 67}, {64, 48, 129},
                            {2053, 131, 1}},
                    new int[][]{{1, 1}, {3, 7}, {13, 67}, {31, 384}},
                    new int[][]{{1, 1, 1, 1}, {2, 5, 12, 3}, {3, 17, 20, 4}, {2, 31, 96, 3}, {1, 133, 24, 2}},
                    new int[]{1, 7, 131, 70001},
                    new int[][]{{1, 1}, {3, 11}, {5, 1009}, {4, 50257}});
        }

        public static Sizes quick() {
            return new Sizes(new int[][]{{7, 13, 5}}, new int[][]{{13, 67}}, new int[][]{{2, 5, 12, 3}},
                    new int[]{131}, new int[][]{{5, 1009}});
        }
    }

    private static final double TOL = 5e-5;
    private static final double TOL_LOOSE = 2e-4;
    /**
     * An op made of GEMMs on bf16-rounded operands against the fp32 reference: each operand is
     * off by at most 2^-9 of itself (an 8-bit significand, rounded to nearest), a product by
     * 2^-8; four times that bounds the error relative to the output's scale with room for
     * attention's softmax, which scales an error in the logits by up to the logits' size.
     */
    private static final double TOL_BF16 = 4 * 0x1p-8;

    private final Kernels kernels;
    private final SplittableRandom rng;
    private final List<Result> results = new ArrayList<>();

    private KernelConformance(Kernels kernels, long seed) {
        this.kernels = kernels;
        this.rng = new SplittableRandom(seed);
    }

    /** Runs every check at every size and returns one result each, in a stable order. */
    public static List<Result> run(Kernels kernels, long seed, Sizes sizes) {
        KernelConformance c = new KernelConformance(kernels, seed);
        for (int[] s : sizes.gemm()) {
            for (int variant = 0; variant < 4; variant++) c.gemm(variant / 2 == 1, variant % 2 == 1, s[0], s[1], s[2]);
            c.gemmStridedBatched(s[0], s[1], s[2], 3);
        }
        for (int[] s : sizes.gemm()) c.linear(s[0], s[2], s[1], false);
        for (int[] s : sizes.gemm()) c.linear(s[0], s[2], s[1], true);
        for (int[] s : sizes.gemm()) c.geluLinear(s[0], s[2], s[1]);
        // bf16 mixed precision changes the GEMMs only: they are held to a reference on
        // bf16-rounded operands above, and the ops made of GEMMs (linear, attention) to the fp32
        // reference within bf16's tolerance; every other kernel is the fp32 one (generation's
        // attentionDecode included), which the fp32 suite covers
        if (kernels.precision() == Precision.BF16) {
            for (int[] s : sizes.attention()) c.attention(s[0], s[1], s[2], s[3]);
            return List.copyOf(c.results);
        }
        for (int[] s : sizes.rows()) {
            c.embedding(s[0], s[1]);
            c.layerNorm(s[0] * s[1], s[1]);
            c.sumRows(s[0], s[1]);
        }
        for (int n : sizes.elementwise()) {
            c.gelu(n);
            c.residual(n);
            c.adamW(n);
            c.reductions(n);
        }
        for (int[] s : sizes.attention()) c.attention(s[0], s[1], s[2], s[3]);
        for (int[] s : sizes.classifier()) {
            c.softmaxCrossEntropy(s[0], s[1]);
            c.distillLoss(s[0], s[1]);
        }
        // after every other check, so those keep the inputs a seed has always given them
        for (int[] s : sizes.classifier()) c.logitRows(s[0], s[1]);
        for (int[] s : sizes.rows()) c.rmsNorm(s[0] * s[1], s[1]);
        for (int n : sizes.elementwise()) c.swiGlu(n);
        for (int[] s : sizes.attention()) c.ropeAndRepeatHeads(s[0], s[1], s[2], s[3]);
        for (int[] s : sizes.attention()) c.attentionDecode(s[0], s[1], s[2], s[3]);
        for (int[] s : sizes.rows()) c.featureDistance(s[0] * s[1], s[1]);
        for (int[] s : sizes.classifier()) c.teacherMixture(s[0], s[1]);
        return List.copyOf(c.results);
    }

    // ---------------------------------------------------------------- checks

    private void gemm(boolean transA, boolean transB, int m, int n, int k) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            int lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 1, ldc = n + 2;
            double[] a = randn((transA ? k : m) * lda), b = randn((transB ? n : k) * ldb), c = randn(m * ldc);
            double alpha = 0.75, beta = 0.5;
            MemorySegment sc = buf.floats(c);
            long t0 = System.nanoTime();
            kernels.gemm(transA, transB, m, n, k, (float) alpha, buf.floats(a), lda, buf.floats(b), ldb, (float) beta, sc, ldc);
            double ms = millis(t0);
            ReferenceKernels.gemm(transA, transB, m, n, k, alpha, operand(a), lda, operand(b), ldb, beta, c, ldc);
            record(gemmName("gemm" + (transA ? "T" : "N") + (transB ? "T" : "N")), m + "x" + n + "x" + k, buf.relativeError(c, sc, 1e-6), TOL, ms);
        }
    }

    /**
     * The size of a bias gradient's sums of n rows of dout without cancellation (√n times its
     * largest entry), the floor its error is measured against: with one output column the whole
     * check is one sum, which can land near 0 and leave fp32's rounding of its summands as a
     * large share of a small result.
     */
    private static double sumScale(double[] dout, int n) {
        return Math.max(1e-6, Math.sqrt(n) * maxAbs(dout));
    }

    /** A GEMM operand as the kernels' precision multiplies it: as given, or rounded to bf16. */
    private double[] operand(double[] x) {
        return kernels.precision() == Precision.BF16 ? ReferenceKernels.roundToBf16(x) : x;
    }

    /** The tolerance of an op made of GEMMs: {@code fp32}'s, or bf16's under bf16 operands. */
    private double composedTol(double fp32) {
        return kernels.precision() == Precision.BF16 ? TOL_BF16 : fp32;
    }

    private String gemmName(String name) {
        return kernels.precision() == Precision.BF16 ? name + ".bf16" : name;
    }

    private void gemmStridedBatched(int m, int n, int k, int batch) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            long sa = (long) m * k + 5, sb = (long) k * n + 3, scs = (long) m * n + 7;
            double[] a = randn((int) (sa * batch)), b = randn((int) (sb * batch)), c = new double[(int) (scs * batch)];
            MemorySegment outC = buf.poisoned(c.length);
            // Only the matrices are written; the gaps between them keep their poison, so compare matrices.
            long t0 = System.nanoTime();
            kernels.gemmStridedBatched(false, true, m, n, k, 1f, buf.floats(a), k, sa, buf.floats(b), k, sb,
                    0f, outC, n, scs, batch);
            double ms = millis(t0);
            double worst = 0;
            for (int i = 0; i < batch; i++) {
                double[] ci = new double[m * n];
                ReferenceKernels.gemm(false, true, m, n, k, 1, operand(slice(a, (int) (sa * i), m * k)), k,
                        operand(slice(b, (int) (sb * i), n * k)), k, 0, ci, n);
                worst = Math.max(worst, buf.relativeError(ci, outC.asSlice(4 * scs * i, 4L * m * n), 1e-6));
            }
            record(gemmName("gemmStridedBatched"), batch + "x" + m + "x" + n + "x" + k, worst, TOL, ms);
        }
    }

    /**
     * The linear (weight (c, oc), GPT-2's Conv1D layout) or, with projection, the same function in
     * nn.Linear's layout (weight (oc, c): the kernel gets the reference's weight transposed, and its
     * weight gradient is compared transposed back): the forward, the backward adding to every
     * gradient, and the backward writing a new input gradient over NaN (beta 0) with no bias.
     */
    private void linear(int n, int c, int oc, boolean projection) {
        String name = projection ? "projection" : "linear";
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] inp = randn(n * c), w = randn(c * oc), bias = randn(oc), dout = randn(n * oc);
            double[] out = new double[n * oc];
            MemorySegment sOut = buf.poisoned(out.length), sInp = buf.floats(inp), sW = buf.floats(stored(w, c, oc, projection));
            MemorySegment sB = buf.floats(bias);
            long t0 = System.nanoTime();
            if (projection) {
                kernels.projectionForward(sOut, sInp, DType.F32, sW, sB, n, c, oc);
            } else {
                kernels.linearForward(sOut, sInp, DType.F32, sW, sB, n, c, oc);
            }
            double ms = millis(t0);
            // the reference multiplies the operands the kernel's GEMMs multiply (bf16-rounded under bf16) and adds
            // what it adds in fp32 (bias, initial gradients) as given: at a single output, rounding the operands
            // but not the reference would leave a product's rounding measured against a sum that can cancel
            ReferenceKernels.linearForward(out, operand(inp), operand(w), bias, n, c, oc);
            record(gemmName(name + "Forward"), n + "x" + c + "->" + oc, buf.relativeError(out, sOut, 1e-6), composedTol(TOL), ms);

            double[] dinp = randn(n * c), dw = randn(c * oc), db = randn(oc);
            MemorySegment sDinp = buf.floats(dinp), sDw = buf.floats(stored(dw, c, oc, projection)), sDb = buf.floats(db);
            t0 = System.nanoTime();
            backward(projection, sDinp, 1f, sDw, sDb, buf.floats(dout), sInp, sW, n, c, oc);
            ms = millis(t0);
            ReferenceKernels.linearBackward(dinp, dw, null, operand(dout), operand(inp), operand(w), n, c, oc);
            for (int r = 0; r < n; r++) for (int o = 0; o < oc; o++) db[o] += dout[r * oc + o];   // the bias sum, of dout as given
            record(gemmName(name + "Backward"), n + "x" + c + "->" + oc,
                    Math.max(buf.relativeError(dinp, sDinp, 1e-6), Math.max(buf.relativeError(stored(dw, c, oc, projection), sDw, 1e-6),
                            buf.relativeError(db, sDb, sumScale(dout, n)))),
                    composedTol(TOL), ms);

            // a new input gradient, written over NaN (beta 0), no bias
            double[] fresh = new double[n * c], dw2 = randn(c * oc);
            MemorySegment sFresh = buf.poisoned(n * c), sDw2 = buf.floats(stored(dw2, c, oc, projection));
            t0 = System.nanoTime();
            backward(projection, sFresh, 0f, sDw2, null, buf.floats(dout), sInp, sW, n, c, oc);
            ms = millis(t0);
            ReferenceKernels.linearBackward(fresh, dw2, null, operand(dout), operand(inp), operand(w), n, c, oc);
            record(gemmName(name + "Backward.new"), n + "x" + c + "->" + oc,
                    Math.max(buf.relativeError(fresh, sFresh, 1e-6), buf.relativeError(stored(dw2, c, oc, projection), sDw2, 1e-6)),
                    composedTol(TOL), ms);
        }
    }

    /** {@code Kernels.projectionBackward} with projection, else {@code linearBackward}. */
    private void backward(boolean projection, MemorySegment dinp, float beta, MemorySegment dw, MemorySegment db, MemorySegment dout,
                          MemorySegment inp, MemorySegment w, int n, int c, int oc) {
        if (projection) {
            kernels.projectionBackward(dinp, beta, dw, db, dout, inp, DType.F32, w, n, c, oc);
        } else {
            kernels.linearBackward(dinp, beta, dw, db, dout, inp, DType.F32, w, n, c, oc);
        }
    }

    /** A (c, oc) weight (or its gradient) as the kernel stores it: as it is, or (oc, c) for a projection. */
    private static double[] stored(double[] w, int c, int oc, boolean projection) {
        return projection ? transpose(w, c, oc) : w;
    }

    /** The (cols, rows) transpose of a row-major (rows, cols) matrix. */
    private static double[] transpose(double[] x, int rows, int cols) {
        double[] t = new double[x.length];
        for (int r = 0; r < rows; r++) for (int j = 0; j < cols; j++) t[j * rows + r] = x[r * cols + j];
        return t;
    }

    private void sumRows(int n, int c) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] x = randn(n * c), acc = randn(c);
            MemorySegment sAcc = buf.floats(acc);
            long t0 = System.nanoTime();
            kernels.sumRows(sAcc, buf.floats(x), n, c);
            double ms = millis(t0);
            for (int r = 0; r < n; r++) for (int j = 0; j < c; j++) acc[j] += x[r * c + j];
            record("sumRows", n + "x" + c, buf.relativeError(acc, sAcc, 1e-6), TOL, ms);
        }
    }

    /** The embedding with its ids read where the kernels compute (host copy null) and from a host copy of them. */
    private void embedding(int rows, int c) {
        embedding(rows, c, false);
        embedding(rows, c, true);
    }

    private void embedding(int rows, int c, boolean hostCopy) {
        int t = Math.max(1, rows / 2 + 1), b = Math.max(1, rows / t), vocab = 2 * rows + 3;
        String how = hostCopy ? " (host ids)" : "";
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            int[] tokens = new int[b * t];
            for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(vocab);
            tokens[0] = tokens.length > 1 ? tokens[tokens.length - 1] : tokens[0]; // a repeated id exercises the scatter-add
            double[] wte = randn(vocab * c), wpe = randn(t * c), out = new double[b * t * c], dout = randn(b * t * c);
            MemorySegment sTok = buf.ints(tokens), sOut = buf.poisoned(out.length);
            MemorySegment hostTok = hostCopy ? arena.allocateFrom(ValueLayout.JAVA_INT, tokens) : null;
            long t0 = System.nanoTime();
            kernels.embeddingForward(sOut, sTok, hostTok, buf.floats(wte), buf.floats(wpe), b, t, c, vocab);
            double ms = millis(t0);
            ReferenceKernels.embeddingForward(out, tokens, wte, wpe, b, t, c);
            record("embeddingForward" + how, b + "x" + t + "x" + c, buf.relativeError(out, sOut, 1e-6), TOL, ms);

            double[] dwte = randn(vocab * c), dwpe = randn(t * c);
            MemorySegment sDwte = buf.floats(dwte), sDwpe = buf.floats(dwpe);
            t0 = System.nanoTime();
            kernels.embeddingBackward(sDwte, sDwpe, buf.floats(dout), sTok, hostTok, b, t, c);
            ms = millis(t0);
            ReferenceKernels.embeddingBackward(dwte, dwpe, dout, tokens, b, t, c);
            record("embeddingBackward" + how, b + "x" + t + "x" + c, Math.max(buf.relativeError(dwte, sDwte, 1e-6), buf.relativeError(dwpe, sDwpe, 1e-6)), TOL, ms);
        }
    }

    private void layerNorm(int n, int c) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] inp = randn(n * c), w = randn(c), b = randn(c), dout = randn(n * c);
            for (int i = 0; i < inp.length; i++) inp[i] = 3 * inp[i] + 1.5; // an offset mean exercises the centring
            double[] out = new double[n * c], mean = new double[n], rstd = new double[n];
            MemorySegment sOut = buf.poisoned(out.length), sMean = buf.poisoned(n), sRstd = buf.poisoned(n);
            MemorySegment sInp = buf.floats(inp), sW = buf.floats(w);
            long t0 = System.nanoTime();
            kernels.layerNormForward(sOut, DType.F32, sMean, sRstd, sInp, sW, buf.floats(b), n, c);
            double ms = millis(t0);
            ReferenceKernels.layerNormForward(out, mean, rstd, inp, w, b, n, c);
            record("layerNormForward", n + "x" + c,
                    Math.max(buf.relativeError(out, sOut, 1e-6), Math.max(buf.relativeError(mean, sMean, 1e-6), buf.relativeError(rstd, sRstd, 1e-6))), TOL, ms);

            double[] dinp = randn(n * c), dw = randn(c), db = randn(c);
            MemorySegment sDinp = buf.floats(dinp), sDw = buf.floats(dw), sDb = buf.floats(db);
            t0 = System.nanoTime();
            kernels.layerNormBackward(sDinp, sDw, sDb, buf.floats(dout), sInp, sW, sMean, sRstd, n, c);
            ms = millis(t0);
            ReferenceKernels.layerNormBackward(dinp, dw, db, dout, inp, w, mean, rstd, n, c);
            record("layerNormBackward", n + "x" + c,
                    Math.max(buf.relativeError(dinp, sDinp, 1e-6), Math.max(buf.relativeError(dw, sDw, 1e-6), buf.relativeError(db, sDb, 1e-6))), TOL_LOOSE, ms);
        }
    }

    private void rmsNorm(int n, int c) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] inp = randn(n * c), w = randn(c), dout = randn(n * c), out = new double[n * c], rstd = new double[n];
            for (int i = 0; i < inp.length; i++) inp[i] = 3 * inp[i] + 1.5; // no centring: an offset changes the scale
            MemorySegment sOut = buf.poisoned(out.length), sRstd = buf.poisoned(n), sInp = buf.floats(inp), sW = buf.floats(w);
            long t0 = System.nanoTime();
            kernels.rmsNormForward(sOut, DType.F32, sRstd, sInp, sW, n, c, 1e-6f);
            double ms = millis(t0);
            ReferenceKernels.rmsNormForward(out, rstd, inp, w, n, c, 1e-6);
            record("rmsNormForward", n + "x" + c, Math.max(buf.relativeError(out, sOut, 1e-6), buf.relativeError(rstd, sRstd, 1e-6)), TOL, ms);

            double[] dinp = randn(n * c), dw = randn(c);
            MemorySegment sDinp = buf.floats(dinp), sDw = buf.floats(dw);
            t0 = System.nanoTime();
            kernels.rmsNormBackward(sDinp, sDw, buf.floats(dout), sInp, sW, sRstd, n, c);
            ms = millis(t0);
            ReferenceKernels.rmsNormBackward(dinp, dw, dout, inp, w, rstd, n, c);
            record("rmsNormBackward", n + "x" + c, Math.max(buf.relativeError(dinp, sDinp, 1e-6), buf.relativeError(dw, sDw, 1e-6)), TOL_LOOSE, ms);
        }
    }

    private void swiGlu(int n) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] gate = randn(n), up = randn(n), out = new double[n], dout = randn(n), dgate = randn(n), dup = randn(n);
            for (int i = 0; i < n; i++) gate[i] *= 4;
            MemorySegment sOut = buf.poisoned(n), sGate = buf.floats(gate), sUp = buf.floats(up), sDgate = buf.floats(dgate), sDup = buf.floats(dup);
            long t0 = System.nanoTime();
            kernels.swiGluForward(sOut, DType.F32, sGate, sUp, n);
            double ms = millis(t0);
            ReferenceKernels.swiGluForward(out, gate, up, n);
            record("swiGluForward", String.valueOf(n), buf.relativeError(out, sOut, 1e-6), TOL, ms);
            // relative to the summands' scale, as for GELU: the accumulation may nearly cancel
            double scale = Math.max(Math.max(maxAbs(dgate), maxAbs(dup)), maxAbs(dout) * maxAbs(up) * 1.1);
            t0 = System.nanoTime();
            kernels.swiGluBackward(sDgate, sDup, buf.floats(dout), sGate, sUp, n);
            ms = millis(t0);
            ReferenceKernels.swiGluBackward(dgate, dup, dout, gate, up, n);
            record("swiGluBackward", String.valueOf(n), Math.max(buf.relativeError(dgate, sDgate, scale), buf.relativeError(dup, sDup, scale)), TOL, ms);
        }
    }

    /** RoPE on the q and k heads inside a qkv-shaped row, and k heads repeated for groups of q heads. */
    private void ropeAndRepeatHeads(int b, int t, int c, int nh) {
        int hs = c / nh;
        if (hs % 2 != 0) return;   // rotary pairs need an even head size
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            int stride = 3 * c, pairs = hs / 2;
            double[] x = randn(b * t * stride), cosSin = new double[t * pairs * 2], dout = randn(b * t * stride), dinp = randn(b * t * stride);
            for (int i = 0; i < t * pairs; i++) {
                double angle = rng.nextDouble() * 2 * Math.PI;
                cosSin[2 * i] = Math.cos(angle);
                cosSin[2 * i + 1] = Math.sin(angle);
            }
            double[] out = x.clone();
            MemorySegment sOut = buf.floats(x), sCs = buf.floats(cosSin);
            long t0 = System.nanoTime();
            kernels.ropeForward(sOut, sOut, sCs, b, t, 2 * nh, hs, stride, 0);   // in place, q and k heads together
            double ms = millis(t0);
            ReferenceKernels.ropeForward(out, x, cosSin, b, t, 2 * nh, hs, stride, 0);
            record("ropeForward", b + "x" + t + "x" + c + "/" + nh, buf.relativeError(out, sOut, 1e-6), TOL, ms);
            MemorySegment sDinp = buf.floats(dinp);
            t0 = System.nanoTime();
            kernels.ropeBackward(sDinp, buf.floats(dout), sCs, b, t, 2 * nh, hs, stride, 0);
            ms = millis(t0);
            ReferenceKernels.ropeBackward(dinp, dout, cosSin, b, t, 2 * nh, hs, stride, 0);
            record("ropeBackward", b + "x" + t + "x" + c + "/" + nh, buf.relativeError(dinp, sDinp, 1e-6), TOL, ms);

            // k (and v) with nh / group heads, repeated into the k part of a qkv row; group = nh when nh is odd
            int group = nh % 2 == 0 ? 2 : nh, kv = nh / group, rows = b * t, kvStride = kv * hs + 1;
            double[] k = randn(rows * kvStride), qkv = new double[rows * stride], dk = randn(rows * kvStride), dqkv = randn(rows * stride);
            MemorySegment sQkv = buf.poisoned(qkv.length), sK = buf.floats(k), sDk = buf.floats(dk);
            // the k part of each row (c floats) is written; the rest stays poisoned and is not compared
            t0 = System.nanoTime();
            kernels.repeatHeadsForward(sQkv, stride, c, sK, kvStride, 1, rows, kv, group, hs);
            ms = millis(t0);
            ReferenceKernels.repeatHeadsForward(qkv, stride, c, k, kvStride, 1, rows, kv, group, hs);
            double[] all = buf.read(sQkv, qkv.length), written = new double[rows * c], expected = new double[rows * c];
            for (int r = 0; r < rows; r++) {
                for (int i = 0; i < c; i++) {
                    written[r * c + i] = all[r * stride + c + i];
                    expected[r * c + i] = qkv[r * stride + c + i];
                }
            }
            record("repeatHeadsForward", rows + "x" + kv + "x" + group + "x" + hs, relative(expected, written), TOL, ms);
            t0 = System.nanoTime();
            kernels.repeatHeadsBackward(sDk, kvStride, 1, buf.floats(dqkv), stride, c, rows, kv, group, hs);
            ms = millis(t0);
            ReferenceKernels.repeatHeadsBackward(dk, kvStride, 1, dqkv, stride, c, rows, kv, group, hs);
            record("repeatHeadsBackward", rows + "x" + kv + "x" + group + "x" + hs, buf.relativeError(dk, sDk, 1e-6), TOL, ms);
        }
    }

    /** max |e − a| / max(1e-6, max |e|), with NaN as an error of infinity. */
    private static double relative(double[] expected, double[] actual) {
        double scale = Math.max(1e-6, maxAbs(expected)), worst = 0;
        for (int i = 0; i < expected.length; i++) {
            double e = Math.abs(expected[i] - actual[i]) / scale;
            if (!(e <= worst)) worst = Double.isNaN(e) ? Double.POSITIVE_INFINITY : e;
        }
        return worst;
    }

    /**
     * geluLinearBackward: gelu(inp) made again into scratch (as the GEMMs read it: bf16 under bf16),
     * the linear's gradients from it, GELU's gradient added to dinp; then written over NaN (dinpBeta
     * 0), and with no input gradient.
     */
    private void geluLinear(int n, int c, int oc) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] inp = randn(n * c), w = randn(c * oc), dout = randn(n * oc);
            for (int i = 0; i < inp.length; i++) inp[i] *= 3;
            double[] dinp = randn(n * c), dw = randn(c * oc), db = randn(oc), dw2 = randn(c * oc);
            DType geluType = kernels.precision() == Precision.BF16 ? DType.BF16 : DType.F32;
            MemorySegment sInp = buf.floats(inp), sW = buf.floats(w), sDout = buf.floats(dout);
            MemorySegment sDinp = buf.floats(dinp), sDw = buf.floats(dw), sDb = buf.floats(db), sDw2 = buf.floats(dw2);
            long t0 = System.nanoTime();
            kernels.geluLinearBackward(sDinp, 1f, sDw, sDb, sDout, sInp, sW, buf.poisoned(n * c), geluType, buf.poisoned(n * c), n, c, oc);
            double ms = millis(t0);
            double[] g = new double[n * c], dg = new double[n * c];
            ReferenceKernels.geluForward(g, inp, n * c);
            double[] gOperand = operand(g), dwBefore = dw2.clone();
            // dw += gelu(inp)ᵀ dout, measured against its summands' scale as dinp is: gelu(inp) carries the
            // fp32 GELU's own error, which a gradient and a product that nearly cancel (one output) would magnify
            double[] product = new double[c * oc];
            ReferenceKernels.linearBackward(new double[n * c], product, null, operand(dout), gOperand, operand(w), n, c, oc);
            double productScale = maxAbs(product), dwScale = Math.max(productScale, maxAbs(dw));
            ReferenceKernels.linearBackward(dg, dw, null, operand(dout), gOperand, operand(w), n, c, oc);
            for (int r = 0; r < n; r++) for (int o = 0; o < oc; o++) db[o] += dout[r * oc + o];
            // relative to the summands' scale, as geluBackward's check: dinp += gelu'(x) dg may nearly cancel
            double scale = Math.max(maxAbs(dinp), maxAbs(dg));
            ReferenceKernels.geluBackward(dinp, inp, dg, n * c);
            record(gemmName("geluLinearBackward"), n + "x" + c + "->" + oc,
                    Math.max(buf.relativeError(dinp, sDinp, scale), Math.max(buf.relativeError(dw, sDw, dwScale), buf.relativeError(db, sDb, sumScale(dout, n)))),
                    composedTol(TOL), ms);

            MemorySegment sFresh = buf.poisoned(n * c);
            t0 = System.nanoTime();
            kernels.geluLinearBackward(sFresh, 0f, sDw2, null, sDout, sInp, sW, buf.poisoned(n * c), geluType, buf.poisoned(n * c), n, c, oc);
            ms = millis(t0);
            double[] fresh = new double[n * c];
            ReferenceKernels.geluBackward(fresh, inp, dg, n * c);
            double dw2Scale = Math.max(productScale, maxAbs(dwBefore));
            ReferenceKernels.linearBackward(new double[n * c], dwBefore, null, operand(dout), gOperand, operand(w), n, c, oc);
            // against dg's scale, not the result's own: gelu'(x) crosses zero (x near -0.75), where its
            // fp32 value is off by a few ulps of its summands, so a lone element near there (1 x 1) read
            // as a large error relative to itself
            record(gemmName("geluLinearBackward.new"), n + "x" + c + "->" + oc,
                    Math.max(buf.relativeError(fresh, sFresh, Math.max(1e-6, maxAbs(dg))), buf.relativeError(dwBefore, sDw2, dw2Scale)),
                    composedTol(TOL), ms);

            double[] dw3 = randn(c * oc), dw3Before = dw3.clone();
            MemorySegment sDw3 = buf.floats(dw3);
            t0 = System.nanoTime();
            kernels.geluLinearBackward(null, 1f, sDw3, null, sDout, sInp, sW, buf.poisoned(n * c), geluType, buf.poisoned(n * c), n, c, oc);
            ms = millis(t0);
            double dw3Scale = Math.max(productScale, maxAbs(dw3Before));
            ReferenceKernels.linearBackward(new double[n * c], dw3Before, null, operand(dout), gOperand, operand(w), n, c, oc);
            record(gemmName("geluLinearBackward.noInput"), n + "x" + c + "->" + oc, buf.relativeError(dw3Before, sDw3, dw3Scale),
                    composedTol(TOL), ms);
        }
    }

    private void gelu(int n) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] inp = randn(n), out = new double[n], dout = randn(n), dinp = randn(n);
            for (int i = 0; i < n; i++) inp[i] *= 3;
            MemorySegment sOut = buf.poisoned(n), sInp = buf.floats(inp), sDinp = buf.floats(dinp);
            long t0 = System.nanoTime();
            kernels.geluForward(sOut, DType.F32, sInp, n);
            double ms = millis(t0);
            ReferenceKernels.geluForward(out, inp, n);
            record("geluForward", String.valueOf(n), buf.relativeError(out, sOut, 1e-6), TOL, ms);
            t0 = System.nanoTime();
            kernels.geluBackward(sDinp, sInp, buf.floats(dout), n);
            ms = millis(t0);
            // relative to the summands' scale: dinp += dout · gelu'(x) may nearly cancel (a
            // one-element check then failed now and then, seed 45948273411146)
            double scale = Math.max(maxAbs(dinp), maxAbs(dout));
            ReferenceKernels.geluBackward(dinp, inp, dout, n);
            record("geluBackward", String.valueOf(n), buf.relativeError(dinp, sDinp, scale), TOL, ms);
        }
    }

    private void residual(int n) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] a = randn(n), b = randn(n), out = new double[n], dst = randn(n);
            MemorySegment sOut = buf.poisoned(n), sDst = buf.floats(dst), sA = buf.floats(a);
            long t0 = System.nanoTime();
            kernels.residualForward(sOut, sA, buf.floats(b), n);
            double ms = millis(t0);
            for (int i = 0; i < n; i++) out[i] = a[i] + b[i];
            record("residualForward", String.valueOf(n), buf.relativeError(out, sOut, 1e-6), TOL, ms);
            t0 = System.nanoTime();
            kernels.accumulate(sDst, sA, n);
            ms = millis(t0);
            for (int i = 0; i < n; i++) dst[i] += a[i];
            record("accumulate", String.valueOf(n), buf.relativeError(dst, sDst, 1e-6), TOL, ms);
        }
    }

    private void adamW(int n) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] p = randn(n), g = randn(n), m = randn(n), v = randn(n);
            for (int i = 0; i < n; i++) {
                v[i] = Math.abs(v[i]);
                m[i] *= 0.1;
            }
            MemorySegment sp = buf.floats(p), sm = buf.floats(m), sv = buf.floats(v);
            long t0 = System.nanoTime();
            kernels.adamW(sp, buf.floats(g), sm, sv, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 7);
            double ms = millis(t0);
            // errors relative to the inputs' scale: an update that nearly cancels a parameter (or
            // a moment) leaves a tiny result whose fp32 rounding error is relative to the input,
            // and a one-element check would otherwise fail on it now and then (seed 45797918911457)
            double pScale = maxAbs(p), mScale = Math.max(maxAbs(m), 0.1 * maxAbs(g));
            ReferenceKernels.adamW(p, g, m, v, 1e-2, 0.9, 0.95, 1e-8, 0.1, 7);
            record("adamW", String.valueOf(n), Math.max(buf.relativeError(p, sp, pScale),
                    Math.max(buf.relativeError(m, sm, mScale), buf.relativeError(v, sv, 1e-6))), TOL, ms);
            adamWSpans(buf, p, g, m, v);
        }
    }

    /**
     * The whole block at once, with a clipping factor: two spans with different weight decays and
     * an element between them that belongs to neither must give the bits of scaling the gradients
     * and then one {@code adamW} per span (and leave that element alone). Error: the share of
     * elements whose bits differ.
     */
    private void adamWSpans(KernelBuffers buf, double[] p, double[] g, double[] m, double[] v) {
        int n = p.length, first = n / 2;
        ParameterSpans spans = new ParameterSpans(new long[]{0, first + 1}, new long[]{first, Math.max(0, n - first - 1)}, new float[]{0.1f, 0f});
        MemorySegment bp = buf.floats(p), bg = buf.floats(g), bm = buf.floats(m), bv = buf.floats(v);
        MemorySegment ep = buf.floats(p), eg = buf.floats(g), em = buf.floats(m), ev = buf.floats(v);
        long t0 = System.nanoTime();
        kernels.adamWSpans(bp, bg, bm, bv, spans, 0.37f, 3e-3f, 0.9f, 0.999f, 1e-8f, 2);
        double ms = millis(t0);
        kernels.scale(eg, 0.37f, n);
        for (int i = 0; i < spans.count(); i++) {
            long at = 4 * spans.offset(i), len = 4 * spans.length(i);
            kernels.adamW(ep.asSlice(at, len), eg.asSlice(at, len), em.asSlice(at, len), ev.asSlice(at, len), spans.length(i), 3e-3f, 0.9f,
                    0.999f, 1e-8f, spans.weightDecay(i), 2);
        }
        long differ = 0;
        for (MemorySegment[] pair : new MemorySegment[][]{{ep, bp}, {em, bm}, {ev, bv}}) {
            double[] want = buf.read(pair[0], n), got = buf.read(pair[1], n);
            for (int i = 0; i < n; i++) if (Double.doubleToRawLongBits(want[i]) != Double.doubleToRawLongBits(got[i])) differ++;
        }
        record("adamWSpans", String.valueOf(n), (double) differ / (3.0 * Math.max(1, n)), 0, ms);
    }

    private static double maxAbs(double[] x) {
        double m = 0;
        for (double e : x) m = Math.max(m, Math.abs(e));
        return m;
    }

    private void reductions(int n) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] x = randn(n);
            MemorySegment sx = buf.floats(x);
            long t0 = System.nanoTime();
            double sq = kernels.sumOfSquares(sx, n);
            double ms = millis(t0);
            double ref = ReferenceKernels.sumOfSquares(x);
            record("sumOfSquares", String.valueOf(n), Math.abs(sq - ref) / Math.max(ref, 1e-6), TOL, ms);
            t0 = System.nanoTime();
            kernels.scale(sx, 0.37f, n);
            ms = millis(t0);
            for (int i = 0; i < n; i++) x[i] *= 0.37f;
            record("scale", String.valueOf(n), buf.relativeError(x, sx, 1e-6), TOL, ms);
            MemorySegment filled = buf.poisoned(n);
            t0 = System.nanoTime();
            kernels.fill(filled, 2.5f, n);
            ms = millis(t0);
            double[] expect = new double[n];
            Arrays.fill(expect, 2.5);
            record("fill", String.valueOf(n), buf.relativeError(expect, filled, 1e-6), TOL, ms);
            // n floats into a longer poisoned buffer: every one arrives as it was (error 0) and nothing past them is written
            MemorySegment copied = buf.poisoned(n + 16);
            t0 = System.nanoTime();
            kernels.copy(copied, sx, 4L * n);
            ms = millis(t0);
            double[] after = buf.read(copied, n + 16);
            boolean tailKept = java.util.stream.IntStream.range(n, n + 16).allMatch(i -> Double.isNaN(after[i]));
            record("copy", String.valueOf(n), tailKept ? buf.relativeError(buf.read(sx, n), copied, 1e-6) : Double.POSITIVE_INFINITY, TOL, ms);
        }
    }

    private void attention(int b, int t, int c, int nh) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] qkv = randn(b * t * 3 * c), out = new double[b * t * c], att = new double[b * nh * t * t];
            double[] dout = randn(b * t * c), dqkv = randn(qkv.length), dqkv0 = dqkv.clone();
            MemorySegment sOut = buf.poisoned(out.length), sAtt = buf.poisoned(att.length), sQkv = buf.floats(qkv);
            long t0 = System.nanoTime();
            kernels.attentionForward(sOut, DType.F32, sAtt, sQkv, b, t, c, nh);
            double ms = millis(t0);
            ReferenceKernels.attentionForward(out, att, qkv, b, t, c, nh);
            String size = b + "x" + t + "x" + c + "/" + nh;
            record(gemmName("attentionForward"), size, Math.max(buf.relativeError(out, sOut, 1e-6), buf.relativeError(att, sAtt, 1e-6)),
                    composedTol(TOL), ms);
            // no probabilities kept: the output made in bands of rows
            MemorySegment sBanded = buf.poisoned(out.length);
            t0 = System.nanoTime();
            kernels.attentionForward(sBanded, DType.F32, null, sQkv, b, t, c, nh);
            ms = millis(t0);
            record(gemmName("attentionForward.inBands"), size, buf.relativeError(out, sBanded, 1e-6), composedTol(TOL), ms);
            MemorySegment sDqkv = buf.floats(dqkv);
            t0 = System.nanoTime();
            kernels.attentionBackward(sDqkv, 1f, buf.poisoned(att.length), buf.floats(dout), sQkv, sAtt, b, t, c, nh);
            ms = millis(t0);
            ReferenceKernels.attentionBackward(dqkv, dout, qkv, att, b, t, c, nh);
            record(gemmName("attentionBackward"), size, buf.relativeError(dqkv, sDqkv, 1e-6), composedTol(TOL_LOOSE), ms);
            // a new gradient written over NaN (dqkvBeta 0)
            double[] fresh = new double[qkv.length];
            MemorySegment sFresh = buf.poisoned(qkv.length);
            t0 = System.nanoTime();
            kernels.attentionBackward(sFresh, 0f, buf.poisoned(att.length), buf.floats(dout), sQkv, sAtt, b, t, c, nh);
            ms = millis(t0);
            ReferenceKernels.attentionBackward(fresh, dout, qkv, att, b, t, c, nh);
            record(gemmName("attentionBackward.new"), size, buf.relativeError(fresh, sFresh, 1e-6), composedTol(TOL_LOOSE), ms);
            // the probabilities and their gradient made a band of rows at a time: added, and written over NaN
            MemorySegment sBands = buf.floats(dqkv0);
            t0 = System.nanoTime();
            kernels.attentionBackwardInBands(sBands, 1f, buf.floats(dout), sQkv, b, t, c, nh);
            ms = millis(t0);
            record(gemmName("attentionBackwardInBands"), size, buf.relativeError(dqkv, sBands, 1e-6), composedTol(TOL_LOOSE), ms);
            MemorySegment sBandsFresh = buf.poisoned(qkv.length);
            t0 = System.nanoTime();
            kernels.attentionBackwardInBands(sBandsFresh, 0f, buf.floats(dout), sQkv, b, t, c, nh);
            ms = millis(t0);
            record(gemmName("attentionBackwardInBands.new"), size, buf.relativeError(fresh, sBandsFresh, 1e-6), composedTol(TOL_LOOSE), ms);
        }
    }

    /** One query row per sequence over len = t − 1 of t cached rows, plain and grouped (kv heads = nh / 2 where nh is even). */
    private void attentionDecode(int b, int t, int c, int nh) {
        int hs = c / nh;
        for (int kvh : nh % 2 == 0 ? new int[]{nh, nh / 2} : new int[]{nh}) {
            try (Arena arena = Arena.ofShared()) {
                KernelBuffers buf = new KernelBuffers(kernels, arena);
                int len = Math.max(1, t - 1);
                double[] q = randn(b * nh * hs), keys = randn(b * t * kvh * hs), values = randn(b * t * kvh * hs), out = new double[b * nh * hs];
                MemorySegment sOut = buf.poisoned(out.length);
                long t0 = System.nanoTime();
                kernels.attentionDecode(sOut, buf.poisoned(b * nh * t), buf.floats(q), buf.floats(keys), buf.floats(values), b, len, t, nh, kvh, hs);
                double ms = millis(t0);
                ReferenceKernels.attentionDecode(out, q, keys, values, b, len, t, nh, kvh, hs);
                record("attentionDecode", b + "x" + len + "/" + t + "x" + c + "/" + nh + ":" + kvh, buf.relativeError(out, sOut, 1e-6), TOL, ms);
            }
        }
    }

    /**
     * Both feature distances, teacher rows in fp32 and bf16 (the reference reads the bf16-rounded
     * values), one row all zeros (the cosine's ε floor), loss and accumulated gradient.
     */
    private void featureDistance(int n, int d) {
        for (FeatureDistance distance : FeatureDistance.values()) {
            for (DType type : new DType[]{DType.F32, DType.BF16}) {
                try (Arena arena = Arena.ofShared()) {
                    KernelBuffers buf = new KernelBuffers(kernels, arena);
                    double[] s = randn(n * d), t = randn(n * d), grad = randn(n * d), loss = new double[n];
                    if (n > 1) Arrays.fill(s, d, 2 * d, 0.0);
                    MemorySegment hostT = typed(arena, t, type, t);
                    MemorySegment sLoss = buf.poisoned(n), sGrad = buf.floats(grad);
                    float scale = 0.75f;
                    long t0 = System.nanoTime();
                    kernels.featureDistance(distance, sLoss, sGrad, buf.floats(s), buf.place(hostT), type, n, d, scale);
                    double ms = millis(t0);
                    ReferenceKernels.featureDistance(distance, loss, grad, s, t, n, d, scale);
                    record("featureDistance." + distance.name().toLowerCase(java.util.Locale.ROOT) + "." + type.name().toLowerCase(java.util.Locale.ROOT),
                            n + "x" + d, Math.max(buf.relativeError(loss, sLoss, 1e-6), buf.relativeError(grad, sGrad, 1e-6)), TOL, ms);
                }
            }
        }
    }

    /**
     * The fused loss against a mixture of three dense teachers (fp32, bf16, fp16; weights 0.2,
     * 0.5, 0.3; one −inf logit in the first), each divergence: forward KL with a hard label at
     * T = 2, reverse KL at T = 1.5, JSD(0.3) at T = 1. The student vocabulary is the teachers'
     * plus 3 padding columns.
     */
    private void teacherMixture(int n, int vt) {
        int v = vt + 3;
        DType[] types = {DType.F32, DType.BF16, DType.F16};
        float[] weights = {0.2f, 0.5f, 0.3f};
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] s = randn(n * v);
            int[] labels = new int[n];
            for (int r = 0; r < n; r++) labels[r] = rng.nextInt(v);
            if (n > 2) labels[1] = -100;
            List<TeacherTargets.Dense> teachers = new ArrayList<>();
            List<ReferenceDistillLoss.Dense> references = new ArrayList<>();
            for (DType type : types) {
                double[] t = randn(n * vt);
                for (int i = 0; i < t.length; i++) t[i] *= 3;
                if (type == DType.F32 && vt > 1) t[0] = Double.NEGATIVE_INFINITY;
                double[] rounded = new double[t.length];
                MemorySegment tl = typed(arena, t, type, rounded);
                teachers.add(new TeacherTargets.Dense(buf.place(tl), type, vt));
                references.add(new ReferenceDistillLoss.Dense(rounded, vt));
            }
            double[] w = new double[weights.length];
            for (int i = 0; i < w.length; i++) w[i] = weights[i];
            TeacherTargets.Mixture mixture = new TeacherTargets.Mixture(teachers, weights);
            ReferenceDistillLoss.Mixture reference = new ReferenceDistillLoss.Mixture(references, w);
            String size = n + "x" + v + " x3";
            distillCheck(buf, "distill mixture fkl", size, s, labels, mixture, reference, n, v, DistillOptions.of(2f, 0.3f));
            distillCheck(buf, "distill mixture rkl", size, s, labels, mixture, reference, n, v,
                    DistillOptions.of(1.5f, 0f).withDivergence(Divergence.reverseKl()));
            distillCheck(buf, "distill mixture jsd", size, s, labels, mixture, reference, n, v,
                    DistillOptions.of(1f, 0.5f).withDivergence(Divergence.jsd(0.3)));
        }
    }

    private void softmaxCrossEntropy(int n, int v) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] logits = randn(n * v);
            for (int i = 0; i < logits.length; i++) logits[i] *= 4;
            int[] targets = new int[n];
            for (int i = 0; i < n; i++) targets[i] = rng.nextInt(v);
            if (n > 2) targets[1] = -100; // an ignored row
            int valid = 0;
            for (int target : targets) if (target != -100) valid++;
            double scale = valid == 0 ? 0 : 1.0 / valid;
            double[] dlogits = new double[n * v];
            double[] losses = ReferenceKernels.softmaxCrossEntropy(logits, targets, n, v, -100, dlogits, scale);
            MemorySegment sLogits = buf.floats(logits), sLosses = buf.poisoned(n);
            long t0 = System.nanoTime();
            int counted = kernels.softmaxCrossEntropy(sLosses, sLogits, buf.ints(targets), n, v, -100, true, (float) scale);
            double ms = millis(t0);
            double err = Math.max(buf.relativeError(losses, sLosses, 1e-6), buf.relativeError(dlogits, sLogits, 1e-6));
            if (counted != valid) err = Double.POSITIVE_INFINITY;
            record("softmaxCrossEntropy", n + "x" + v, err, TOL, ms);
            // the rows-only call (the chunked LM head's), whose caller counts and checks the targets
            MemorySegment rLogits = buf.floats(logits), rLosses = buf.poisoned(n);
            t0 = System.nanoTime();
            kernels.softmaxCrossEntropyRows(rLosses, rLogits, buf.ints(targets), n, v, -100, true, (float) scale);
            ms = millis(t0);
            record("softmaxCrossEntropy rows", n + "x" + v,
                    Math.max(buf.relativeError(losses, rLosses, 1e-6), buf.relativeError(dlogits, rLogits, 1e-6)), TOL, ms);
        }
    }

    /**
     * logsumexpRows at T = 1.5, argmaxRows and sampleRows, on logits with a tie (the first index
     * wins), a NaN (never wins) and a row of −inf (index 0) where there are rows for them.
     */
    private void logitRows(int n, int v) {
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] logits = randn(n * v);
            for (int i = 0; i < logits.length; i++) logits[i] *= 4;
            float scale = (float) (1 / 1.5);
            MemorySegment sLogits = buf.floats(logits), sLse = buf.poisoned(n);
            long t0 = System.nanoTime();
            kernels.logsumexpRows(sLse, sLogits, n, v, scale);
            double ms = millis(t0);
            double[] rounded = new double[logits.length];
            for (int i = 0; i < logits.length; i++) rounded[i] = (float) logits[i];
            record("logsumexpRows", n + "x" + v, buf.relativeError(ReferenceKernels.logsumexpRows(rounded, n, v, scale), sLse, 1e-6),
                    TOL, ms);

            if (v > 2 && n > 2) {
                rounded[v + v - 1] = rounded[v + 1] = 100;                  // row 1: a tie
                rounded[2 * v] = Double.NaN;                                // row 2: a NaN first
            }
            if (n > 3) Arrays.fill(rounded, 3 * v, 4 * v, Double.NEGATIVE_INFINITY);
            MemorySegment sIds = buf.ints(new int[n]);
            kernels.fill(sIds, Float.NaN, n);   // poison: no int id has NaN's bits
            t0 = System.nanoTime();
            kernels.argmaxRows(sIds, buf.floats(rounded), n, v);
            ms = millis(t0);
            int[] expected = ReferenceKernels.argmaxRows(rounded, n, v);
            MemorySegment got = kernels.hostView(sIds, 4L * n, arena);
            int wrong = 0;
            for (int r = 0; r < n; r++) if (got.getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, r) != expected[r]) wrong++;
            record("argmaxRows", n + "x" + v, (double) wrong / n, 0, ms);   // the share of rows with another index

            // a token drawn from each row at two temperatures and three top-k, the rows above (a tie, a NaN,
            // all −inf) and one whose mass is all on a +inf: the share of rows with another id than the definition's
            if (n > 4) rounded[4 * v + v / 2] = Double.POSITIVE_INFINITY;
            MemorySegment sRounded = buf.floats(rounded);
            double[] u = new double[n];
            for (int r = 0; r < n; r++) u[r] = rng.nextDouble();
            MemorySegment sU = buf.doubles(u);
            for (double temperature : new double[]{0.7, 1.3}) {
                for (int topK : new int[]{0, 3, v}) {
                    kernels.fill(sIds, Float.NaN, n);
                    t0 = System.nanoTime();
                    kernels.sampleRows(sIds, sRounded, sU, n, v, temperature, topK);
                    ms = millis(t0);
                    expected = ReferenceKernels.sampleRows(rounded, u, n, v, temperature, topK);
                    got = kernels.hostView(sIds, 4L * n, arena);
                    wrong = 0;
                    for (int r = 0; r < n; r++) if (got.getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, r) != expected[r]) wrong++;
                    record("sampleRows", n + "x" + v + " T " + temperature + " top-k " + topK, (double) wrong / n, 0, ms);
                }
            }
        }
    }

    /**
     * The fused distillation loss against ReferenceDistillLoss: dense bf16 teacher with forward KL
     * and a hard label, dense fp16 with JSD(0.5), top-k (tail bucket) with reverse KL, sampled with
     * forward KL. The student vocabulary is the teacher's plus 3 padding columns.
     */
    private void distillLoss(int n, int vt) {
        int v = vt + 3, k = Math.min(8, vt), samples = 16;
        try (Arena arena = Arena.ofShared()) {
            KernelBuffers buf = new KernelBuffers(kernels, arena);
            double[] s = randn(n * v), t = randn(n * vt);
            for (int i = 0; i < t.length; i++) t[i] *= 3;
            int[] labels = new int[n];
            for (int r = 0; r < n; r++) labels[r] = rng.nextInt(v);
            if (n > 2) labels[1] = -100;
            DistillOptions base = DistillOptions.of(2f, 0.3f);
            String size = n + "x" + v;
            for (DType type : new DType[]{DType.BF16, DType.F16}) {
                double[] rounded = new double[t.length];
                MemorySegment tl = typed(arena, t, type, rounded);
                DistillOptions o = type == DType.BF16 ? base : base.withDivergence(Divergence.jsd(0.5));
                distillCheck(buf, "distill dense " + type + (type == DType.BF16 ? " fkl" : " jsd"), size, s, labels,
                        new TeacherTargets.Dense(buf.place(tl), type, vt), new ReferenceDistillLoss.Dense(rounded, vt), n, v, o);
            }
            int[] ids = new int[n * k];
            double[] topLogits = new double[n * k], lse = new double[n];
            for (int r = 0; r < n; r++) {
                int row = r;
                int[] order = java.util.stream.IntStream.range(0, vt).boxed()
                        .sorted((x, y) -> Double.compare(t[row * vt + y], t[row * vt + x])).mapToInt(Integer::intValue).toArray();
                double mx = Double.NEGATIVE_INFINITY, sum = 0;
                for (int j = 0; j < vt; j++) mx = Math.max(mx, t[r * vt + j] / 2);
                for (int j = 0; j < vt; j++) sum += Math.exp(t[r * vt + j] / 2 - mx);
                lse[r] = (float) (mx + Math.log(sum));
                for (int i = 0; i < k; i++) {
                    ids[r * k + i] = order[i];
                    topLogits[r * k + i] = t[r * vt + order[i]];
                }
            }
            distillCheck(buf, "distill top-" + k + " rkl", size, s, labels,
                    new TeacherTargets.TopK(buf.ints(ids), buf.floats(topLogits), DType.F32, buf.floats(lse), k, vt, 2f),
                    new ReferenceDistillLoss.TopK(ids, topLogits, lse, k, vt, 2.0), n, v, base.withDivergence(Divergence.reverseKl()));
            int[] sIds = new int[n * samples];
            double[] w = new double[n * samples];
            for (int i = 0; i < sIds.length; i++) {
                sIds[i] = rng.nextInt(vt);
                w[i] = (float) (1.0 / samples);
            }
            distillCheck(buf, "distill sampled fkl", size, s, labels,
                    new TeacherTargets.Sampled(buf.ints(sIds), buf.floats(w), samples, vt, 2f),
                    new ReferenceDistillLoss.Sampled(sIds, w, samples, vt), n, v, base);
        }
    }

    private void distillCheck(KernelBuffers buf, String kernel, String size, double[] s, int[] labels, TeacherTargets teacher,
                              ReferenceDistillLoss.Teacher reference, int n, int v, DistillOptions o) {
        MemorySegment student = buf.floats(s), ce = buf.poisoned(n), div = buf.poisoned(n);
        long t0 = System.nanoTime();
        DistillSums sums = kernels.distillLoss(student, student, teacher, buf.ints(labels), ce, div, n, v, o, 1f / n);
        double ms = millis(t0);
        ReferenceDistillLoss.Result ref = ReferenceDistillLoss.compute(s, reference, labels, n, v, o, 1.0 / n);
        record(kernel, size, distillError(buf, ref, student, ce, div, sums), TOL_LOOSE, ms);
        // the rows-only call (the chunked LM head's), added up on the host as its caller does
        MemorySegment student2 = buf.floats(s), ce2 = buf.poisoned(n), div2 = buf.poisoned(n);
        t0 = System.nanoTime();
        kernels.distillLossRows(student2, student2, teacher, buf.ints(labels), ce2, div2, n, v, o, 1f / n);
        ms = millis(t0);
        DistillSums rowSums;
        try (Arena host = Arena.ofConfined()) {
            rowSums = DistillSums.ofRows(kernels.hostView(ce2, 4L * n, host).toArray(ValueLayout.JAVA_FLOAT),
                    kernels.hostView(div2, 4L * n, host).toArray(ValueLayout.JAVA_FLOAT), labels, n, o);
        }
        record(kernel + " rows", size, distillError(buf, ref, student2, ce2, div2, rowSums), TOL_LOOSE, ms);
    }

    /** The worst relative error of a loss call's gradient, rows and total against the reference; infinite on a row count off. */
    private static double distillError(KernelBuffers buf, ReferenceDistillLoss.Result ref, MemorySegment grad, MemorySegment ce,
                                       MemorySegment div, DistillSums sums) {
        if (sums.rows() != ref.rows()) return Double.POSITIVE_INFINITY;
        double err = Math.max(buf.relativeError(ref.grad(), grad, 1e-3),
                Math.max(buf.relativeError(ref.ce(), ce, 1e-3), buf.relativeError(ref.divergence(), div, 1e-3)));
        return Math.max(err, Math.abs(sums.total() - ref.total()) / Math.max(1e-3, Math.abs(ref.total())));
    }

    // ---------------------------------------------------------------- helpers

    /** values stored as {@code type} in host memory; {@code rounded} (may be values) gets what was stored. */
    public static MemorySegment typed(Arena arena, double[] values, DType type, double[] rounded) {
        MemorySegment m = arena.allocate((long) type.bytes() * Math.max(1, values.length), 64);
        for (int i = 0; i < values.length; i++) {
            type.write(m, i, (float) values[i]);
            rounded[i] = type.read(m, i);
        }
        return m;
    }

    private void record(String kernel, String size, double error, double tolerance, double ms) {
        results.add(new Result(kernel, size, error, tolerance, ms));
    }

    private static double millis(long t0) {
        return (System.nanoTime() - t0) / 1e6;
    }

    private double[] randn(int n) {
        double[] x = new double[n];
        for (int i = 0; i < n; i++) {
            // Box–Muller, float-representable so both sides start from identical inputs
            double u = 1 - rng.nextDouble(), w = rng.nextDouble();
            x[i] = (float) (Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * w));
        }
        return x;
    }

    private static double[] slice(double[] x, int from, int length) {
        return Arrays.copyOfRange(x, from, from + length);
    }

}
