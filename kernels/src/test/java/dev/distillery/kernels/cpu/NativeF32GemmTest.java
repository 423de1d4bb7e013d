package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.bindings.OpenBlasLibrary;
import dev.distillery.kernels.Kernels.ConstantHold;
import dev.distillery.kernels.reference.ReferenceKernels;

/**
 * Our fp32 GEMM ({@link NativeF32Gemm}, {@code cpu/src/main/c/f32_gemm.c}): the float64
 * reference's products within fp32 sums' bound, the same bits held or not and on one thread or
 * several, and a held B read from its pack until the hold closes; on every machine's blocks this
 * CPU runs (AVX-512's and AVX2's on an AVX-512 CPU), with the same packs and the same bits.
 */
class NativeF32GemmTest {

    /**
     * Awkward sizes: rows not a multiple of the 8-row block (1, 2, 3, 5 and 7 left over, and a
     * single row, which our GEMM keeps as a decode step of one sequence does), columns
     * not a multiple of 32, k over two and three panels of 512, both transposes, leading
     * dimensions longer than the operands, beta 0 over NaN and beta 1, alpha not 1, k = 0; B
     * packed at the call, then held (its pack made, then reused): the same bits all three times,
     * and on each machine's blocks.
     */
    @ParameterizedTest
    @CsvSource({"37, 1003, 77, true, false, 0.7, 0", "13, 531, 700, false, false, 1, 1", "6, 77, 33, true, true, 1, 0",
                "3, 50, 16, false, true, 1, 1", "2, 300, 20, false, true, -1.5, 0.5", "9, 40, 1100, false, false, 1, 0",
                "40, 300, 1100, true, true, 1, 1", "64, 33, 5, false, false, 1, 0", "11, 17, 0, false, true, 1, 0.5",
                "11, 17, 0, true, false, 1, 0", "1, 1003, 300, true, false, 0.7, 0", "1, 531, 700, false, true, 1, 1",
                "1, 300, 1100, true, true, 1, 0"})
    void heldProductsMatchFloat64ReferenceOnAwkwardSizes(int m, int n, int k, boolean transA, boolean transB, float alpha, float beta) {
        assumeTrue(NativeF32Gemm.available(), () -> "skipped: native CPU library " + DistilleryCpu.status());
        Random random = new Random(m * 1_000_003L + n * 31L + k);
        int lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 5, ldc = n + 2;
        int aRows = transA ? k : m, bRows = transB ? n : k;
        float[] a = gaussians(random, aRows * lda), b = gaussians(random, bRows * ldb), c0 = gaussians(random, m * ldc);
        double[] want = new double[m * ldc];
        for (int i = 0; i < want.length; i++) want[i] = c0[i];
        ReferenceKernels.gemm(transA, transB, m, n, k, alpha, widen(a), lda, widen(b), ldb, beta, want, ldc);
        double[] magnitude = new double[m * ldc];   // Σ |a| |b|: fp32 sums of k products lie within (k + 2) ε of it
        ReferenceKernels.gemm(transA, transB, m, n, k, 1, abs(widen(a)), lda, abs(widen(b)), ldb, 0, magnitude, ldc);
        MemorySegment firstPath = null;
        for (String path : paths()) {
            try (CpuKernels kernels = fp32Kernels(2, path); Arena arena = Arena.ofShared()) {
                assertTrue(kernels.describe().contains("native fp32 GEMM"), kernels.describe());
                MemorySegment as = arena.allocateFrom(ValueLayout.JAVA_FLOAT, a), bs = arena.allocateFrom(ValueLayout.JAVA_FLOAT, b);
                MemorySegment[] got = new MemorySegment[3];
                got[0] = product(kernels, arena, transA, transB, m, n, k, alpha, as, lda, bs, ldb, beta, c0, ldc);
                try (ConstantHold hold = kernels.holdConstant(bs)) {
                    got[1] = product(kernels, arena, transA, transB, m, n, k, alpha, as, lda, bs, ldb, beta, c0, ldc);
                    got[2] = product(kernels, arena, transA, transB, m, n, k, alpha, as, lda, bs, ldb, beta, c0, ldc);
                }
                for (int run = 0; run < 3; run++) {
                    MemorySegment cs = got[run];
                    for (int i = 0; i < m; i++) {
                        for (int j = 0; j < n; j++) {
                            double bound = (k + 3) * 0x1p-24 * (Math.abs(alpha) * magnitude[i * ldc + j] + Math.abs(beta * c0[i * ldc + j]));
                            assertEquals(want[i * ldc + j], cs.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * ldc + j), bound + Float.MIN_NORMAL,
                                    "run " + run + ", C[" + i + "][" + j + "] of " + m + "x" + n + "x" + k + (transA ? " T" : " N") + (transB ? "T" : "N"));
                        }
                        for (int j = n; j < ldc; j++) {
                            assertEquals(c0[i * ldc + j], cs.getAtIndex(ValueLayout.JAVA_FLOAT, (long) i * ldc + j), "past column " + n + " untouched");
                        }
                    }
                    assertEquals(-1L, got[0].mismatch(cs), "run " + run + ": the bits of B packed at the call");
                }
                if (firstPath == null) {
                    firstPath = Arena.ofAuto().allocate(got[0].byteSize(), 64).copyFrom(got[0]);
                } else if (!transA) {   // on the AVX2 blocks a transposed A is the wrapped GEMM's: aTransposedAGivesTheBitsOfItsUntransposedCopy
                    assertEquals(-1L, firstPath.mismatch(got[0]), path + " blocks: the bits of " + paths().get(0) + "'s");
                }
            }
        }
    }

    /** This CPU's best blocks first ("auto"), then the AVX2 ones where that is another machine. */
    private static List<String> paths() {
        return DistilleryCpu.f32GemmKind() == DistilleryCpu.F32_AVX512 ? List.of("auto", "avx2") : List.of("auto");
    }

    /** Kernels whose fp32 GEMM runs {@code path}'s blocks: the GEMM reads {@code distillery.f32Gemm} once, when it is built. */
    static CpuKernels fp32Kernels(int threads, String path) {
        String before = System.getProperty("distillery.f32Gemm");
        System.setProperty("distillery.f32Gemm", path);
        try {
            return new CpuKernels(threads, "auto");
        } finally {
            if (before == null) System.clearProperty("distillery.f32Gemm");
            else System.setProperty("distillery.f32Gemm", before);
        }
    }

    /**
     * On the AVX2 blocks a product of more than {@link NativeF32Gemm#AVX2_MAX_ROWS} rows, or with a
     * transposed A at any height, is the wrapped GEMM's (OpenBLAS here): the bits of
     * {@code -Ddistillery.gemm=blas} on one thread.
     */
    @ParameterizedTest
    @CsvSource({"513, true", "513, false", "37, true", "1, true"})
    void onTheAvx2BlocksATallProductOrATransposedAIsTheWrappedGemms(int m, boolean transA) {
        assumeTrue(NativeF32Gemm.available(), () -> "skipped: native CPU library " + DistilleryCpu.status());
        assumeTrue(OpenBlasLibrary.probe().loaded(), "skipped: no OpenBLAS here to wrap");
        int n = 100, k = 70;
        Random random = new Random(5 + m);
        try (CpuKernels ours = fp32Kernels(1, "avx2"); CpuKernels blas = new CpuKernels(1, "blas"); Arena arena = Arena.ofConfined()) {
            int lda = transA ? m : k;
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * k));
            MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, k * n));
            MemorySegment got = arena.allocate(4L * m * n, 64), want = arena.allocate(4L * m * n, 64);
            ours.gemm(transA, false, m, n, k, 1f, a, lda, b, n, 0f, got, n);
            blas.gemm(transA, false, m, n, k, 1f, a, lda, b, n, 0f, want, n);
            assertEquals(-1L, got.mismatch(want), m + " rows" + (transA ? ", A transposed" : "") + ": OpenBLAS' bits");
        }
    }

    /**
     * Each machine's blocks this CPU runs, called directly, give on a transposed A the bits of the
     * same A stored untransposed (on AVX2 a transposed A is packed a strip at a time, into the
     * panel's buffer or, past 4 MB of it, a strip's own, and the kernels hand such products to
     * OpenBLAS): rows not a multiple of 6 or 8, k over panels, both B. Untransposed products are
     * held to the same bits across the machines above.
     */
    @ParameterizedTest
    @CsvSource({"37, 1003, 77, false", "40, 300, 1100, true", "6, 77, 33, true", "2100, 40, 600, false"})
    void aTransposedAGivesTheBitsOfItsUntransposedCopy(int m, int n, int k, boolean transB) {
        assumeTrue(NativeF32Gemm.available(), () -> "skipped: native CPU library " + DistilleryCpu.status());
        Random random = new Random(m * 7L + n);
        int lda = m + 3, ldb = (transB ? k : n) + 5;
        float[] at = gaussians(random, k * lda), a = new float[m * k];
        for (int i = 0; i < m; i++) {
            for (int p = 0; p < k; p++) a[i * k + p] = at[p * lda + i];
        }
        List<Integer> kinds = DistilleryCpu.f32GemmKind() == DistilleryCpu.F32_AVX512
                ? List.of(DistilleryCpu.F32_AVX512, DistilleryCpu.F32_AVX2) : List.of(DistilleryCpu.F32_AVX2);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ats = arena.allocateFrom(ValueLayout.JAVA_FLOAT, at), as = arena.allocateFrom(ValueLayout.JAVA_FLOAT, a);
            MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, (transB ? n : k) * ldb));
            for (int kind : kinds) {
                MemorySegment got = arena.allocate(4L * m * n, 64).fill((byte) 0x7f), want = arena.allocate(4L * m * n, 64).fill((byte) 0x7f);
                assertEquals(0, DistilleryCpu.f32Gemm(kind, true, transB, m, n, k, 0.7f, ats.address(), lda, b.address(), ldb,
                        0f, got.address(), n, 0L));
                assertEquals(0, DistilleryCpu.f32Gemm(kind, false, transB, m, n, k, 0.7f, as.address(), k, b.address(), ldb,
                        0f, want.address(), n, 0L));
                assertEquals(-1L, got.mismatch(want), "kind " + kind + ", " + m + " x " + n + " x " + k + (transB ? " TT" : " TN"));
            }
        }
    }

    /**
     * The AVX2 pack writes the AVX-512 pack's bytes (the layout both machines' blocks read), over a
     * poisoned buffer: columns not a multiple of 8, 16 or 32, k not a multiple of 8, both
     * transposes, a leading dimension longer than the rows.
     */
    @ParameterizedTest
    @CsvSource({"1003, 77, false", "1003, 77, true", "37, 9, true", "5, 3, false", "5, 3, true", "64, 1, true", "48, 16, false", "48, 16, true"})
    void theAvx2PackWritesTheBytesOfTheAvx512Pack(int n, int k, boolean transB) {
        assumeTrue(DistilleryCpu.f32GemmKind() == DistilleryCpu.F32_AVX512, () -> "skipped: no AVX-512 here to compare with");
        Random random = new Random(n * 131L + k);
        int ldb = (transB ? k : n) + 3;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, (transB ? n : k) * ldb));
            long bytes = DistilleryCpu.f32PackedBBytes(k, n);
            MemorySegment wide = arena.allocate(bytes, 64).fill((byte) 0x7f), narrow = arena.allocate(bytes, 64).fill((byte) 0x7f);
            DistilleryCpu.f32PackB(DistilleryCpu.F32_AVX512, transB, k, n, b.address(), ldb, wide.address());
            DistilleryCpu.f32PackB(DistilleryCpu.F32_AVX2, transB, k, n, b.address(), ldb, narrow.address());
            assertEquals(-1L, wide.mismatch(narrow), n + " x " + k + (transB ? ", transposed" : ""));
        }
    }

    /**
     * A product over the first k rows and n columns of a pack made once at (depth, width), as one
     * attention head's K or V serves all its bands, gives the bits of the same product with that
     * part of op(B) packed at the call, on every machine's blocks: k not a multiple of 8 and past a
     * panel of 512, n not a multiple of 16 or 32, the whole pack, one row, both transposes of B,
     * beta 0 over NaN and beta 1.
     */
    @ParameterizedTest
    @CsvSource({"64, 1000, 64, 577, 64, false, 0", "64, 64, 700, 64, 600, false, 1", "7, 64, 300, 53, 300, true, 0",
                "37, 133, 61, 133, 61, true, 1", "1, 2048, 64, 1024, 64, true, 0", "64, 64, 2048, 64, 1025, false, 0",
                "3, 100, 40, 100, 40, false, 0"})
    void aProductOverTheFirstRowsOrColumnsOfAPackHasTheBitsOfItsOwnPack(int m, int width, int depth, int n, int k, boolean transB, float beta) {
        assumeTrue(NativeF32Gemm.available(), () -> "skipped: native CPU library " + DistilleryCpu.status());
        Random random = new Random(m * 7919L + width * 31L + depth);
        int lda = k + 3, ldb = (transB ? depth : width) + 5, ldc = n + 2;
        int[] kinds = DistilleryCpu.f32GemmKind() == DistilleryCpu.F32_AVX512
                ? new int[]{DistilleryCpu.F32_AVX512, DistilleryCpu.F32_AVX2} : new int[]{DistilleryCpu.F32_AVX2};
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * lda));
            MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, (transB ? width : depth) * ldb));
            float[] c0 = gaussians(random, m * ldc);
            for (int kind : kinds) {
                NativeF32Gemm gemm = new NativeF32Gemm(new VectorGemm(), kind);
                MemorySegment into = arena.allocate(NativeF32Gemm.packBytes(depth, width), 64).fill((byte) 0x7f);
                NativeF32Gemm.Pack pack = gemm.pack(transB, depth, width, b, ldb, into);
                MemorySegment got = arena.allocateFrom(ValueLayout.JAVA_FLOAT, c0), want = arena.allocateFrom(ValueLayout.JAVA_FLOAT, c0);
                if (beta == 0f) {
                    for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) got.setAtIndex(ValueLayout.JAVA_FLOAT, (long) i * ldc + j, Float.NaN);
                }
                gemm.sgemm(m, n, k, 0.5f, a, lda, pack, beta, got, ldc);
                assertEquals(0, DistilleryCpu.f32Gemm(kind, false, transB, m, n, k, 0.5f, a.address(), lda, b.address(), ldb, beta,
                        want.address(), ldc, 0L));
                assertEquals(-1L, got.mismatch(want), "kind " + kind + ": " + k + " x " + n + " of a " + depth + " x " + width + " pack");
            }
        }
    }

    /** C = alpha op(A) op(B) + beta C0 into a new C, its first n columns NaN where beta is 0 (so never read). */
    private static MemorySegment product(CpuKernels kernels, Arena arena, boolean transA, boolean transB, int m, int n, int k, float alpha,
                                         MemorySegment a, int lda, MemorySegment b, int ldb, float beta, float[] c0, int ldc) {
        MemorySegment c = arena.allocateFrom(ValueLayout.JAVA_FLOAT, c0);
        if (beta == 0f) {
            for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) c.setAtIndex(ValueLayout.JAVA_FLOAT, (long) i * ldc + j, Float.NaN);
        }
        kernels.gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return c;
    }

    /**
     * A held B is read from its pack from its second product on, until the hold closes: B changed
     * under a hold (which the contract forbids, and which shows what is read) leaves the product
     * of the old B, and after the hold the new B is read. The first product reads B as it lies,
     * and the products give the same bits on one thread and on two (C split by columns there).
     */
    @Test
    void aHeldOperandIsReadFromItsPackUntilTheHoldCloses() {
        assumeTrue(NativeF32Gemm.available(), () -> "skipped: native CPU library " + DistilleryCpu.status());
        int m = 32, n = 1000, k = 128;
        Random random = new Random(3);
        try (CpuKernels one = new CpuKernels(1, "auto"); CpuKernels two = new CpuKernels(2, "auto"); Arena arena = Arena.ofShared()) {
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * k));
            float[] first = gaussians(random, n * k), second = gaussians(random, n * k);
            MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, first);
            MemorySegment[] oneThread = new MemorySegment[3], twoThreads = new MemorySegment[3];
            for (CpuKernels kernels : new CpuKernels[]{one, two}) {
                MemorySegment[] out = kernels == one ? oneThread : twoThreads;
                MemorySegment.copy(first, 0, b, ValueLayout.JAVA_FLOAT, 0, first.length);
                try (ConstantHold hold = kernels.holdConstant(b)) {
                    for (int run = 0; run < 2; run++) {
                        out[run] = arena.allocate(4L * m * n, 64);
                        kernels.gemm(false, true, m, n, k, 1f, a, k, b, k, 0f, out[run], n);
                    }
                    MemorySegment.copy(second, 0, b, ValueLayout.JAVA_FLOAT, 0, second.length);
                    MemorySegment stale = arena.allocate(4L * m * n, 64);
                    kernels.gemm(false, true, m, n, k, 1f, a, k, b, k, 0f, stale, n);
                    assertEquals(-1L, stale.mismatch(out[1]), "under the hold the pack of the first B is read");
                }
                out[2] = arena.allocate(4L * m * n, 64);
                kernels.gemm(false, true, m, n, k, 1f, a, k, b, k, 0f, out[2], n);
                assertNotEquals(-1L, out[2].mismatch(out[1]), "after the hold the new B is read");
            }
            for (int i = 0; i < 3; i++) assertEquals(-1L, oneThread[i].mismatch(twoThreads[i]), "product " + i + ": one thread's bits on two");
            assertEquals(-1L, oneThread[0].mismatch(oneThread[1]), "a pack reused gives its first product's bits");
            // a product with more rows than KEEP_PACK_ROWS keeps no pack: B changed under the hold is read as it is
            int tall = NativeF32Gemm.KEEP_PACK_ROWS + 1;
            MemorySegment many = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, tall * k));
            MemorySegment.copy(first, 0, b, ValueLayout.JAVA_FLOAT, 0, first.length);
            MemorySegment before = arena.allocate(4L * tall * n, 64), under = arena.allocate(4L * tall * n, 64);
            MemorySegment after = arena.allocate(4L * tall * n, 64);
            try (ConstantHold hold = two.holdConstant(b)) {
                two.gemm(false, true, tall, n, k, 1f, many, k, b, k, 0f, before, n);
                MemorySegment.copy(second, 0, b, ValueLayout.JAVA_FLOAT, 0, second.length);
                two.gemm(false, true, tall, n, k, 1f, many, k, b, k, 0f, under, n);
            }
            two.gemm(false, true, tall, n, k, 1f, many, k, b, k, 0f, after, n);
            assertNotEquals(-1L, before.mismatch(under), "a tall product kept no pack");
            assertEquals(-1L, under.mismatch(after), "the bits of the product with no hold");
        }
    }

    /**
     * A product of one row (a decode step of one sequence) against a B past
     * {@link NativeF32Gemm#ONE_ROW_MIN_ELEMENTS} gives the bits of that row in a product of 32 (a
     * batch), B held or packed at the call, on one thread or two: every element of C is one sum
     * over k in the same order whatever the rows around it.
     */
    @Test
    void aRowAloneHasItsBitsInALargerProduct() {
        for (String path : paths()) aRowAloneHasItsBitsInALargerProduct(path);
    }

    private void aRowAloneHasItsBitsInALargerProduct(String path) {
        assumeTrue(NativeF32Gemm.available(), () -> "skipped: native CPU library " + DistilleryCpu.status());
        int m = 32;
        Random random = new Random();
        // (n, k): three panels of k; and a B past the threshold whose halves, two threads' parts, are not
        for (int[] nk : new int[][]{{1000, 1100}, {300, 1000}}) {
            int n = nk[0], k = nk[1];
            assertTrue((long) n * k >= NativeF32Gemm.ONE_ROW_MIN_ELEMENTS);
            try (CpuKernels one = fp32Kernels(1, path); CpuKernels two = fp32Kernels(2, path); Arena arena = Arena.ofShared()) {
                MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, m * k));
                MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_FLOAT, gaussians(random, n * k));
                MemorySegment batch = arena.allocate(4L * m * n, 64), row = arena.allocate(4L * n, 64);
                one.gemm(false, true, m, n, k, 1f, a, k, b, k, 0f, batch, n);
                for (CpuKernels kernels : new CpuKernels[]{one, two}) {
                    for (boolean held : new boolean[]{false, true}) {
                        try (ConstantHold hold = held ? kernels.holdConstant(b) : ConstantHold.NONE) {
                            for (int r : new int[]{0, 13, m - 1}) {
                                row.fill((byte) 0x7f);
                                kernels.gemm(false, true, 1, n, k, 1f, a.asSlice(4L * r * k), k, b, k, 0f, row, n);
                                assertEquals(-1L, row.mismatch(batch.asSlice(4L * r * n, 4L * n)), n + " x " + k + ", row " + r
                                        + (held ? ", held" : "") + ", " + (kernels == one ? "one thread" : "two threads") + ", " + path);
                            }
                        }
                    }
                }
            }
        }
    }

    private static float[] gaussians(Random random, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) random.nextGaussian();
        return x;
    }

    private static double[] abs(double[] x) {
        for (int i = 0; i < x.length; i++) x[i] = Math.abs(x[i]);
        return x;
    }

    private static double[] widen(float[] x) {
        double[] d = new double[x.length];
        for (int i = 0; i < x.length; i++) d[i] = x[i];
        return d;
    }
}
