package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import java.util.List;
import java.util.stream.Collectors;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import dev.distillery.kernels.Precision;
import dev.distillery.kernels.conformance.KernelConformance;

class CpuKernelsConformanceTest {

    @ParameterizedTest(name = "gemm={0}, threads={1}")
    @CsvSource({"blas, 2", "vector, 2", "vector, 1", "blas, 3"})
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
        String before = System.getProperty("distillery.bf16Gemm");
        System.setProperty("distillery.bf16Gemm", path);
        try (CpuKernels kernels = new CpuKernels(threads, "auto", Precision.BF16)) {
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
        } finally {
            if (before == null) System.clearProperty("distillery.bf16Gemm");
            else System.setProperty("distillery.bf16Gemm", before);
        }
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
}
