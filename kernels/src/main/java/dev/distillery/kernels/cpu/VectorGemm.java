package dev.distillery.kernels.cpu;

import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.load;
import static dev.distillery.kernels.cpu.VectorOps.set;
import static dev.distillery.kernels.cpu.VectorOps.store;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import jdk.incubator.vector.FloatVector;

/**
 * Pure Vector-API SGEMM, used when no BLAS loads (or {@code distillery.gemm=vector}). Rows of C
 * are split over the pool. Without transB each row of C is built as Σ_p a(i,p)·B[p,:], four
 * rows at a time so every B vector loaded feeds four FMAs; with transB each element is a dot
 * product of two contiguous rows (a column of Aᵀ is gathered into a per-chunk buffer first).
 */
final class VectorGemm implements Gemm {

    private static final int ROW_BLOCK = 4;
    private final WorkerPool pool;
    private final Arena scratchArena = Arena.ofShared();
    private MemorySegment[] packedRows = new MemorySegment[0];

    VectorGemm(WorkerPool pool) {
        this.pool = pool;
    }

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
            MemorySegment[] packs = transA ? packBuffers(k) : null;
            pool.forEachChunk(m, 1, (chunk, start, end) ->
                    rowsDot(transA, start, end, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                            packs == null ? null : packs[chunk]));
        } else {
            pool.forEachChunk(m, ROW_BLOCK, (chunk, start, end) ->
                    rowsAxpy(transA, start, end, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
        }
    }

    /** One gather buffer of k floats per chunk, grown when a larger k arrives. */
    private synchronized MemorySegment[] packBuffers(int k) {
        int chunks = pool.threads();
        if (packedRows.length < chunks || packedRows[0].byteSize() < 4L * k) {
            packedRows = new MemorySegment[chunks];
            for (int i = 0; i < chunks; i++) packedRows[i] = scratchArena.allocate(4L * Math.max(k, 1), 64);
        }
        return packedRows;
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
                FloatVector acc0 = load(c, c0 + j), acc1 = load(c, c1 + j), acc2 = load(c, c2 + j), acc3 = load(c, c3 + j);
                for (int p = 0; p < k; p++) {
                    FloatVector bv = load(b, (long) p * ldb + j);
                    acc0 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i, p)), acc0);
                    acc1 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i + 1, p)), acc1);
                    acc2 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i + 2, p)), acc2);
                    acc3 = bv.fma(FloatVector.broadcast(SPECIES, alpha * aAt(transA, a, lda, i + 3, p)), acc3);
                }
                store(acc0, c, c0 + j);
                store(acc1, c, c1 + j);
                store(acc2, c, c2 + j);
                store(acc3, c, c3 + j);
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
