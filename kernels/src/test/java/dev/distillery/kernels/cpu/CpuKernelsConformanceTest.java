package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.stream.Collectors;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.conformance.KernelConformance;
import dev.distillery.kernels.reference.ReferenceKernels;

class CpuKernelsConformanceTest {

    @ParameterizedTest(name = "gemm={0}, threads={1}")
    @CsvSource({"auto, 2", "auto, 1", "blas, 2", "vector, 2", "vector, 1", "blas, 3", "auto, 4"})
    void everyKernelMatchesFloat64ReferenceOnAwkwardSizes(String gemm, int threads) {
        long seed = System.nanoTime();
        try (CpuKernels kernels = new CpuKernels(threads, gemm)) {
            List<KernelConformance.Result> results = KernelConformance.run(kernels, seed, KernelConformance.Sizes.standard());
            String failures = results.stream().filter(r -> !r.passed())
                    .map(r -> r.kernel() + " " + r.size() + ": error " + r.maxRelError() + " > " + r.tolerance())
                    .collect(Collectors.joining("\n"));
            assertTrue(failures.isEmpty(), "seed " + seed + ", " + kernels.describe() + ":\n" + failures);
            assertTrue(results.size() > 60, "suite ran only " + results.size() + " checks");
        }
    }

    /**
     * Operands rounded to bf16, fp32 sums: on AMX tiles and on AVX512-BF16 dot products, over
     * several 32 x 32 blocks, ragged edges and k in several panels; linear and attention within bf16's tolerance of fp32.
     */
    @ParameterizedTest(name = "bf16 path={0}, threads={1}")
    @CsvSource({"auto, 2", "avx512, 1"})
    void bf16GemmsMatchFloat64ReferenceOnBf16RoundedOperands(String path, int threads) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        long seed = System.nanoTime();
        try (CpuKernels kernels = bf16Kernels(path, threads)) {
            assertEquals(Precision.BF16, kernels.precision(), kernels.describe());
            KernelConformance.Sizes standard = KernelConformance.Sizes.standard();
            int[][] gemm = Arrays.copyOf(standard.gemm(), standard.gemm().length + 3);
            gemm[gemm.length - 3] = new int[]{100, 70, 300};
            gemm[gemm.length - 2] = new int[]{33, 129, 31};
            gemm[gemm.length - 1] = new int[]{37, 45, 2500};   // k over three panels, the last one ragged
            List<KernelConformance.Result> results = KernelConformance.run(kernels, seed,
                    new KernelConformance.Sizes(gemm, standard.rows(), standard.attention(), standard.elementwise(), standard.classifier()));
            String failures = results.stream().filter(r -> !r.passed())
                    .map(r -> r.kernel() + " " + r.size() + ": error " + r.maxRelError() + " > " + r.tolerance())
                    .collect(Collectors.joining("\n"));
            assertTrue(failures.isEmpty(), "seed " + seed + ", " + kernels.describe() + ":\n" + failures);
            assertTrue(results.size() >= 7 * gemm.length + 3 * standard.attention().length,
                    "GEMMs and linear at every GEMM size, attention forward, backward and decode at every attention size: " + results.size());
            assertTrue(results.stream().allMatch(r -> r.kernel().endsWith(".bf16")), results.toString());
        }
    }

    /**
     * The shapes the float64 conformance sizes do not reach: whole 32 x 32 blocks whose C goes
     * through the tiles (alpha 1, beta 0 or 1, also in a second k panel), more column blocks than
     * one band, sizes with no padding at all, 16-wide transposed packs, in every transpose.
     */
    @ParameterizedTest(name = "bf16 path={0}, threads={1}")
    @CsvSource({"auto, 1", "auto, 2", "avx512, 2"})
    void bf16GemmOnWholeBlocksAndWideBandsMatchesFloat64Reference(String path, int threads) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        long seed = System.nanoTime();
        Random random = new Random(seed);
        int[][] shapes = {{96, 1024, 96}, {64, 1100, 64}, {33, 600, 1056}, {600, 64, 64}, {48, 40, 2048}};
        float[][] scales = {{1f, 0f}, {1f, 1f}, {0.75f, 0.5f}};
        try (CpuKernels kernels = bf16Kernels(path, threads); Arena arena = Arena.ofConfined()) {
            for (int[] s : shapes) {
                int m = s[0], n = s[1], k = s[2];
                for (int variant = 0; variant < 4; variant++) {
                    boolean transA = variant / 2 == 1, transB = variant % 2 == 1;
                    int lda = transA ? m : k, ldb = transB ? k : n;
                    float[] a = gaussians(random, m * k), b = gaussians(random, k * n);
                    for (float[] scale : scales) {
                        float[] c = gaussians(random, m * n);
                        MemorySegment sc = arena.allocateFrom(ValueLayout.JAVA_FLOAT, c);
                        kernels.gemm(transA, transB, m, n, k, scale[0], arena.allocateFrom(ValueLayout.JAVA_FLOAT, a), lda,
                                arena.allocateFrom(ValueLayout.JAVA_FLOAT, b), ldb, scale[1], sc, n);
                        String context = "seed " + seed + ", " + kernels.describe() + ": gemm" + (transA ? "T" : "N") + (transB ? "T" : "N")
                                + " " + m + "x" + n + "x" + k + " alpha " + scale[0] + " beta " + scale[1];
                        assertMatchesBf16Reference(context, transA, transB, m, n, k, scale[0], a, b, scale[1], c, sc);
                    }
                }
            }
        }
    }

    /**
     * A held B is packed once per slice and shape and gives the GEMM's bits exactly, call after
     * call, in both transposes and over a thread split; the pack is what later calls read (a write
     * under the hold is not seen), and once the hold closes the new values are.
     */
    @Test
    void bf16GemmOnAHeldOperandGivesTheSameBitsAndForgetsItWhenReleased() {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        Random random = new Random(7);
        int m = 70, n = 1000, k = 96;
        try (CpuKernels kernels = new CpuKernels(2, "auto", Precision.BF16); Arena arena = Arena.ofConfined()) {
            MemorySegment w = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, n * k));
            for (boolean transB : new boolean[]{true, false}) {
                int nn = transB ? n : k, kk = transB ? k : n;   // W (n, k): op(B) is Wᵀ (k, n) as the logits read it, or W (n, k) as dH does
                MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * kk));
                MemorySegment plain = arena.allocate(4L * m * nn, 64), held = arena.allocate(4L * m * nn, 64);
                kernels.gemm(false, transB, m, nn, kk, 1f, a, kk, w, k, 0f, plain, nn);
                try (var hold = kernels.holdConstant(w)) {
                    for (int call = 0; call < 3; call++) {
                        held.fill((byte) 0x7f);
                        kernels.gemm(false, transB, m, nn, kk, 1f, a, kk, w, k, 0f, held, nn);
                        assertEquals(-1L, plain.mismatch(held), "transB " + transB + ", call " + call);
                    }
                }
            }
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * k));
            MemorySegment before = arena.allocate(4L * m * n, 64), stale = arena.allocate(4L * m * n, 64);
            MemorySegment after = arena.allocate(4L * m * n, 64);
            try (var hold = kernels.holdConstant(w)) {
                kernels.gemm(false, true, m, n, k, 1f, a, k, w, k, 0f, before, n);
                w.asSlice(0, 4L * k).fill((byte) 0);   // column 0 of op(B) is now zero, against the hold's promise
                kernels.gemm(false, true, m, n, k, 1f, a, k, w, k, 0f, stale, n);
            }
            assertEquals(-1L, before.mismatch(stale), "the second call under the hold reads the pack the first one made");
            kernels.gemm(false, true, m, n, k, 1f, a, k, w, k, 0f, after, n);
            for (int i = 0; i < m; i++) {
                assertEquals(0f, after.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * n), "row " + i + " read the released pack");
                assertEquals(before.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * n + 1), after.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * n + 1));
            }
        }
    }

    /**
     * The bf16 GEMM's threads split C along the 32 × 32 blocks its tiles form, so two threads give
     * one thread's bits, split by rows (op(B) packed by both threads, a share of its columns each,
     * or held), by columns (fewer rows than 32 a thread), or by claimed columns (op(B) held and
     * op(A) small: the cases of 40 and 150 rows, each thread packing all of op(A)): k past one panel
     * (1,024), where a block that is whole adds to C in its tiles and a partial one adds its sums
     * to C afterwards, sizes whose halves are not multiples of 32, rows enough for the threads to
     * claim several blocks of them each (the last one short), and claims of an op(A) of one panel
     * packed and multiplied a part at a time (k = 500: 256 rows; k = 900: 128), op(A) transposed or not.
     */
    @ParameterizedTest
    @CsvSource({"200, 70, 1100, false, false", "70, 200, 1100, false, false", "100, 250, 1100, false, true", "100, 250, 1100, false, false",
                "70, 200, 1100, false, true", "1100, 70, 1100, false, false", "1100, 70, 300, false, true",
                "2200, 40, 500, true, false", "2200, 40, 500, false, false", "1100, 70, 900, true, false", "40, 300, 1100, false, true", "40, 300, 1100, true, false",
                "150, 1000, 1100, false, true", "150, 1000, 300, true, false", "40, 300, 1100, false, false"})
    void bf16GemmGivesTheSameBitsOnOneThreadAndOnTwo(int m, int n, int k, boolean transA, boolean transB) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        if (m == 40 || m == 150) assertTrue(CpuKernels.claimsColumns(m, n, k, 2), "held, this GEMM claims columns");
        if (m > 1000) assertTrue((m + CpuKernels.gemmClaimRows(m, 2) - 1) / CpuKernels.gemmClaimRows(m, 2) > 2, "several claims a thread");
        Random random = new Random(m * 31L + n);
        try (CpuKernels one = new CpuKernels(1, "auto", Precision.BF16); CpuKernels two = new CpuKernels(2, "auto", Precision.BF16);
             Arena arena = Arena.ofConfined()) {
            int lda = transA ? m : k, ldb = transB ? k : n;
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * k));
            MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, k * n));
            float[] start = gaussians(random, m * n);
            MemorySegment expected = arena.allocateFrom(ValueLayout.JAVA_FLOAT, start);
            one.gemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 1f, expected, n);
            for (boolean held : new boolean[]{false, true}) {
                MemorySegment got = arena.allocateFrom(ValueLayout.JAVA_FLOAT, start);
                try (var hold = held ? two.holdConstant(b) : null) {
                    two.gemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 1f, got, n);
                }
                assertEquals(-1L, expected.mismatch(got), m + "x" + n + "x" + k + (transA ? " T" : " N") + (transB ? "T" : "N") + (held ? ", B held" : ""));
            }
        }
    }

    /**
     * The bf16 GEMM's row claims come in a multiple of the threads, so that threads running alike
     * end a call together, each of at most a quarter of a thread's share or 256 rows, whichever is
     * more: the rows of the products of configs A and B and of wide vocabularies, on 2 and 4 threads.
     */
    @ParameterizedTest
    @CsvSource({"256", "384", "768", "1024", "1152", "1536", "2048", "3072", "4096", "32000", "50257", "128256"})
    void bf16GemmClaimsRowsEvenlyOverTheThreads(int m) {
        for (int threads : new int[]{2, 4}) {
            int claim = CpuKernels.gemmClaimRows(m, threads), claims = (m + claim - 1) / claim, share = (m + threads - 1) / threads;
            assertEquals(0, claim % 32, m + " rows on " + threads + " threads: claims of " + claim);
            assertEquals(0, claims % threads, m + " rows on " + threads + " threads: " + claims + " claims of " + claim);
            assertTrue(claim <= Math.max(256, (share / 4 + 31) / 32 * 32), m + " rows on " + threads + " threads: claims of " + claim);
        }
    }

    /**
     * On the AVX512-BF16 path a product of one row (a decode step of one sequence, formed 128
     * columns at a time) gives the bits of that row in a product of 32: k over two panels, 300
     * columns (two wide blocks and a tail), beta 1 and alpha not 1, B held or not, one thread or
     * two. (On AMX a row alone is a partial tile block, which adds C after its sums where a whole
     * block starts from C: other roundings, by design.)
     */
    @ParameterizedTest
    @CsvSource({"300, 1100, false, 1, 1", "300, 1100, true, 0.5, 0", "1031, 131, true, 1, 0"})
    void bf16RowAloneHasItsBitsInABatch(int n, int k, boolean transB, float alpha, float beta) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        int m = 32;
        Random random = new Random();
        try (CpuKernels one = bf16Kernels("avx512", 1); CpuKernels two = bf16Kernels("avx512", 2); Arena arena = Arena.ofConfined()) {
            int ldb = transB ? k : n;
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * k));
            MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, k * n));
            float[] start = gaussians(random, m * n);
            MemorySegment batch = arena.allocateFrom(ValueLayout.JAVA_FLOAT, start);
            one.gemm(false, transB, m, n, k, alpha, a, k, b, ldb, beta, batch, n);
            for (CpuKernels kernels : new CpuKernels[]{one, two}) {
                for (boolean held : new boolean[]{false, true}) {
                    try (var hold = held ? kernels.holdConstant(b) : null) {
                        for (int r : new int[]{0, 13, m - 1}) {
                            MemorySegment row = arena.allocateFrom(ValueLayout.JAVA_FLOAT, java.util.Arrays.copyOfRange(start, r * n, (r + 1) * n));
                            kernels.gemm(false, transB, 1, n, k, alpha, a.asSlice(4L * r * k), k, b, ldb, beta, row, n);
                            assertEquals(-1L, row.mismatch(batch.asSlice(4L * r * n, 4L * n)), n + " x " + k + ", row " + r
                                    + (held ? ", held" : "") + (kernels == one ? ", one thread" : ", two threads"));
                        }
                    }
                }
            }
        }
    }

    /**
     * The CPU's geluLinearBackward (the linear's input gradient first, then GELU and its gradient
     * in one pass, then the weight's) gives the bits of the contract's order: GELU, the linear's
     * backward, GELU's backward. fp32 and bf16, one thread and two, n · c not a multiple of a
     * vector, gradients accumulated into (dinpBeta 1) or the input's written over NaN (0, against
     * adding to zeros), the scratch poisoned with NaN.
     */
    @ParameterizedTest
    @CsvSource({"FP32, 1, 37, 29, 50, 1", "FP32, 2, 200, 96, 72, 0", "BF16, 1, 37, 29, 50, 0", "BF16, 2, 200, 96, 72, 1",
                "BF16, 2, 1024, 256, 64, 0", "FP32, 2, 33, 17, 5, 1"})
    void geluLinearBackwardGivesTheBitsOfGeluThenTheLinearsBackwardThenGelus(Precision precision, int threads, int n, int c, int oc,
                                                                              float dinpBeta) {
        assumeTrue(precision == Precision.FP32 || Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here");
        Random random = new Random(n * 7L + c);
        DType geluType = precision == Precision.BF16 ? DType.BF16 : DType.F32;
        try (CpuKernels kernels = new CpuKernels(threads, "auto", precision); Arena arena = Arena.ofShared()) {
            float[] x = gaussians(random, n * c);
            for (int i = 0; i < x.length; i++) x[i] *= 3;
            MemorySegment inp = arena.allocateFrom(ValueLayout.JAVA_FLOAT, x);
            MemorySegment w = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, c * oc));
            MemorySegment dout = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, n * oc));
            float[] dinp0 = gaussians(random, n * c), dw0 = gaussians(random, c * oc), db0 = gaussians(random, oc);
            MemorySegment[] want = {arena.allocateFrom(ValueLayout.JAVA_FLOAT, dinp0), arena.allocateFrom(ValueLayout.JAVA_FLOAT, dw0),
                    arena.allocateFrom(ValueLayout.JAVA_FLOAT, db0), arena.allocate(4L * n * c, 64)};
            MemorySegment[] got = {arena.allocateFrom(ValueLayout.JAVA_FLOAT, dinp0), arena.allocateFrom(ValueLayout.JAVA_FLOAT, dw0),
                    arena.allocateFrom(ValueLayout.JAVA_FLOAT, db0), arena.allocate(4L * n * c, 64)};
            MemorySegment dg = arena.allocate(4L * n * c, 64);
            want[3].fill((byte) 0x7f);
            dg.fill((byte) 0x7f);
            if (dinpBeta == 0f) {
                want[0].fill((byte) 0);
                got[0].fill((byte) 0x7f);
            }
            kernels.geluForward(want[3], geluType, inp, (long) n * c);
            kernels.linearBackward(dg, 0f, want[1], want[2], dout, want[3], geluType, w, n, c, oc);
            kernels.geluBackward(want[0], inp, dg, (long) n * c);
            got[3].fill((byte) 0x7f);
            dg.fill((byte) 0x7f);
            kernels.geluLinearBackward(got[0], dinpBeta, got[1], got[2], dout, inp, w, got[3], geluType, dg, n, c, oc);
            String[] names = {"dinp", "dweight", "dbias", "gelu"};
            for (int i = 0; i < names.length; i++) {
                assertEquals(-1L, want[i].mismatch(got[i]), names[i] + ", " + precision + ", beta " + dinpBeta + ", " + threads + " thread(s), " + n + " x " + c + " -> " + oc);
            }
        }
    }

    /**
     * Attention's backward writing a new dqkv (dqkvBeta 0, over NaN) gives the bits of adding to
     * zeros (1): fp32 (a GEMM call a band) and bf16 (one native call a product), two threads, t of
     * a part of a band and of several bands.
     */
    @ParameterizedTest
    @CsvSource({"FP32, 2, 37, 24, 2", "FP32, 1, 130, 32, 4", "BF16, 2, 37, 24, 2", "BF16, 2, 130, 32, 4"})
    void attentionBackwardWritingANewGradientGivesTheBitsOfAddingToZeros(Precision precision, int b, int t, int c, int nh) {
        assumeTrue(precision == Precision.FP32 || Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here");
        Random random = new Random(t * 5L + c);
        try (CpuKernels kernels = new CpuKernels(2, "auto", precision); Arena arena = Arena.ofShared()) {
            long n = (long) b * t * c, na = (long) b * nh * t * t;
            MemorySegment qkv = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, (int) (3 * n)));
            MemorySegment dout = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, (int) n));
            MemorySegment out = arena.allocate(4 * n, 64), att = arena.allocate(4 * na, 64), datt = arena.allocate(4 * na, 64);
            kernels.attentionForward(out, DType.F32, att, qkv, b, t, c, nh);
            MemorySegment added = arena.allocate(12 * n, 64), written = arena.allocate(12 * n, 64);
            written.fill((byte) 0x7f);
            kernels.attentionBackward(added, 1f, datt, dout, qkv, att, b, t, c, nh);
            kernels.attentionBackward(written, 0f, datt, dout, qkv, att, b, t, c, nh);
            assertEquals(-1L, added.mismatch(written), precision + ", " + b + " x " + t + " x " + c + " / " + nh);
        }
    }

    /**
     * Attention without kept probabilities, on the fp32 path: the forward's output and the whole
     * backward (dq, dk, dv) are the bits of the kept probabilities' (the same band calls, the
     * probabilities made again where the kept ones are read), and writing a new gradient gives the
     * bits of adding to zeros, kept or not; t of part of a band, of several bands with a ragged last one.
     */
    @ParameterizedTest
    @CsvSource({"2, 37, 24, 2, 2", "1, 130, 32, 4, 2", "3, 200, 48, 3, 1"})
    void attentionInBandsGivesTheBitsOfKeptProbabilities(int b, int t, int c, int nh, int threads) {
        Random random = new Random(t * 7L + c);
        try (CpuKernels kernels = new CpuKernels(threads, "auto", Precision.FP32); Arena arena = Arena.ofShared()) {
            long n = (long) b * t * c, na = (long) b * nh * t * t;
            MemorySegment qkv = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, (int) (3 * n)));
            MemorySegment dout = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, (int) n));
            MemorySegment out = arena.allocate(4 * n, 64), att = arena.allocate(4 * na, 64), datt = arena.allocate(4 * na, 64);
            MemorySegment banded = arena.allocate(4 * n, 64);
            banded.fill((byte) 0x7f);
            kernels.attentionForward(out, DType.F32, att, qkv, b, t, c, nh);
            kernels.attentionForward(banded, DType.F32, null, qkv, b, t, c, nh);
            String shape = b + " x " + t + " x " + c + " / " + nh;
            assertEquals(-1L, out.mismatch(banded), "forward, " + shape);
            MemorySegment kept = arena.allocate(12 * n, 64), inBands = arena.allocate(12 * n, 64), written = arena.allocate(12 * n, 64);
            written.fill((byte) 0x7f);
            MemorySegment keptWritten = arena.allocate(12 * n, 64);
            keptWritten.fill((byte) 0x7f);
            kernels.attentionBackward(kept, 1f, datt, dout, qkv, att, b, t, c, nh);
            kernels.attentionBackward(keptWritten, 0f, datt, dout, qkv, att, b, t, c, nh);
            kernels.attentionBackwardInBands(inBands, 1f, dout, qkv, b, t, c, nh);
            kernels.attentionBackwardInBands(written, 0f, dout, qkv, b, t, c, nh);
            assertEquals(-1L, kept.mismatch(inBands), "the backward, " + shape);
            assertEquals(-1L, inBands.mismatch(written), "a new gradient, " + shape);
            assertEquals(-1L, kept.mismatch(keptWritten), "a new gradient from kept probabilities, " + shape);
        }
    }

    /**
     * op(B) packed a range of columns at a time, by threads that share one operand, gives the bytes
     * of one pack of all its columns: ranges of 32 columns and more, the last one ragged, op(B)
     * transposed or not, fp32 or stored as bf16, k not a multiple of 32 (its padding zeros).
     */
    @ParameterizedTest
    @CsvSource({"70, 200, false, false", "70, 200, true, false", "33, 97, false, true", "300, 64, true, true", "5, 31, false, false"})
    void bf16PackOfColumnRangesGivesTheBytesOfOnePack(int k, int n, boolean transB, boolean bBf16) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        Random random = new Random(k * 131L + n);
        try (Arena arena = Arena.ofConfined()) {
            int ldb = (transB ? k : n) + 3;   // rows longer than the operand's, as a slice of a wider matrix
            long elements = (long) (transB ? n : k) * ldb;
            MemorySegment b = arena.allocate(elements * (bBf16 ? 2 : 4), 64);
            for (long i = 0; i < elements; i++) {
                float x = (float) random.nextGaussian();
                if (bBf16) b.setAtIndex(ValueLayout.JAVA_SHORT, i, VectorOps.bf16Bits(x)); else b.setAtIndex(ValueLayout.JAVA_FLOAT, i, x);
            }
            long bytes = Bf16Gemm.packedBytes(k, n);
            MemorySegment whole = arena.allocate(bytes, 64), parts = arena.allocate(bytes, 64);
            whole.fill((byte) 0x7f);
            parts.fill((byte) 0x55);
            Bf16Gemm.packColumns(transB, k, n, 0, n, b, bBf16, ldb, whole);
            for (int c0 = 0; c0 < n; c0 += 64) Bf16Gemm.packColumns(transB, k, n, c0, Math.min(n, c0 + 64), b, bBf16, ldb, parts);
            assertEquals(-1L, whole.mismatch(parts), k + " x " + n + (transB ? " transposed" : "") + (bBf16 ? ", bf16" : ""));
            assertThrows(IllegalArgumentException.class, () -> Bf16Gemm.packColumns(transB, k, n, 16, n, b, bBf16, ldb, parts));
        }
    }

    /**
     * The whole block's AdamW in one pass over the pool gives the bits of one adamW call per span
     * (the contract's default): spans of lengths that are not multiples of a vector, one longer
     * than a chunk of the pool, a gap between spans (left untouched) and several weight decays;
     * with a clipping factor (the second step), the bits of scaling the gradients first, which
     * it leaves as they were.
     */
    @ParameterizedTest(name = "threads={0}")
    @CsvSource({"1", "2"})
    void adamWSpansGivesTheBitsOfOneCallPerSpan(int threads) {
        long[] offsets = {0, 37, 100, 40_100}, lengths = {37, 50, 40_000, 1_000};   // 87..100 is a gap
        float[] decays = {0f, 0.1f, 0.01f, 0f};
        ParameterSpans spans = new ParameterSpans(offsets, lengths, decays);
        int n = 41_100;
        Random random = new Random(5);
        try (CpuKernels kernels = new CpuKernels(threads, "auto"); Arena arena = Arena.ofShared()) {
            float[] p0 = gaussians(random, n), g = gaussians(random, n), m0 = gaussians(random, n), v0 = gaussians(random, n);
            for (int i = 0; i < n; i++) v0[i] = Math.abs(v0[i]);
            MemorySegment grads = arena.allocateFrom(ValueLayout.JAVA_FLOAT, g);
            MemorySegment[] want = {arena.allocateFrom(ValueLayout.JAVA_FLOAT, p0), arena.allocateFrom(ValueLayout.JAVA_FLOAT, m0),
                    arena.allocateFrom(ValueLayout.JAVA_FLOAT, v0)};
            MemorySegment[] got = {arena.allocateFrom(ValueLayout.JAVA_FLOAT, p0), arena.allocateFrom(ValueLayout.JAVA_FLOAT, m0),
                    arena.allocateFrom(ValueLayout.JAVA_FLOAT, v0)};
            for (int step = 1; step <= 2; step++) {
                float clip = step == 1 ? 1f : 0.37f;
                MemorySegment scaled = arena.allocateFrom(ValueLayout.JAVA_FLOAT, g);
                kernels.scale(scaled, clip, n);
                for (int i = 0; i < offsets.length; i++) {
                    long at = 4 * offsets[i], bytes = 4 * lengths[i];
                    kernels.adamW(want[0].asSlice(at, bytes), scaled.asSlice(at, bytes), want[1].asSlice(at, bytes), want[2].asSlice(at, bytes),
                            lengths[i], 1e-2f, 0.9f, 0.95f, 1e-8f, decays[i], step);
                }
                kernels.adamWSpans(got[0], grads, got[1], got[2], spans, clip, 1e-2f, 0.9f, 0.95f, 1e-8f, step);
            }
            assertEquals(-1L, arena.allocateFrom(ValueLayout.JAVA_FLOAT, g).mismatch(grads), "the gradients left as they were");
            for (int q = 0; q < 3; q++) assertEquals(-1L, want[q].mismatch(got[q]), new String[]{"params", "m", "v"}[q]);
            assertEquals(p0[90], got[0].getAtIndex(ValueLayout.JAVA_FLOAT, 90), "the gap between spans");
        }
    }

    /** {@code got} (m, n) against alpha op(A) op(B) + beta C in float64 on bf16-rounded operands, within fp32 sums' error. */
    private static void assertMatchesBf16Reference(String context, boolean transA, boolean transB, int m, int n, int k,
                                                   float alpha, float[] a, float[] b, float beta, float[] c, MemorySegment got) {
        int lda = transA ? m : k, ldb = transB ? k : n;
        double[] ra = new double[a.length], rb = new double[b.length];
        for (int q = 0; q < a.length; q++) ra[q] = ReferenceKernels.roundToBf16(a[q]);
        for (int q = 0; q < b.length; q++) rb[q] = ReferenceKernels.roundToBf16(b[q]);
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double sum = 0, magnitude = 0;
                for (int q = 0; q < k; q++) {
                    double x = transA ? ra[q * lda + i] : ra[i * lda + q];
                    double y = transB ? rb[j * ldb + q] : rb[q * ldb + j];
                    sum += x * y;
                    magnitude += Math.abs(x * y);
                }
                double want = alpha * sum + beta * c[i * n + j];
                double value = got.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * n + j);
                double bound = 2e-5 * (Math.abs(alpha) * magnitude + Math.abs(beta * c[i * n + j])) + 1e-30;
                if (!(Math.abs(value - want) <= bound)) {
                    fail(context + ": C[" + i + "][" + j + "] = " + value + ", float64 " + want);
                }
            }
        }
    }

    /** bf16 kernels on {@code path} (auto or avx512): the GEMM reads {@code distillery.bf16Gemm} once, when it is built. */
    private static CpuKernels bf16Kernels(String path, int threads) {
        String before = System.getProperty("distillery.bf16Gemm");
        System.setProperty("distillery.bf16Gemm", path);
        try {
            return new CpuKernels(threads, "auto", Precision.BF16);
        } finally {
            if (before == null) System.clearProperty("distillery.bf16Gemm");
            else System.setProperty("distillery.bf16Gemm", before);
        }
    }

    private static float[] gaussians(Random random, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) random.nextGaussian();
        return x;
    }

    /** bf16 rounding is visible: the fp32 reference of the same operands differs from the bf16 GEMM by far more than fp32 sums would. */
    @Test
    void bf16GemmRoundsItsOperands() {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        try (CpuKernels kernels = new CpuKernels(1, "auto", Precision.BF16); Arena arena = Arena.ofConfined()) {
            float x = 1f + 1f / 256 + 1f / 1024;          // between two bf16 values: rounds to 1 + 1/128
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, x), b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, 1f);
            MemorySegment c = arena.allocate(4);
            kernels.gemm(false, false, 1, 1, 1, 1f, a, 1, b, 1, 0f, c, 1);
            assertEquals(1f + 1f / 128, c.get(ValueLayout.JAVA_FLOAT, 0));
        }
    }

    /**
     * An operand stored as bf16 (as a norm writes an activation under bf16) gives the bits of the
     * same values rounded by the GEMM: A, B or both stored so, in all four transposes, on both
     * machine paths, on one thread and split over two (a bf16 slice starts 2 bytes an element in),
     * with leading dimensions wider than the matrix, at sizes off every block edge. The last three
     * have k a whole number of 32s, rows a whole number of 8s and an even leading dimension, so
     * on the AVX512-BF16 path a bf16 op(A) not transposed is read where it lies, not packed: by one
     * call, by claimed rows (200 rows on two threads) and past one panel (k = 1,088).
     */
    @ParameterizedTest
    @CsvSource({"auto, 37, 53, 29", "auto, 200, 70, 1100", "auto, 70, 200, 45", "avx512, 33, 65, 31", "avx512, 96, 130, 300",
                "avx512, 40, 600, 384", "avx512, 200, 300, 384", "avx512, 256, 130, 1088"})
    void bf16GemmOnOperandsStoredAsBf16GivesTheBitsOfRoundingThem(String path, int m, int n, int k) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        Random random = new Random(m * 131L + n * 7L + k);
        for (int threads : new int[]{1, 2}) {
            try (CpuKernels kernels = bf16Kernels(path, threads); Arena arena = Arena.ofConfined()) {
                for (boolean transA : new boolean[]{false, true}) {
                    for (boolean transB : new boolean[]{false, true}) {
                        int lda = (transA ? m : k) + (k % 32 == 0 ? 2 : 3), ldb = (transB ? k : n) + 5;
                        int rowsA = transA ? k : m, rowsB = transB ? n : k;
                        float[] av = gaussians(random, rowsA * lda), bv = gaussians(random, rowsB * ldb);
                        MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, av), b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, bv);
                        MemorySegment a16 = bf16Copy(arena, av), b16 = bf16Copy(arena, bv);
                        float[] c0 = gaussians(random, m * n);
                        MemorySegment want = arena.allocateFrom(ValueLayout.JAVA_FLOAT, c0);
                        kernels.gemm(transA, transB, m, n, k, 0.75f, a, lda, b, ldb, 0.5f, want, n);
                        for (DType[] types : new DType[][]{{DType.BF16, DType.F32}, {DType.F32, DType.BF16}, {DType.BF16, DType.BF16}}) {
                            MemorySegment got = arena.allocateFrom(ValueLayout.JAVA_FLOAT, c0);
                            kernels.gemm(transA, transB, m, n, k, 0.75f, types[0] == DType.BF16 ? a16 : a, types[0], lda,
                                    types[1] == DType.BF16 ? b16 : b, types[1], ldb, 0.5f, got, n);
                            assertEquals(-1L, want.mismatch(got), path + ", " + threads + " thread(s), transA " + transA + ", transB " + transB
                                    + ", A " + types[0] + ", B " + types[1]);
                        }
                    }
                }
            }
        }
    }

    /** fp32 kernels take no bf16 operand or output: the runtime only stores bf16 activations where the GEMMs round to bf16. */
    @Test
    void fp32KernelsRefuseActivationsStoredAsBf16() {
        try (CpuKernels kernels = new CpuKernels(1, "auto"); Arena arena = Arena.ofConfined()) {
            assertFalse(kernels.storesBf16Activations());
            MemorySegment x = arena.allocate(64, 64), c = arena.allocate(64, 64);
            var e = assertThrows(UnsupportedOperationException.class,
                    () -> kernels.gemm(false, false, 2, 2, 2, 1f, x, DType.BF16, 2, x, DType.F32, 2, 0f, c, 2));
            assertTrue(e.getMessage().contains("needs bf16 precision"), e.getMessage());
            assertThrows(UnsupportedOperationException.class, () -> kernels.layerNormForward(c, DType.BF16, x, x, x, x, x, 1, 2));
            assertThrows(UnsupportedOperationException.class, () -> kernels.rmsNormForward(c, DType.BF16, x, x, x, 1, 2, 1e-5f));
            assertThrows(UnsupportedOperationException.class, () -> kernels.geluForward(c, DType.BF16, x, 2));
            assertThrows(UnsupportedOperationException.class, () -> kernels.swiGluForward(c, DType.BF16, x, x, 2));
        }
    }

    /**
     * A kernel's bf16 output is its fp32 output rounded as the GEMM rounds, bit for bit: layernorm,
     * RMSNorm, GELU and SwiGLU, rows of widths below, at and past a vector, values at rounding ties
     * included.
     */
    @ParameterizedTest
    @CsvSource({"1, 1", "3, 7", "5, 16", "13, 33", "4, 384"})
    void activationsWrittenInBf16AreTheirFp32ValuesRoundedAsTheGemmRounds(int rows, int c) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        Random random = new Random(rows * 17L + c);
        try (CpuKernels kernels = new CpuKernels(2, "auto", Precision.BF16); Arena arena = Arena.ofConfined()) {
            assertTrue(kernels.storesBf16Activations());
            float[] xv = gaussians(random, rows * c);
            xv[0] = 3f + 1f / 128 + 1f / 256;   // mid-way between two bf16 values of its row's scale
            MemorySegment x = arena.allocateFrom(ValueLayout.JAVA_FLOAT, xv);
            MemorySegment w = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, c));
            MemorySegment bias = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, c));
            MemorySegment stats = arena.allocate(8L * rows, 64), stats16 = arena.allocate(8L * rows, 64);
            MemorySegment out = arena.allocate(4L * rows * c, 64), out16 = arena.allocate(2L * rows * c, 64);
            out16.fill((byte) 0x7f);
            kernels.layerNormForward(out, DType.F32, stats, stats.asSlice(4L * rows), x, w, bias, rows, c);
            kernels.layerNormForward(out16, DType.BF16, stats16, stats16.asSlice(4L * rows), x, w, bias, rows, c);
            assertRoundedBitForBit(out, out16, rows * c, "layernorm");
            assertEquals(-1L, stats.mismatch(stats16), "layernorm's mean and rstd");
            out16.fill((byte) 0x7f);
            kernels.rmsNormForward(out, DType.F32, stats, x, w, rows, c, 1e-5f);
            kernels.rmsNormForward(out16, DType.BF16, stats16, x, w, rows, c, 1e-5f);
            assertRoundedBitForBit(out, out16, rows * c, "rmsnorm");
            out16.fill((byte) 0x7f);
            kernels.geluForward(out, DType.F32, x, (long) rows * c);
            kernels.geluForward(out16, DType.BF16, x, (long) rows * c);
            assertRoundedBitForBit(out, out16, rows * c, "gelu");
            MemorySegment up = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, rows * c));
            out16.fill((byte) 0x7f);
            kernels.swiGluForward(out, DType.F32, x, up, (long) rows * c);
            kernels.swiGluForward(out16, DType.BF16, x, up, (long) rows * c);
            assertRoundedBitForBit(out, out16, rows * c, "swiglu");
        }
    }

    /**
     * Attention's bf16 output is its fp32 output rounded as the GEMM rounds, bit for bit, and the
     * probabilities beside it are the same: heads of a vector and of less, sequences past one band
     * of causal rows.
     */
    @ParameterizedTest
    @CsvSource({"2, 7, 12, 3", "1, 70, 64, 2", "3, 33, 48, 4"})
    void attentionWritesItsOutputInBf16AsTheGemmWouldRoundIt(int b, int t, int c, int nh) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        Random random = new Random(b * 1000L + t * 10L + c);
        try (CpuKernels kernels = new CpuKernels(2, "auto", Precision.BF16); Arena arena = Arena.ofShared()) {   // read by the pool's threads
            int n = b * t * c, na = b * nh * t * t;
            MemorySegment qkv = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, 3 * n));
            MemorySegment out = arena.allocate(4L * n, 64), out16 = arena.allocate(2L * n, 64);
            MemorySegment att = arena.allocate(4L * na, 64), att16 = arena.allocate(4L * na, 64);
            out16.fill((byte) 0x7f);
            kernels.attentionForward(out, DType.F32, att, qkv, b, t, c, nh);
            kernels.attentionForward(out16, DType.BF16, att16, qkv, b, t, c, nh);
            assertRoundedBitForBit(out, out16, n, "attention");
            assertEquals(-1L, att.mismatch(att16), "the probabilities beside a bf16 output");
        }
    }

    /**
     * On the AVX512-BF16 path a head's forward is one native call, probabilities kept or not, so
     * the two give the same output bits, fp32 or bf16; the kept probabilities are a causal softmax
     * (rows summing to 1 within fp32's rounding, zeros above the diagonal) and the output is them
     * times V within bf16's rounding of both: a head of less than a vector, t of part of a band, of
     * bands with a ragged last one, one thread and two.
     */
    @ParameterizedTest
    @CsvSource({"2, 37, 24, 2, 2", "1, 130, 64, 1, 1", "3, 200, 96, 4, 2"})
    void aHeadsForwardInOneNativeCallGivesTheSameBitsKeptOrNot(int b, int t, int c, int nh, int threads) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        Random random = new Random(t * 11L + c);
        try (CpuKernels kernels = bf16Kernels("avx512", threads); Arena arena = Arena.ofShared()) {
            int n = b * t * c, na = b * nh * t * t, hs = c / nh;
            float[] qkvValues = gaussians(random, 3 * n);
            MemorySegment qkv = arena.allocateFrom(ValueLayout.JAVA_FLOAT, qkvValues);
            for (DType outType : new DType[]{DType.F32, DType.BF16}) {
                long bytes = (outType == DType.BF16 ? 2L : 4L) * n;
                MemorySegment kept = arena.allocate(bytes, 64), banded = arena.allocate(bytes, 64), att = arena.allocate(4L * na, 64);
                kept.fill((byte) 0x7f);
                banded.fill((byte) 0x7f);
                att.fill((byte) 0x7f);
                kernels.attentionForward(kept, outType, att, qkv, b, t, c, nh);
                kernels.attentionForward(banded, outType, null, qkv, b, t, c, nh);
                assertEquals(-1L, kept.mismatch(banded), outType + ", " + b + " x " + t + " x " + c + " / " + nh);
                if (outType == DType.BF16) continue;
                for (int bh = 0; bh < b * nh; bh++) {
                    int bb = bh / nh, h = bh % nh;
                    for (int i = 0; i < t; i++) {
                        double sum = 0;
                        for (int j = 0; j < t; j++) {
                            float p = att.getAtIndex(ValueLayout.JAVA_FLOAT, ((long) bh * t + i) * t + j);
                            if (j > i) assertEquals(0f, p, "above the diagonal, head " + bh + " row " + i);
                            else assertTrue(p >= 0f && p <= 1f, "a probability, head " + bh + " row " + i + ": " + p);
                            sum += p;
                        }
                        assertEquals(1.0, sum, 1e-5, "head " + bh + " row " + i);
                        for (int e = 0; e < hs; e++) {
                            double y = 0, scale = 0;
                            for (int j = 0; j <= i; j++) {
                                double p = ReferenceKernels.roundToBf16(att.getAtIndex(ValueLayout.JAVA_FLOAT, ((long) bh * t + i) * t + j));
                                double v = ReferenceKernels.roundToBf16(qkvValues[(bb * t + j) * 3 * c + 2 * c + h * hs + e]);
                                y += p * v;
                                scale += Math.abs(p * v);
                            }
                            float got = kept.getAtIndex(ValueLayout.JAVA_FLOAT, (long) (bb * t + i) * c + h * hs + e);
                            // fp32 sums of i + 1 exact products: each add rounds once
                            assertEquals(y, got, (i + 1) * 0x1p-23 * scale + 1e-30, "output, head " + bh + " row " + i + " dim " + e);
                        }
                    }
                }
            }
        }
    }

    /**
     * Attention's causal products in one native call a head give the bits of one bf16 GEMM call a
     * band (of 32 rows, as attention runs them, and of 64), in all three modes: scores as far as a band's last row (q kᵀ), sums up to it
     * (p v) and from its first row (pᵀ dout); strided operands as inside qkv, t of a part of a band,
     * of bands and a ragged last band, and past a panel of k (1,100); C poisoned or accumulated into.
     */
    @ParameterizedTest
    @CsvSource({"37, 24, 32", "200, 64, 32", "256, 64, 32", "1100, 40, 32", "200, 64, 64", "1100, 40, 64"})
    void causalProductsGiveTheBitsOfOneGemmABand(int t, int hs, int band) {
        assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        Bf16Gemm gemm = new Bf16Gemm();
        assumeTrue(gemm.hasCausal(), "skipped: the causal products run on the AVX512-BF16 path only");
        int ld = 3 * hs + 5;
        Random random = new Random(t * 7L + hs);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment x = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, t * ld));
            MemorySegment y = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, t * ld));
            MemorySegment p = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, t * t));
            float[] start = gaussians(random, t * Math.max(t, ld));
            start[3] = Float.NaN;
            int[][] modes = {{DistilleryCpu.CAUSAL_COLUMNS, 0, 1}, {DistilleryCpu.CAUSAL_K_TO, 0, 0}, {DistilleryCpu.CAUSAL_K_FROM, 1, 0}};
            for (int[] mode : modes) {
                for (float beta : new float[]{0f, 1f}) {
                    boolean transA = mode[1] == 1, transB = mode[2] == 1, columns = mode[0] == DistilleryCpu.CAUSAL_COLUMNS;
                    // COLUMNS: q (t, hs) kᵀ, C (t, t); the others: p (t, t) or pᵀ times v (t, hs), C (t, hs) of stride ld
                    MemorySegment a = columns ? x : p, b = columns ? y : x;
                    int n = columns ? t : hs, k = columns ? hs : t, lda = columns ? ld : t, ldc = columns ? t : ld;
                    MemorySegment want = arena.allocateFrom(ValueLayout.JAVA_FLOAT, start), got = arena.allocateFrom(ValueLayout.JAVA_FLOAT, start);
                    for (int i0 = 0; i0 < t; i0 += band) {
                        int i1 = Math.min(t, i0 + band), k0 = mode[0] == DistilleryCpu.CAUSAL_K_FROM ? i0 : 0;
                        gemm.sgemm(transA, transB, i1 - i0, columns ? i1 : n, mode[0] == DistilleryCpu.CAUSAL_K_TO ? i1 : k - k0, 0.125f,
                                a.asSlice(4L * (transA ? (long) k0 * lda + i0 : (long) i0 * lda + k0)), lda,
                                b.asSlice(4L * (transB ? k0 : (long) k0 * ld)), ld, beta, want.asSlice(4L * i0 * ldc), ldc);
                    }
                    gemm.causal(mode[0], band, transA, transB, t, n, k, 0.125f, a, lda, b, ld, beta, got, ldc);
                    assertEquals(-1L, want.mismatch(got), "mode " + mode[0] + ", beta " + beta + ", t " + t + ", hs " + hs + ", band " + band);
                }
            }
        }
    }

    /**
     * Under the bf16 GEMM and our fp32 one a linear layer's bias goes into the GEMM's first store
     * in place of C: the bits of the bias copied into every row and a GEMM with beta 1 on top. One
     * thread and two (rows split or claimed when n ≤ m, columns split when n > m), a bf16 (under
     * bf16) or fp32 input, ragged m and n, one row, and k past a panel (1,100), in the linear's
     * layout (weight (c, oc)) and the projection's (weight (oc, c), transposed); the output
     * poisoned with NaN first.
     */
    @ParameterizedTest
    @CsvSource({"BF16, 1, 5, 7, 3", "BF16, 1, 37, 100, 1100", "BF16, 2, 1024, 256, 256", "BF16, 2, 300, 770, 129", "BF16, 2, 64, 2000, 384",
                "FP32, 1, 5, 7, 3", "FP32, 1, 37, 100, 1100", "FP32, 2, 1024, 256, 256", "FP32, 2, 300, 770, 129", "FP32, 2, 64, 2000, 384",
                "FP32, 2, 1, 300, 40", "FP32, 2, 13, 1, 600"})
    void aLinearOrProjectionBiasInTheGemmGivesTheBitsOfOneCopiedIntoItsRows(Precision precision, int threads, int n, int oc, int c) {
        if (precision == Precision.BF16) {
            assumeTrue(Bf16Gemm.unavailableReason() == null, () -> "skipped: no bf16 GEMM here: " + Bf16Gemm.unavailableReason());
        } else {
            assumeTrue(NativeF32Gemm.available(), () -> "skipped: no native fp32 GEMM here: " + DistilleryCpu.status());
        }
        Random random = new Random(n * 31L + oc * 7L + c);
        try (CpuKernels kernels = new CpuKernels(threads, "auto", precision); Arena arena = Arena.ofShared()) {
            MemorySegment inp = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, n * c));
            MemorySegment inpBf16 = arena.allocate(2L * n * c, 64);
            for (long i = 0; i < (long) n * c; i++) inpBf16.setAtIndex(ValueLayout.JAVA_SHORT, i, VectorOps.bf16Bits(inp.getAtIndex(ValueLayout.JAVA_FLOAT, i)));
            MemorySegment weight = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, c * oc));
            MemorySegment bias = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, oc));
            for (DType type : precision == Precision.BF16 ? new DType[]{DType.F32, DType.BF16} : new DType[]{DType.F32}) {
                for (boolean projection : new boolean[]{false, true}) {
                    MemorySegment x = type == DType.BF16 ? inpBf16 : inp;
                    MemorySegment want = arena.allocate(4L * n * oc, 64), got = arena.allocate(4L * n * oc, 64);
                    for (long i = 0; i < (long) n * oc; i++) got.setAtIndex(ValueLayout.JAVA_FLOAT, i, Float.NaN);
                    kernels.broadcastRows(want, bias, n, oc);
                    kernels.gemm(false, projection, n, oc, c, 1f, x, type, c, weight, DType.F32, projection ? c : oc, 1f, want, oc);
                    if (projection) {
                        kernels.projectionForward(got, x, type, weight, bias, n, c, oc);
                    } else {
                        kernels.linearForward(got, x, type, weight, bias, n, c, oc);
                    }
                    assertEquals(-1L, want.mismatch(got), (projection ? "projection, " : "linear, ") + type + " input, " + threads + " threads, "
                            + n + " x " + oc + " x " + c);
                }
            }
        }
    }

    /**
     * Cross-entropy rows in C (the sparse rows' passes at T = 1) and in Java against float64, loss
     * and gradient: one column, a few, rows over several blocks with the maximum in a later block
     * than the first (the lazy maximum is raised), an ignored row; outputs poisoned.
     */
    @ParameterizedTest
    @CsvSource({"3, 1", "5, 17", "4, 4099"})
    void crossEntropyRowsInCAndInJavaMatchFloat64(int n, int v) {
        Random random = new Random(n * 100L + v);
        double[] logits = new double[n * v];
        for (int i = 0; i < logits.length; i++) logits[i] = 4 * random.nextGaussian();
        if (v > 2048) logits[v + 3000] = 90;   // row 1: far above its first block's maximum
        int[] targets = new int[n];
        for (int i = 0; i < n; i++) targets[i] = random.nextInt(v);
        targets[n - 1] = -100;
        double[] dlogits = new double[n * v];
        double[] losses = ReferenceKernels.softmaxCrossEntropy(logits, targets, n, v, -100, dlogits, 0.5);
        for (boolean inC : new boolean[]{true, false}) {
            CpuKernels.nativeCrossEntropy(inC);
            try (CpuKernels kernels = new CpuKernels(2, "auto"); Arena arena = Arena.ofShared()) {
                float[] x = new float[n * v];
                for (int i = 0; i < x.length; i++) x[i] = (float) logits[i];
                MemorySegment g = arena.allocateFrom(ValueLayout.JAVA_FLOAT, x), l = arena.allocate(4L * n, 64);
                l.fill((byte) 0x7f);
                assertEquals(n - 1, kernels.softmaxCrossEntropy(l, g, arena.allocateFrom(ValueLayout.JAVA_INT, targets), n, v, -100, true, 0.5f));
                for (int r = 0; r < n; r++) {
                    assertEquals(losses[r], l.getAtIndex(ValueLayout.JAVA_FLOAT, r), 2e-5 * Math.max(1, Math.abs(losses[r])), (inC ? "C" : "Java") + " loss " + r);
                }
                double worst = 0;
                for (int i = 0; i < n * v; i++) worst = Math.max(worst, Math.abs(dlogits[i] - g.getAtIndex(ValueLayout.JAVA_FLOAT, i)));
                assertTrue(worst < 1e-6, (inC ? "C" : "Java") + " gradient off by " + worst);
            } finally {
                CpuKernels.nativeCrossEntropy(true);
            }
        }
    }

    /** The vector rounding against the scalar one and the instructions' rules: ties to even, subnormals to signed zero, NaN quiet, infinities kept. */
    @Test
    void bf16RoundingOfVectorsMatchesTheScalarRuleOnEdgeValues() {
        float[] edge = {0f, -0f, 1f, -1f, 1f + 1f / 256, 1f + 3f / 256, 1f + 1f / 256 + 1f / 65536, Float.MIN_VALUE, -Float.MIN_NORMAL / 2,
                Float.MIN_NORMAL, Float.MAX_VALUE, -Float.MAX_VALUE, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NaN,
                Float.intBitsToFloat(0x7f800001), Float.intBitsToFloat(0xff812345), 3.3895314e38f, 65504f, 1e-30f};
        assertEquals((short) 0x3f81, VectorOps.bf16Bits(1f + 3f / 256 - 1f / 256));   // exactly 1 + 1/128
        assertEquals((short) 0x3f80, VectorOps.bf16Bits(1f + 1f / 256));               // a tie: to even (1)
        assertEquals((short) 0x3f82, VectorOps.bf16Bits(1f + 3f / 256));               // a tie: to even (1 + 2/128)
        assertEquals((short) 0x0000, VectorOps.bf16Bits(Float.MIN_VALUE));
        assertEquals((short) 0x8000, VectorOps.bf16Bits(-Float.MIN_NORMAL / 2));
        assertEquals((short) 0x7fc0, VectorOps.bf16Bits(Float.intBitsToFloat(0x7f800001)));
        assertEquals((short) 0x7f80, VectorOps.bf16Bits(Float.MAX_VALUE));             // rounds past the largest bf16 to infinity
        try (Arena arena = Arena.ofConfined()) {
            int lanes = VectorOps.LANES;
            float[] padded = Arrays.copyOf(edge, (edge.length + lanes - 1) / lanes * lanes);
            MemorySegment out = arena.allocate(2L * padded.length, 64);
            for (int i = 0; i < padded.length; i += lanes) {
                VectorOps.intoBf16(jdk.incubator.vector.FloatVector.fromArray(VectorOps.SPECIES, padded, i), out, i);
            }
            for (int i = 0; i < padded.length; i++) {
                assertEquals(VectorOps.bf16Bits(padded[i]), out.getAtIndex(ValueLayout.JAVA_SHORT, i), "value " + padded[i]);
            }
        }
    }

    private static void assertRoundedBitForBit(MemorySegment fp32, MemorySegment bf16, int n, String what) {
        for (int i = 0; i < n; i++) {
            float v = fp32.getAtIndex(ValueLayout.JAVA_FLOAT, i);
            assertEquals(VectorOps.bf16Bits(v), bf16.getAtIndex(ValueLayout.JAVA_SHORT, i), what + " element " + i + " (" + v + ")");
        }
    }

    private static MemorySegment bf16Copy(Arena arena, float[] values) {
        MemorySegment out = arena.allocate(2L * values.length, 64);
        for (int i = 0; i < values.length; i++) out.setAtIndex(ValueLayout.JAVA_SHORT, i, VectorOps.bf16Bits(values[i]));
        return out;
    }
}
