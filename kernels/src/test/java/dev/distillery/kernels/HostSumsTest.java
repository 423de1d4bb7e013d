package dev.distillery.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The rank-order sum gives every element exactly the additions of the scalar loop, in its order:
 * bit for bit, on lengths with and without a vector tail, for a first part and a running sum, with
 * values spread over many octaves so that a changed order would change the bits.
 */
class HostSumsTest {

    @ParameterizedTest
    @CsvSource({"1, 1, true", "1, 37, false", "2, 1, false", "2, 16, true", "2, 1013, false", "3, 64, true", "4, 4099, false", "7, 130, true"})
    void addsThePartsInOrderBitForBit(int parts, int n, boolean first) {
        SplittableRandom rng = new SplittableRandom(31L * parts + n);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = arena.allocate(4L * parts * n, 64), sum = arena.allocate(4L * n, 64);
            float[] expected = new float[n];
            for (int i = 0; i < n; i++) {
                float s = (float) (rng.nextGaussian() * Math.scalb(1.0, rng.nextInt(-20, 20)));
                sum.setAtIndex(ValueLayout.JAVA_FLOAT, i, s);
                expected[i] = first ? Float.NaN : s;   // the NaN is never read when first
            }
            for (long j = 0; j < (long) parts * n; j++) {
                p.setAtIndex(ValueLayout.JAVA_FLOAT, j, (float) (rng.nextGaussian() * Math.scalb(1.0, rng.nextInt(-20, 20))));
            }
            if (first) sum.fill((byte) 0x7f);
            for (int i = 0; i < n; i++) {
                float acc = first ? p.getAtIndex(ValueLayout.JAVA_FLOAT, i) : expected[i] + p.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                for (int r = 1; r < parts; r++) acc += p.getAtIndex(ValueLayout.JAVA_FLOAT, (long) r * n + i);
                expected[i] = acc;
            }
            HostSums.addInOrder(sum, p, parts, n, first);
            for (int i = 0; i < n; i++) {
                assertEquals(Float.floatToRawIntBits(expected[i]), Float.floatToRawIntBits(sum.getAtIndex(ValueLayout.JAVA_FLOAT, i)), "element " + i);
            }
        }
    }

    @Test
    void refusesPartsLargerThanTheirBuffer() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment sum = arena.allocate(40), parts = arena.allocate(76);
            assertThrows(IllegalArgumentException.class, () -> HostSums.addInOrder(sum, parts, 2, 10, true));
        }
    }
}
