package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.List;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import dev.distillery.bindings.CudaDevices;
import dev.distillery.kernels.conformance.KernelConformance;
import dev.distillery.kernels.cpu.CpuKernels;

/** On a machine with a CUDA device: every CUDA kernel against the CPU kernels. Skipped (saying why) elsewhere. */
@Tag("gpu")
class CudaConformanceGpuTest {

    @Test
    void everyCudaKernelMatchesTheCpuKernels() {
        CudaDevices.Probe probe = CudaDevices.probe();
        assumeTrue(probe.available(), "skipped: " + probe.reason());
        try (CudaDevice gpu = CudaDevice.open(0, false); CpuKernels cpu = new CpuKernels(2, "auto")) {
            List<KernelConformance.Result> results = CudaConformance.run(gpu, cpu, 17, false);
            StringBuilder failed = new StringBuilder();
            for (KernelConformance.Result r : results) if (!r.passed()) failed.append(r).append('\n');
            assertTrue(failed.isEmpty(), "on " + gpu.describe() + ":\n" + failed);
            assertTrue(results.size() > 40, "ran " + results.size() + " checks");
        }
    }
}
