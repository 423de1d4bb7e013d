package dev.distillery.bindings;

import java.util.List;

/**
 * Finds and loads the CUDA driver ({@code libcuda.so.1}) and cuBLAS ({@code libcublas.so.13},
 * else {@code .12}) by soname ({@link SharedLibraries}). Nothing here throws on a machine without
 * CUDA: a probe says what it tried, and the binding classes ({@code bindings.cuda.CudaDriver},
 * {@code bindings.cublas.Cublas}) are never touched unless it succeeded.
 */
public final class CudaLibraries {

    public static final List<String> DRIVER_SONAMES = List.of("libcuda.so.1");
    public static final List<String> CUBLAS_SONAMES = List.of("libcublas.so.13", "libcublas.so.12");

    private static SharedLibraries.Probe driver;
    private static SharedLibraries.Probe cublas;

    private CudaLibraries() {
    }

    /** Loads the driver once; later calls return the first answer. */
    public static synchronized SharedLibraries.Probe driver() {
        if (driver == null) driver = SharedLibraries.load(DRIVER_SONAMES);
        return driver;
    }

    /** Loads cuBLAS once (.13 first, then .12). */
    public static synchronized SharedLibraries.Probe cublas() {
        if (cublas == null) cublas = SharedLibraries.load(CUBLAS_SONAMES);
        return cublas;
    }
}
