package dev.distillery.kernels.distill;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Element type of stored teacher logits; the loss kernel reads each directly. */
public enum LogitType {
    F32(4), F16(2), BF16(2);

    private final int bytes;

    LogitType(int bytes) {
        this.bytes = bytes;
    }

    public int bytes() {
        return bytes;
    }

    /** Element {@code index} of {@code s} as fp32. */
    public float read(MemorySegment s, long index) {
        return switch (this) {
            case F32 -> s.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index);
            case F16 -> Float.float16ToFloat(s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index));
            case BF16 -> Float.intBitsToFloat(s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index) << 16);
        };
    }

    /** The index (from 0) of the largest of the n elements at {@code offset}; the first on ties, 0 when all are NaN. */
    public int argmax(MemorySegment s, long offset, int n) {
        int best = 0;
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) {
            float x = read(s, offset + j);
            if (x > max) {
                max = x;
                best = j;
            }
        }
        return best;
    }

    /** Rounds v to this type and stores it (used by tests and writers; F16/BF16 round to nearest even). */
    public void write(MemorySegment s, long index, float v) {
        switch (this) {
            case F32 -> s.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index, v);
            case F16 -> s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, Float.floatToFloat16(v));
            case BF16 -> s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, toBf16(v));
        }
    }

    /** fp32 → bf16, round to nearest even; NaN stays NaN. */
    public static short toBf16(float v) {
        int bits = Float.floatToRawIntBits(v);
        if (Float.isNaN(v)) return (short) ((bits >>> 16) | 0x40);
        int rounding = 0x7FFF + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }
}
