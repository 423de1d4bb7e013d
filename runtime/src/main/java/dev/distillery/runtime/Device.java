package dev.distillery.runtime;

import dev.distillery.kernels.Kernels;

/** Where a tensor's storage lives. */
public enum Device {
    CPU, CUDA;

    /** Where {@code kernels} keep their buffers. */
    public static Device of(Kernels kernels) {
        return kernels.hostAccessible() ? CPU : CUDA;
    }
}
