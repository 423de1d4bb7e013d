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

    /** A released segment serves the next request of its size; other sizes, a rewind and a reset leave it. */
    @Test
    void aReleasedSegmentIsReusedByTheNextRequestOfItsSizeOnly() {
        try (var kernels = new dev.distillery.kernels.cpu.CpuKernels(1, "vector"); Workspace ws = new Workspace(kernels, 1 << 16)) {
            var a = ws.allocate(1000);
            ws.allocate(64);
            ws.release(a);
            long before = ws.mark();
            assertEquals(a.address(), ws.allocate(1000).address(), "the released segment comes back");
            assertEquals(before, ws.mark(), "no bump for a reused segment");
            assertEquals(1000 + 64 + 24, ws.highWater(), "the high-water mark counts bumps only");
            var b = ws.allocate(1000);
            assertTrue(b.address() != a.address(), "a segment is handed out once");
            ws.release(b);
            assertTrue(ws.allocate(999).address() != b.address(), "another size takes fresh memory");
            long mark = ws.mark();
            ws.release(ws.allocate(512));
            ws.rewind(mark);
            var c = ws.allocate(256);
            assertTrue(ws.allocate(512).address() != c.address(), "a rewind forgets what was released past the mark");
        }
    }

    /** Past the block, tensors come from slabs: one allocation serves many small overflows, and every region is distinct. */
    @Test
    void overflowsShareSlabsAndNeverOverlap() {
        try (var kernels = new dev.distillery.kernels.cpu.CpuKernels(1, "vector"); Workspace ws = new Workspace(kernels, 64)) {
            long next = -1;
            for (int i = 0; i < 100; i++) {
                var s = ws.allocate(100_000 + i);
                assertEquals(0, s.address() % 64, "64-byte alignment");
                s.fill((byte) i);
                if (next >= 0) assertEquals(next, s.address(), "overflow " + i + " is bumped right after the one before, in the same slab");
                next = s.address() + (100_000 + i + 63) / 64 * 64;
            }
            var big = ws.allocate(100L << 20);   // more than a slab: a slab of its own
            big.asSlice(big.byteSize() - 1).fill((byte) 7);
            ws.reset();
            assertTrue(ws.capacity() >= 100 * 100_000L + (100L << 20));
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
