package dev.distillery.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class WorkspaceTest {

    @Test
    void overflowingStepGrowsTheBlockOnceThenBumpsOnly() {
        try (var kernels = new dev.distillery.kernels.cpu.CpuKernels(1, "vector"); Workspace ws = new Workspace(kernels, 100)) {
            for (int step = 0; step < 3; step++) {
                for (int i = 0; i < 5; i++) {
                    var s = ws.allocate(1000 + i);
                    assertEquals(0, s.address() % 64, "64-byte alignment");
                    s.fill((byte) 1); // the whole region is writable
                }
                ws.reset();
            }
            assertEquals(1, ws.growths(), "only the first step may grow the block");
            assertTrue(ws.capacity() >= 5 * 1024);
            assertEquals(ws.capacity(), ws.highWater());
        }
    }

    @Test
    void zerosAreZero() {
        try (var kernels = new dev.distillery.kernels.cpu.CpuKernels(1, "vector"); Workspace ws = new Workspace(kernels, 1 << 12)) {
            Tensor t = ws.zeros("g", 3, 5);
            for (int i = 0; i < 15; i++) assertEquals(0f, t.getFloat(i));
        }
    }
}
