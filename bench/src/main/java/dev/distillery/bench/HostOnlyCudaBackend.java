package dev.distillery.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cuda.CudaBackend;
import dev.distillery.kernels.cuda.CudaKernel;
import dev.distillery.kernels.cuda.CudaKernels;

/**
 * A {@link CudaBackend} that does the host's share of every call and nothing of the device's:
 * "device" memory is host memory, a launch marshals its arguments as {@code CudaDevice} does and
 * stops short of {@code cuLaunchKernel}, GEMMs and waits return at once. {@code CudaKernels} over
 * it issues a whole training step on the CPU alone, so its time is what the JVM spends issuing a
 * GPU step (the tape, the workspace, the kernels' arguments), measurable on a machine without a
 * GPU. The values it computes are meaningless; nothing reads them but the step's own bookkeeping.
 */
final class HostOnlyCudaBackend implements CudaBackend {

    /** The device name of a step benchmark or profile that runs over this backend. */
    static final String DEVICE = "cuda-host-only";

    private final Arena memory = Arena.ofShared();

    /**
     * The kernels a step benchmark or profile runs on: {@link #DEVICE} gives the CUDA kernels over
     * a new backend of this kind (closed with them), any other name the backend {@link Backends}
     * opens for it.
     */
    static Kernels openKernels(String device, int threads, String gemm, Precision precision) {
        if (device.equals(DEVICE)) return CudaKernels.owning(new HostOnlyCudaBackend(), precision);
        return Backends.openExactly(new Backends.Request(Backend.parse(device), threads, gemm, false, precision));
    }

    @Override
    public String describe() {
        return "host-only (launches marshalled, never run)";
    }

    @Override
    public long alloc(long bytes) {
        return memory.allocate(Math.max(4, bytes), 256).address();
    }

    @Override
    public void free(long address) {
        // the arena frees everything at close; a step's allocations are persistent or reused
    }

    private static MemorySegment at(long address, long bytes) {
        return MemorySegment.ofAddress(address).reinterpret(bytes);
    }

    @Override
    public void upload(long dst, MemorySegment src, long bytes) {
        MemorySegment.copy(src, 0, at(dst, bytes), 0, bytes);
    }

    @Override
    public void download(MemorySegment dst, long src, long bytes) {
        MemorySegment.copy(at(src, bytes), 0, dst, 0, bytes);
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        // a device copy costs the host one call; the bytes are not needed
    }

    @Override
    public MemorySegment allocHost(long bytes) {
        return memory.allocate(Math.max(4, bytes), 64);
    }

    @Override
    public void freeHost(MemorySegment host) {
    }

    @Override
    public void uploadAsync(long dst, MemorySegment src, long bytes) {
        // a copy engine's work, not the host's
    }

    @Override
    public void joinCopies() {
    }

    @Override
    public void launch(CudaKernel kernel, int grid, int block, Object... args) {
        try (Arena call = Arena.ofConfined()) {
            CudaBackend.marshal(call, kernel, args);
        }
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b, int ldb, float beta,
                      long c, int ldc) {
        // cuBLAS's host work is the library's, not the JVM's: nothing of it is measured here
    }

    @Override
    public void sgemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                    long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch) {
    }

    @Override
    public void gemmBf16StridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                       long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch) {
    }

    @Override
    public void synchronize() {
    }

    @Override
    public void close() {
        memory.close();
    }
}
