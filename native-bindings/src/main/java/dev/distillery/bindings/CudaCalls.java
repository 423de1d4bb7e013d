package dev.distillery.bindings;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.bindings.cublas.Cublas;
import dev.distillery.bindings.cuda.CudaDriver;

/**
 * Turns every {@code CUresult} and {@code cublasStatus_t} into a {@link CudaException} naming the
 * call, the status and its description. Only used after {@link CudaLibraries} loaded the library.
 */
public final class CudaCalls {

    private CudaCalls() {
    }

    /** @param call the call and the arguments that matter, e.g. {@code "cuMemAlloc(1073741824 bytes)"} */
    public static void driver(int result, String call) {
        if (result == CudaDriver.CUDA_SUCCESS()) return;
        throw new CudaException(call, result, driverString(result, true), driverString(result, false));
    }

    public static void cublas(int status, String call) {
        if (status == Cublas.CUBLAS_STATUS_SUCCESS()) return;
        throw new CudaException(call, status, cString(Cublas.cublasGetStatusName(status)), cString(Cublas.cublasGetStatusString(status)));
    }

    private static String driverString(int result, boolean name) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            int r = name ? CudaDriver.cuGetErrorName(result, out) : CudaDriver.cuGetErrorString(result, out);
            if (r != CudaDriver.CUDA_SUCCESS()) return name ? "CUresult " + result : "unknown error";
            return cString(out.get(ValueLayout.ADDRESS, 0));
        }
    }

    private static String cString(MemorySegment p) {
        return p.equals(MemorySegment.NULL) ? "(null)" : p.reinterpret(4096).getString(0);
    }
}
