package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.stream.Collectors;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

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
}
