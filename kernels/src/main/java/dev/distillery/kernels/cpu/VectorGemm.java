package dev.distillery.kernels.cpu;

import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.set;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import jdk.incubator.vector.FloatVector;

/**
 * Pure Vector-API SGEMM, used when no BLAS loads (or {@code distillery.gemm=vector}). Without transB each row of C is built as Σ_p a(i,p)·B[p,:], four
 * rows at a time so every B vector loaded feeds four FMAs; with transB each element is a dot
 * product of two contiguous rows (a column of Aᵀ is gathered into a per-chunk buffer first).
 */
final class VectorGemm implements Gemm {

    private static final int ROW_BLOCK = 4;
    private final Arena scratchArena = Arena.ofShared();
    /** One gather buffer per calling thread, for Aᵀ columns when both operands are transposed. */
    private final ThreadLocal<MemorySegment> pack = new ThreadLocal<>();

    @Override
    public String describe() {
        return "Vector API (" + SPECIES.vectorBitSize() + "-bit)";
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k,
                      float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
                      float beta, MemorySegment c, int ldc) {
        if (m == 0 || n == 0) return;
        if (transB) {
            rowsDot(transA, 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, transA ? packBuffer(k) : null);
        } else {
            rowsAxpy(transA, 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        }
    }

    private MemorySegment packBuffer(int k) {
        MemorySegment p = pack.get();
        if (p == null || p.byteSize() < 4L * k) {
            synchronized (scratchArena) {
                p = scratchArena.allocate(4L * Math.max(k, 1), 64);
            }
            pack.set(p);
        }
        return p;
    }

    @Override
    public void close() {
        scratchArena.close();
    }

    private static float aAt(boolean transA, MemorySegment a, int lda, int i, int p) {
        return transA ? get(a, (long) p * lda + i) : get(a, (long) i * lda + p);
    }

    private static void scaleRow(MemorySegment c, long o, int n, float beta) {
        if (beta == 0f) VectorOps.fill(c, o, n, 0f);
        else if (beta != 1f) VectorOps.scale(c, o, n, beta);
    }

    /** C[i,:] = beta C[i,:] + alpha Σ_p a(i,p) B[p,:] for i in [start, end). */
    private static void rowsAxpy(boolean transA, int start, int end, int n, int k, float alpha,
                                 MemorySegment a, int lda, MemorySegment b, int ldb,
                                 float beta, MemorySegment c, int ldc) {
        for (int i = start; i < end; i++) scaleRow(c, (long) i * ldc, n, beta);
        int i = start;
        for (; i + ROW_BLOCK <= end; i += ROW_BLOCK) {
            long c0 = (long) i * ldc, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
            int j = 0;
            for (int bound = SPECIES.loopBound(n); j < bound; j += LANES) {
                FloatVector acc0 = FloatVector.fromMemorySegment(SPECIES, c, (c0 + j) * 4L, ORDER), acc1 = FloatVector.fromMemorySegment(SPECIES, c, (c1 + j) * 4L, ORDER), acc2 = FloatVector.fromMemorySegment(SPECIES, c, (c2 + j) * 4L, ORDER), acc3 = FloatVector.fromMemorySegment(SPECIES, c, (c3 + j) * 4L, ORDER);
                for (int p = 0; p < k; p++) {
                    FloatVector bv = FloatVector.fromMemorySegment(SPECIES, b, ((long) p * ldb + j) * 4L, ORDER);
                    acc0 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i, p)), acc0);
                    acc1 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i + 1, p)), acc1);
                    acc2 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i + 2, p)), acc2);
                    acc3 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i + 3, p)), acc3);
                }
                acc0.intoMemorySegment(c, (c0 + j) * 4L, ORDER);
                acc1.intoMemorySegment(c, (c1 + j) * 4L, ORDER);
                acc2.intoMemorySegment(c, (c2 + j) * 4L, ORDER);
                acc3.intoMemorySegment(c, (c3 + j) * 4L, ORDER);
            }
            for (; j < n; j++) {
                for (int r = 0; r < ROW_BLOCK; r++) {
                    float s = 0f;
                    for (int p = 0; p < k; p++) s += aAt(transA, a, lda, i + r, p) * get(b, (long) p * ldb + j);
                    long idx = (long) (i + r) * ldc + j;
                    set(c, idx, get(c, idx) + alpha * s);
                }
            }
        }
        for (; i < end; i++) {
            long ci = (long) i * ldc;
            for (int p = 0; p < k; p++) {
                VectorOps.axpy(alpha * aAt(transA, a, lda, i, p), b, (long) p * ldb, c, ci, n);
            }
        }
    }

    /** C[i,j] = beta C[i,j] + alpha dot(A row i, B row j) for i in [start, end). */
    private static void rowsDot(boolean transA, int start, int end, int n, int k, float alpha,
                                MemorySegment a, int lda, MemorySegment b, int ldb,
                                float beta, MemorySegment c, int ldc, MemorySegment pack) {
        for (int i = start; i < end; i++) {
            MemorySegment row = a;
            long ro = (long) i * lda;
            if (transA) {
                for (int p = 0; p < k; p++) set(pack, p, get(a, (long) p * lda + i));
                row = pack;
                ro = 0;
            }
            for (int j = 0; j < n; j++) {
                long idx = (long) i * ldc + j;
                float prior = beta == 0f ? 0f : beta * get(c, idx);
                set(c, idx, prior + alpha * VectorOps.dot(row, ro, b, (long) j * ldb, k));
            }
        }
    }
}
