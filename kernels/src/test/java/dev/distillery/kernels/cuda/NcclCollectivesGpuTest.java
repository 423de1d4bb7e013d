package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import dev.distillery.bindings.CudaDevices;
import dev.distillery.bindings.NcclLibrary;
import dev.distillery.bindings.SharedLibraries;
import dev.distillery.kernels.DeviceCollectives;
import dev.distillery.kernels.cpu.CpuKernels;

/**
 * NCCL on a CUDA device: a group of one rank sums a device buffer in place (the identity, bit for
 * bit) on the kernels' stream, and a wrong id is refused by length. Skipped (saying why) without a
 * GPU or libnccl. Several ranks need several GPUs and mpirun: docs/SCALING.md.
 */
@Tag("gpu")
class NcclCollectivesGpuTest {

    @Test
    void aGroupOfOneSumsADeviceBufferInPlace() {
        CudaDevices.Probe probe = CudaDevices.probe();
        assumeTrue(probe.available(), "skipped: " + probe.reason());
        SharedLibraries.Probe nccl = NcclLibrary.load();
        assumeTrue(nccl.loaded(), "skipped: no NCCL: " + nccl.describe());
        try (CudaKernels kernels = CudaKernels.open(0, false); Arena arena = Arena.ofConfined()) {
            DeviceCollectives dc = kernels.deviceCollectives().orElseThrow();
            assertTrue(dc.describe().startsWith("NCCL "), dc.describe());
            byte[] id = dc.newId();
            assertEquals(dc.idBytes(), id.length);
            assertThrows(IllegalArgumentException.class, () -> dc.join(new byte[3], 0, 1));
            int n = 1_000_003;
            float[] values = new float[n];
            for (int i = 0; i < n; i++) values[i] = (float) Math.sin(i);
            MemorySegment host = arena.allocateFrom(ValueLayout.JAVA_FLOAT, values);
            MemorySegment device = kernels.allocate(arena, 4L * n);
            kernels.copyFromHost(device, host, 4L * n);
            try (DeviceCollectives.Sum sum = dc.join(id, 0, 1)) {
                sum.sum(device, n);
            }
            MemorySegment back = arena.allocate(4L * n, 64);
            kernels.copyToHost(back, device, 4L * n);
            assertArrayEquals(values, back.toArray(ValueLayout.JAVA_FLOAT));
        }
    }

    @Test
    void theCpuKernelsHaveNone() {
        try (CpuKernels cpu = new CpuKernels(1, "auto")) {
            assertTrue(cpu.deviceCollectives().isEmpty());
        }
    }
}
