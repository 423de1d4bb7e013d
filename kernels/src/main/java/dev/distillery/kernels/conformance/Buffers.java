package dev.distillery.kernels.conformance;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Native buffers for kernel checks: filled from float64 arrays, poisoned, and compared. */
public final class Buffers {

    private Buffers() {
    }

    /** x rounded to fp32, 64-byte aligned. */
    public static MemorySegment floats(Arena arena, double[] x) {
        MemorySegment s = arena.allocate(4L * Math.max(1, x.length), 64);
        for (int i = 0; i < x.length; i++) s.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) x[i]);
        return s;
    }

    public static MemorySegment ints(Arena arena, int[] x) {
        MemorySegment s = arena.allocate(4L * Math.max(1, x.length), 64);
        for (int i = 0; i < x.length; i++) s.setAtIndex(ValueLayout.JAVA_INT, i, x[i]);
        return s;
    }

    /** n fp32 NaNs: an element a kernel should have written and did not stays NaN. */
    public static MemorySegment poisoned(Arena arena, long n) {
        MemorySegment s = arena.allocate(4L * Math.max(1, n), 64);
        for (long i = 0; i < n; i++) s.setAtIndex(ValueLayout.JAVA_FLOAT, i, Float.NaN);
        return s;
    }

    /**
     * max |actual − expected| / max(max |expected|, floor) over the first expected.length fp32
     * elements; NaN anywhere gives NaN (so a poisoned, unwritten element fails every tolerance).
     */
    public static double relativeError(double[] expected, MemorySegment actual, double floor) {
        double maxDiff = 0, scale = floor;
        for (int i = 0; i < expected.length; i++) {
            double d = Math.abs(actual.getAtIndex(ValueLayout.JAVA_FLOAT, i) - expected[i]);
            if (Double.isNaN(d)) return Double.NaN;
            maxDiff = Math.max(maxDiff, d);
            scale = Math.max(scale, Math.abs(expected[i]));
        }
        return maxDiff / scale;
    }
}
