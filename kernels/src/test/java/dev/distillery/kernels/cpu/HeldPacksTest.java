package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.Kernels.ConstantHold;

/**
 * The packs a hold keeps ({@link HeldPacks}), with a packer that writes each pack's number into
 * all of its bytes: a pack is made once per hold and shape; a closed hold's memory goes to the
 * next hold's pack of its size (packed again there, never read stale), and a hold that packed
 * nothing leaves it there; two open holds never share memory; what is spare and not taken is
 * freed when the next hold with packs closes, and at {@link HeldPacks#close} (an open hold's own
 * when it closes after).
 */
class HeldPacksTest {

    private final List<Long> packedAt = new ArrayList<>();
    private final HeldPacks packs = new HeldPacks((k, n) -> 4L * k * n, (transB, k, n, b, ldb, bBf16, packed) -> {
        packedAt.add(packed);
        MemorySegment.ofAddress(packed).reinterpret(4L * k * n).fill((byte) packedAt.size());
    });

    @Test
    void aClosedHoldsMemoryServesTheNextHoldsPackOfItsSize() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment w = arena.allocate(4L * 64 * 32, 64), w2 = arena.allocate(4L * 64 * 32, 64);
            MemorySegment other = arena.allocate(4L * 16 * 8, 64), activation = arena.allocate(4096, 64);
            MemorySegment first, again, twin, small;
            try (ConstantHold hold = packs.hold(w)) {
                first = packs.pack(true, 32, 64, w, false, 32);
                assertEquals(first, packs.pack(true, 32, 64, w, false, 32), "one pack per hold and shape");
                assertEquals(1, packedAt.size());
                assertNull(packs.pack(true, 8, 16, other, false, 8), "a B outside every hold is not packed");
            }
            try (ConstantHold held = packs.hold(activation)) {
                assertTrue(first.scope().isAlive(), "spare while no hold needs it");
            }
            assertTrue(first.scope().isAlive(), "a hold that packed nothing leaves the spare");
            try (ConstantHold hold = packs.hold(w); ConstantHold both = packs.hold(other)) {
                again = packs.pack(true, 32, 64, w, false, 32);
                assertEquals(first.address(), again.address(), "the closed hold's memory, taken by the same size");
                assertEquals(2, packedAt.size(), "packed again into it");
                assertEquals((byte) 2, again.get(ValueLayout.JAVA_BYTE, again.byteSize() - 1), "every byte rewritten");
                small = packs.pack(true, 8, 16, other, false, 8);
                try (ConstantHold inner = packs.hold(w2)) {
                    twin = packs.pack(true, 32, 64, w2, false, 32);
                    assertNotEquals(again.address(), twin.address(), "two open holds never share a pack's memory");
                }
                assertTrue(twin.scope().isAlive(), "the inner hold's pack is spare now");
            }
            // closed inner, both, hold in turn: each replaced the spare, freeing the one before
            assertFalse(twin.scope().isAlive());
            assertFalse(small.scope().isAlive());
            assertTrue(again.scope().isAlive());
            ConstantHold open = packs.hold(w);
            MemorySegment late = packs.pack(true, 32, 64, w, false, 32);
            assertEquals(again.address(), late.address());
            packs.close();
            assertTrue(late.scope().isAlive(), "an open hold keeps its packs");
            open.close();
            assertFalse(late.scope().isAlive(), "and frees them when it closes after the close");
        }
    }
}
