package dev.distillery.runtime;

import java.util.Arrays;

/** Element types, with their sizes and safetensors names. */
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
}
