package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.Precision;
import dev.distillery.kernels.conformance.KernelConformance;

/**
 * {@link CudaKernels}, its real launch path (argument marshalling, row-major GEMMs through
 * column-major calls, attention as strided GEMMs + causal softmax kernels, the host-side checks
 * and sums), on the CPU emulation of the device, held to the same float64 conformance suite as
 * {@code CpuKernels}.
 */
class CudaKernelsEmulationTest {

    private static EmulationBuild gcc;
    private static Path library;

    @BeforeAll
    static void compile() throws Exception {
        gcc = new EmulationBuild("distillery-emu-device");
        library = gcc.build("emu_device.cpp", "libdistillery_emu.so", "-O2", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE", "-shared", "-fPIC");
    }

    @AfterAll
    static void cleanUp() throws Exception {
        if (gcc != null) gcc.close();
    }

    @Test
    void cudaKernelsPassTheConformanceSuiteUnderEmulation() {
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device)) {
            List<KernelConformance.Result> results = KernelConformance.run(kernels, 23, KernelConformance.Sizes.quick());
            StringBuilder failed = new StringBuilder();
            for (KernelConformance.Result r : results) if (!r.passed()) failed.append(r).append('\n');
            assertTrue(failed.isEmpty(), failed.toString());
            assertTrue(results.size() >= 20 && device.launches() >= 20, results.size() + " checks, " + device.launches() + " launches");
        }
    }

    /** bf16 mixed precision: operands rounded by ops_round_to_bf16, multiplied with cublasGemmStridedBatchedEx's contract. */
    @Test
    void bf16GemmsMatchFloat64ReferenceOnBf16RoundedOperandsUnderEmulation() {
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, Precision.BF16)) {
            List<KernelConformance.Result> results = KernelConformance.run(kernels, System.nanoTime(), KernelConformance.Sizes.standard());
            StringBuilder failed = new StringBuilder();
            for (KernelConformance.Result r : results) if (!r.passed()) failed.append(r).append('\n');
            assertTrue(failed.isEmpty(), failed.toString());
            assertTrue(results.size() >= 4 * 7 + 3 * 4 && results.stream().allMatch(r -> r.kernel().endsWith(".bf16")), results.toString());
        }
    }
}
