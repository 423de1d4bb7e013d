package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

import dev.distillery.bindings.DistilleryCpu;

/** The yardstick of Bf16DotPeakBenchmark: its C function links and counts the operations it runs. */
class Bf16DotPeakTest {

    @Test
    void dotPeakCountsItsOperationsOrRefusesWithoutAvx512Bf16() {
        if (DistilleryCpu.bf16GemmKind() == DistilleryCpu.BF16_NONE) {
            assertThrows(IllegalStateException.class, () -> DistilleryCpu.bf16DotPeak(1));
            return;
        }
        assertEquals(1_000L * 24 * 16 * 2 * 2, DistilleryCpu.bf16DotPeak(1_000));
        assertEquals(0L, DistilleryCpu.bf16DotPeak(0));
    }
}
