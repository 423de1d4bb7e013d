package dev.distillery.kernels;

import java.util.Locale;

/** Where kernels run, as a user asks for it: {@code --device auto|cpu|cuda}. */
public enum Backend {
    /** CUDA when a driver, a device, cuBLAS and the jar's CUDA kernels are all there, else the CPU. */
    AUTO,
    CPU,
    CUDA;

    /** The flag's name: auto, cpu, cuda. */
    public String flag() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** @throws IllegalArgumentException naming the accepted values */
    public static Backend parse(String flag) {
        for (Backend b : values()) {
            if (b.flag().equals(flag)) return b;
        }
        throw new IllegalArgumentException("must be one of auto, cpu, cuda, got " + flag);
    }
}
