package dev.distillery.kernels;

import java.util.Locale;

/**
 * The arithmetic of a run's GEMMs. Under {@link #BF16} (mixed precision) every GEMM rounds its two
 * operands to bf16 and sums in fp32, and an activation that only GEMMs read is stored in bf16
 * ({@link Kernels#storesBf16Activations}); parameters, gradients, AdamW moments, the other
 * activations, losses, norms' and softmax statistics stay fp32 (docs/KERNELS.md#bf16-gemm).
 */
public enum Precision {
    FP32("fp32"), BF16("bf16");

    private final String key;

    Precision(String key) {
        this.key = key;
    }

    /** As written in configs and on the command line. */
    public String key() {
        return key;
    }

    /** "fp32" or "bf16"; {@code where} names the config key or flag in the error. */
    public static Precision parse(String value, String where) {
        String v = value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
        for (Precision p : values()) {
            if (p.key.equals(v)) return p;
        }
        throw new IllegalArgumentException(where + ": fp32 or bf16, got '" + value + "'");
    }
}
