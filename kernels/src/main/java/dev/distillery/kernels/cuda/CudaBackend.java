package dev.distillery.kernels.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * What {@link CudaKernels} needs of a GPU: device memory as raw addresses, copies, launches of the
 * fatbin's kernels by name, and column-major SGEMM (cuBLAS's convention). {@link CudaDevice} is the
 * real one (driver API + cuBLAS); the tests run {@link CudaKernels} on a CPU emulation of it.
 */
public interface CudaBackend extends AutoCloseable {

    /** A device pointer kernel argument (distinct from a 64-bit integer argument). */
    record Ptr(long address) {
    }

    String describe();

    long alloc(long bytes);

    void free(long address);

    void upload(long dst, MemorySegment src, long bytes);

    void download(MemorySegment dst, long src, long bytes);

    /** Device → device on the compute stream, ordered with the kernels; the host does not wait for it. */
    void copyDeviceToDevice(long dst, long src, long bytes);

    /** Page-locked host memory of {@code bytes} (the source of {@link #uploadAsync}). */
    MemorySegment allocHost(long bytes);

    void freeHost(MemorySegment host);

    /** Host (page-locked) → device on the copy stream, overlapping the compute stream's work. */
    void uploadAsync(long dst, MemorySegment src, long bytes);

    /** Makes the compute stream's later work wait for the copy stream's work issued so far. */
    void joinCopies();

    /**
     * Launches {@code kernel} with a 1-D grid. Arguments, as {@link CudaKernel#signature()} says:
     * {@link Ptr} (device pointer), Integer, Long (64-bit), Float, or a MemorySegment holding a
     * struct passed by value.
     */
    void launch(CudaKernel kernel, int grid, int block, Object... args);

    /** Column-major {@code C = alpha op(A) op(B) + beta C} (cublasSgemm's contract; C is not read when beta = 0). */
    void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b, int ldb,
               float beta, long c, int ldc);

    /** {@link #sgemm} over {@code batch} matrices at element strides (cublasSgemmStridedBatched). */
    void sgemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                             long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch);

    /**
     * {@link #sgemmStridedBatched} with A and B in bf16 and C in fp32, summed in fp32
     * (cublasGemmStridedBatchedEx with CUDA_R_16BF operands and CUBLAS_COMPUTE_32F).
     */
    void gemmBf16StridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch);

    void synchronize();

    /** Threads per block for the kernels' launches. */
    default int block() {
        return 256;
    }

    /** The largest grid worth launching for grid-stride kernels. */
    default int maxGrid() {
        return 4096;
    }

    /** The grid of a grid-stride launch over {@code n} elements at {@link #block()}: a thread each, at most {@link #maxGrid()} blocks. */
    default int grid(long n) {
        return (int) Math.max(1, Math.min(maxGrid(), (n + block() - 1) / block()));
    }

    @Override
    void close();

    /**
     * The {@code void** kernelParams} array of a launch: one pointer per argument, to a copy of its
     * value, after {@link CudaKernel#check} of the arguments.
     */
    static MemorySegment marshal(Arena arena, CudaKernel kernel, Object... args) {
        kernel.check(args);
        MemorySegment params = arena.allocate(ValueLayout.ADDRESS, Math.max(1, args.length));
        for (int i = 0; i < args.length; i++) {
            MemorySegment v = switch (args[i]) {
                case Ptr p -> arena.allocateFrom(ValueLayout.JAVA_LONG, p.address());
                case Integer x -> arena.allocateFrom(ValueLayout.JAVA_INT, x);
                case Long x -> arena.allocateFrom(ValueLayout.JAVA_LONG, x);
                case Float x -> arena.allocateFrom(ValueLayout.JAVA_FLOAT, x);
                case MemorySegment s -> {
                    MemorySegment copy = arena.allocate(s.byteSize(), 16);
                    copy.copyFrom(s);
                    yield copy;
                }
                default -> throw new IllegalArgumentException(kernel + ": argument " + i + " has unsupported type " + args[i].getClass());
            };
            params.setAtIndex(ValueLayout.ADDRESS, i, v);
        }
        return params;
    }
}
