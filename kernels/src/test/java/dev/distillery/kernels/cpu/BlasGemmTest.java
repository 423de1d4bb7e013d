package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Random;

import org.junit.jupiter.api.Test;

import dev.distillery.bindings.OpenBlasLibrary;
import dev.distillery.bindings.cblas.Cblas;

/**
 * Which OpenBLAS routine {@link BlasGemm} gives a product of one row of C: sgemv at every size on a
 * core whose sgemm packs its operands whatever their size, sgemv only past
 * {@link BlasGemm#GEMV_MIN_ELEMENTS} where sgemm has small-matrix kernels. Its values are held to
 * the float64 reference, on every size and transposition, by {@code CpuKernelsConformanceTest}.
 */
class BlasGemmTest {

    @Test
    void onlyTheCoresWithSmallMatrixKernelsKeepSgemmForSmallProducts() {
        for (String core : new String[]{"SkylakeX", "Cooperlake", "SapphireRapids", "skylakex"}) {
            assertEquals(BlasGemm.GEMV_MIN_ELEMENTS, BlasGemm.gemvMinElements(core), core);
        }
        for (String core : new String[]{"Zen", "Haswell", "Sandybridge", "Prescott", ""}) {
            assertEquals(1, BlasGemm.gemvMinElements(core), core);
        }
    }

    /**
     * A 1 × 97 × 300 product (29,100 elements of B, under {@link BlasGemm#GEMV_MIN_ELEMENTS}) gives
     * the bits of this library's sgemv where its core has no small-matrix kernels, and of its sgemm
     * where it has. Skipped where the two routines happen to agree to the last bit on these inputs,
     * since the bits could not tell them apart.
     */
    @Test
    void aSmallOneRowProductTakesTheRoutineItsCoreCallsFor() {
        assumeTrue(OpenBlasLibrary.probe().loaded(), () -> "skipped: " + OpenBlasLibrary.probe().describe());
        int n = 97, k = 300;
        Random random = new Random(5);
        float[] a = new float[k], b = new float[k * n];
        for (int i = 0; i < a.length; i++) a[i] = (float) random.nextGaussian();
        for (int i = 0; i < b.length; i++) b[i] = (float) random.nextGaussian();
        try (Arena arena = Arena.ofConfined()) {
            BlasGemm gemm = new BlasGemm();
            MemorySegment as = arena.allocateFrom(ValueLayout.JAVA_FLOAT, a), bs = arena.allocateFrom(ValueLayout.JAVA_FLOAT, b);
            MemorySegment viaGemm = arena.allocate(4L * n), viaSgemm = arena.allocate(4L * n), viaSgemv = arena.allocate(4L * n);
            gemm.sgemm(false, false, 1, n, k, 1f, as, k, bs, n, 0f, viaGemm, n);
            Cblas.cblas_sgemm(Cblas.CblasRowMajor(), Cblas.CblasNoTrans(), Cblas.CblasNoTrans(), 1, n, k, 1f, as, k, bs, n, 0f, viaSgemm, n);
            Cblas.cblas_sgemv(Cblas.CblasRowMajor(), Cblas.CblasTrans(), k, n, 1f, bs, n, as, 1, 0f, viaSgemv, 1);
            float[] got = viaGemm.toArray(ValueLayout.JAVA_FLOAT), sgemm = viaSgemm.toArray(ValueLayout.JAVA_FLOAT),
                    sgemv = viaSgemv.toArray(ValueLayout.JAVA_FLOAT);
            assumeFalse(Arrays.equals(sgemm, sgemv), "sgemm and sgemv give the same bits here");
            boolean small = BlasGemm.gemvMinElements(BlasGemm.coreName()) > (long) k * n;
            assertArrayEquals(small ? sgemm : sgemv, got, gemm.describe());
        }
    }
}
