package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.api.Test;

class CpuKernelsErrorsTest {

    @Test
    void outOfRangeTokenIsRejectedWithItsPosition() {
        try (CpuKernels k = new CpuKernels(2, "vector"); Arena arena = Arena.ofShared()) {
            MemorySegment tokens = arena.allocateFrom(ValueLayout.JAVA_INT, 1, 2, 9, 0);
            MemorySegment wte = arena.allocate(4L * 5 * 3), wpe = arena.allocate(4L * 2 * 3), out = arena.allocate(4L * 4 * 3);
            var e = assertThrows(IllegalArgumentException.class, () -> k.embeddingForward(out, tokens, null, wte, wpe, 2, 2, 3, 5));
            assertTrue(e.getMessage().contains("token id 9 at position 2"), e.getMessage());
        }
    }

    @Test
    void outOfRangeTargetIsRejectedWithItsRow() {
        try (CpuKernels k = new CpuKernels(1, "vector"); Arena arena = Arena.ofShared()) {
            MemorySegment targets = arena.allocateFrom(ValueLayout.JAVA_INT, 0, 4);
            MemorySegment logits = arena.allocate(4L * 2 * 4), losses = arena.allocate(8);
            var e = assertThrows(IllegalArgumentException.class,
                    () -> k.softmaxCrossEntropy(losses, logits, targets, 2, 4, -100, true, 1f));
            assertTrue(e.getMessage().contains("target 4 at row 1"), e.getMessage());
        }
    }

    @Test
    void crossEntropyIsStableForHugeAndEqualLogits() {
        try (CpuKernels k = new CpuKernels(2, "vector"); Arena arena = Arena.ofShared()) {
            int v = 37;
            MemorySegment logits = arena.allocate(4L * 2 * v), losses = arena.allocate(8);
            for (int i = 0; i < v; i++) {
                logits.setAtIndex(ValueLayout.JAVA_FLOAT, i, i == 3 ? 1e4f : -1e4f);
                logits.setAtIndex(ValueLayout.JAVA_FLOAT, v + i, 7f);
            }
            MemorySegment targets = arena.allocateFrom(ValueLayout.JAVA_INT, 3, 5);
            assertEquals(2, k.softmaxCrossEntropy(losses, logits, targets, 2, v, -100, true, 0.5f));
            assertEquals(0f, losses.getAtIndex(ValueLayout.JAVA_FLOAT, 0), 1e-6f);
            assertEquals(Math.log(v), losses.getAtIndex(ValueLayout.JAVA_FLOAT, 1), 1e-5);
            for (int i = 0; i < 2 * v; i++) assertTrue(Float.isFinite(logits.getAtIndex(ValueLayout.JAVA_FLOAT, i)));
        }
    }

    @Test
    void unknownGemmChoiceNamesTheProperty() {
        var e = assertThrows(IllegalArgumentException.class, () -> new CpuKernels(1, "cublas"));
        assertTrue(e.getMessage().contains("distillery.gemm"), e.getMessage());
    }

    @Test
    void threadCountDoesNotChangeReductionsWhenChunksAreEqual() {
        try (CpuKernels one = new CpuKernels(2, "vector"); CpuKernels again = new CpuKernels(2, "vector");
             Arena arena = Arena.ofShared()) {
            int n = 100_003;
            MemorySegment x = arena.allocate(4L * n);
            for (int i = 0; i < n; i++) x.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) Math.sin(i));
            assertEquals(one.sumOfSquares(x, n), again.sumOfSquares(x, n), 0.0);
        }
    }
}
