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

    /** A pass that rewinds after each block needs one block's bytes, even when its first run overflowed. */
    @Test
    void aRewoundPassIsSizedForItsPeakNotForTheSumOfItsBlocks() {
        try (var kernels = new dev.distillery.kernels.cpu.CpuKernels(1, "vector"); Workspace ws = new Workspace(kernels, 64)) {
            for (int pass = 0; pass < 3; pass++) {
                ws.allocate(1024);                       // what lives through the pass
                for (int block = 0; block < 4; block++) {
                    long mark = ws.mark();
                    ws.allocate(4096);
                    ws.allocate(2048);
                    ws.rewind(mark);
                }
                assertEquals(1024 + 4096 + 2048, ws.highWater(), "pass " + pass);
                ws.reset();
            }
            assertEquals(1024 + 4096 + 2048, ws.capacity());
            assertEquals(1, ws.growths(), "grown once, after the first pass");
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
