package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;

/**
 * A row-major GEMM backend of {@link CpuKernels}: in fp32 our native GEMM, CBLAS (OpenBLAS) or the
 * Vector-API fallback; or the bf16 GEMM of mixed precision.
 * Each runs single-threaded per call; {@link CpuKernels} splits a large GEMM into row (or column)
 * blocks over its own pool, and calls {@link #sgemm} directly from inside parallel loops
 * (attention's per-head products). OpenBLAS' own threads are never used: their spinning workers
 * compete with ours for the cores (docs/KERNELS.md#gemm-and-threads).
 */
sealed interface Gemm extends AutoCloseable permits NativeF32Gemm, BlasGemm, VectorGemm, Bf16Gemm {

    /**
     * Which fp32 GEMM the CPU kernels use; {@code distillery.gemm=auto|blas|vector}: auto is ours
     * where the native CPU library runs, else OpenBLAS where it loads, else the Vector API.
     */
    enum Choice { AUTO, BLAS, VECTOR }

    String describe();

    /** C(m,n) = alpha op(A)(m,k) op(B)(k,n) + beta C, row-major, on the calling thread. */
    void sgemm(boolean transA, boolean transB, int m, int n, int k,
               float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
               float beta, MemorySegment c, int ldc);

    @Override
    default void close() {
    }
}
