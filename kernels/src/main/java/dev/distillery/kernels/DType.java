package dev.distillery.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * Element types, with their sizes and safetensors names: of tensors, of files, and of stored
 * teacher logits (F32, F16 or BF16, which the loss kernels read directly; {@link #read} and
 * {@link #write} convert one element).
 */
public enum DType {
    F64(8, "F64"), F32(4, "F32"), F16(2, "F16"), BF16(2, "BF16"),
    I64(8, "I64"), I32(4, "I32"), I16(2, "I16"), I8(1, "I8"),
    U64(8, "U64"), U32(4, "U32"), U16(2, "U16"), U8(1, "U8"), BOOL(1, "BOOL");

    private final int bytes;
    private final String safetensorsName;

    DType(int bytes, String safetensorsName) {
        this.bytes = bytes;
        this.safetensorsName = safetensorsName;
    }

    public int bytes() {
        return bytes;
    }

    public String safetensorsName() {
        return safetensorsName;
    }

    /** @throws IllegalArgumentException listing the known names when {@code name} is not one */
    public static DType fromSafetensors(String name) {
        for (DType d : values()) {
            if (d.safetensorsName.equals(name)) return d;
        }
        throw new IllegalArgumentException("unknown dtype '" + name + "' (known: "
                + Arrays.stream(values()).map(DType::safetensorsName).toList() + ")");
    }

    /** F32, F16 and BF16: the types teacher logits may be stored in, which {@link #read} and {@link #write} take. */
    public boolean isLogitType() {
        return this == F32 || this == F16 || this == BF16;
    }

    /** The logit types: F32, F16, BF16. */
    public static DType[] logitTypes() {
        return new DType[]{F32, F16, BF16};
    }

    /** Element {@code index} of {@code s} as fp32 (F32, F16 and BF16). */
    public float read(MemorySegment s, long index) {
        return switch (this) {
            case F32 -> s.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index);
            case F16 -> Float.float16ToFloat(s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index));
            case BF16 -> Float.intBitsToFloat(s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index) << 16);
            default -> throw new UnsupportedOperationException(this + " is not a float type read as fp32");
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

    /** Rounds v to this type (F32, F16, BF16) and stores it; F16 and BF16 round to nearest even. */
    public void write(MemorySegment s, long index, float v) {
        switch (this) {
            case F32 -> s.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index, v);
            case F16 -> s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, Float.floatToFloat16(v));
            case BF16 -> s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, toBf16(v));
            default -> throw new UnsupportedOperationException(this + " is not a float type written from fp32");
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
