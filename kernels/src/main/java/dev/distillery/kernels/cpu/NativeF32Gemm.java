package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.Kernels.ConstantHold;

/**
 * The fp32 GEMM of our own ({@code cpu/src/main/c/f32_gemm.c}, docs/KERNELS.md#the-fp32-gemm):
 * op(B) packed, then blocks of C formed with FMAs from op(A): 8 × 32 on AVX-512, 6 × 16 on AVX2
 * ({@code f32_gemm_avx2.c}). Both blocks form each element as the same chain of FMAs, so they give
 * the same bits; {@code -Ddistillery.f32Gemm=avx2} takes the AVX2 ones on an AVX-512 CPU (to test
 * them, or to compare the two). A B inside a {@linkplain #hold held} segment (a generation call's
 * weights; the LM head's weight over a step's chunks) is packed once per hold ({@link HeldPacks})
 * by a product of at most {@link #KEEP_PACK_ROWS} rows, every other B at each call, so a hold
 * changes the time of a product and never its bits.
 *
 * <p>Some products go to the GEMM this wraps (OpenBLAS, or the Vector-API GEMM): one column of C
 * (attention over a key/value cache, one query's scores) and one row against a B of fewer than
 * {@link #ONE_ROW_MIN_ELEMENTS}, where sgemv streams the matrix once and a pack would add passes
 * over it; and on the AVX2 blocks, products of more than {@link #AVX2_MAX_ROWS} rows and products
 * with a transposed A (weight gradients, attention's Pᵀ and dSᵀ products). A row
 * against a larger B (a decode step of one sequence through a real model's weights) stays here,
 * where the held weight's pack is read at memory speed and its bits are those of the same row in
 * a larger batch. Built where the native CPU library has an {@linkplain DistilleryCpu#f32GemmKind()
 * fp32 GEMM} for this CPU (AVX2 and FMA suffice, where the loss rows need AVX-512);
 * {@code -Ddistillery.gemm=blas} runs OpenBLAS for every product instead.
 */
final class NativeF32Gemm implements Gemm {

    /**
     * Rows of C up to which a product keeps a held B's pack. Packing at each call costs the
     * product a share that grows as its rows shrink: most of a decode step's (32 rows against the
     * LM head), 12–21% of a 256-row chunk of the training LM head's. Past this the share is small,
     * and a kept pack would double the memory of the weights it covers (a teacher run in the
     * process holds all of its own for the run); such a product uses a pack that is there already
     * and otherwise packs at the call, with the same bits either way.
     */
    static final int KEEP_PACK_ROWS = 512;

    /**
     * Elements of B (k · n) from which a product of one row of C is ours: below, OpenBLAS runs it
     * as fast (B stays in cache), and packing the B held for a generation call, three passes over
     * it, would not pay back over the call's tokens.
     */
    static final long ONE_ROW_MIN_ELEMENTS = 1L << 18;

    /**
     * Rows of C past which a product on the AVX2 blocks goes to the wrapped GEMM: at a training
     * step's heights OpenBLAS' blocks, which pack op(A) into L2 where ours read it where it lies,
     * ran as fast or ahead of ours on a Zen 3; at a decode step's, against a kept pack, and at
     * attention's, ours ran ahead (docs/PERFORMANCE.md, "Our fp32 GEMM on AVX2"). A product with a
     * transposed A goes there at any height: inside the training step, where a linear's two
     * gradients run side by side, OpenBLAS ran those ahead of ours, whose blocks pack such an A a
     * strip at a time (docs/PERFORMANCE.md, the same section).
     */
    static final int AVX2_MAX_ROWS = KEEP_PACK_ROWS;

    private final Gemm vectors;
    private final int kind;
    private final HeldPacks held;

    /** @param vectors the GEMM of products with one column of C, or one row and a small B */
    NativeF32Gemm(Gemm vectors) {
        this(vectors, kindAsked());
    }

    /** @param kind {@link DistilleryCpu#F32_AVX512} or {@link DistilleryCpu#F32_AVX2}, one this CPU runs */
    NativeF32Gemm(Gemm vectors, int kind) {
        int best = DistilleryCpu.f32GemmKind();
        if (best == DistilleryCpu.F32_NONE) {
            throw new IllegalStateException("native fp32 GEMM: the native CPU library is " + DistilleryCpu.status());
        }
        if ((kind != DistilleryCpu.F32_AVX2 && kind != DistilleryCpu.F32_AVX512) || kind > best) {
            throw new IllegalArgumentException("native fp32 GEMM: kind " + kind + " does not run on this CPU (its best is " + best + ")");
        }
        this.vectors = vectors;
        this.kind = kind;
        this.held = new HeldPacks(DistilleryCpu::f32PackedBBytes,
                (transB, k, n, b, ldb, bBf16, packed) -> DistilleryCpu.f32PackB(kind, transB, k, n, b, ldb, packed));
    }

    /** This CPU's best blocks, or the AVX2 ones where {@code -Ddistillery.f32Gemm=avx2} asks. */
    private static int kindAsked() {
        String asked = System.getProperty("distillery.f32Gemm", "auto").trim();
        return switch (asked) {
            case "auto" -> DistilleryCpu.f32GemmKind();
            case "avx2" -> DistilleryCpu.F32_AVX2;
            default -> throw new IllegalArgumentException("-Ddistillery.f32Gemm must be auto or avx2, got '" + asked + "'");
        };
    }

    /** Whether this CPU has the native fp32 GEMM. */
    static boolean available() {
        return DistilleryCpu.f32GemmKind() != DistilleryCpu.F32_NONE;
    }

    @Override
    public String describe() {
        return "native fp32 GEMM (" + (kind == DistilleryCpu.F32_AVX2 ? "AVX2" : "AVX-512") + " FMA; one column, or one row by a small matrix: "
                + vectors.describe() + ")";
    }

    /** Keeps the packs of B operands inside {@code operand} until the returned hold closes. */
    ConstantHold hold(MemorySegment operand) {
        return held.hold(operand);
    }

    /** {@link #sgemm(int, int, boolean, boolean, int, int, int, float, MemorySegment, int, MemorySegment, int, float, MemorySegment, int, MemorySegment)} of a whole product, with no bias. */
    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k,
                      float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
                      float beta, MemorySegment c, int ldc) {
        sgemm(m, n, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, null);
    }

    /**
     * {@link Gemm#sgemm} of a part of a product of {@code productRows} × {@code productColumns}
     * (a thread's share; the product itself where it is whole), the choices judged on the product
     * so that its bits do not depend on the split: a held B's pack is kept (made now if it was not
     * yet) when the product has at most {@link #KEEP_PACK_ROWS} rows, and used if it is there
     * otherwise; every other B is packed at the call; a product of one row against fewer than
     * {@link #ONE_ROW_MIN_ELEMENTS} of B, or of one column, or on the AVX2 blocks of more than
     * {@link #AVX2_MAX_ROWS} rows or with a transposed A, goes to the wrapped GEMM. A bias
     * (n floats, or null) stands in for every row of C as beta's operand: {@code C = alpha op(A)
     * op(B) + beta bias}, the bits of that row copied into every row of C first, without the pass
     * over C ({@code Kernels.linearForward}'s bias, as the bf16 GEMM takes it).
     */
    void sgemm(int productRows, int productColumns, boolean transA, boolean transB, int m, int n, int k,
               float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
               float beta, MemorySegment c, int ldc, MemorySegment bias) {
        if (m == 0 || n == 0) return;
        if (bias != null && bias.byteSize() < 4L * n) {
            throw new IllegalArgumentException("fp32 GEMM: a bias of " + bias.byteSize() + " bytes for " + n + " columns");
        }
        if (productColumns == 1 || (productRows == 1 && (long) k * productColumns < ONE_ROW_MIN_ELEMENTS)
                || (kind == DistilleryCpu.F32_AVX2 && (productRows > AVX2_MAX_ROWS || transA))) {
            if (bias != null) {
                for (int i = 0; i < m; i++) MemorySegment.copy(bias, 0, c, 4L * i * ldc, 4L * n);
            }
            vectors.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        long biasAddress = bias == null ? 0L : bias.address();
        MemorySegment packed = productRows <= KEEP_PACK_ROWS ? held.pack(transB, k, n, b, false, ldb) : held.packed(transB, k, n, b, false, ldb);
        if (packed != null) {
            DistilleryCpu.f32GemmPackedB(kind, transA, m, n, k, alpha, a.address(), lda, packed.address(), k, beta, c.address(), ldc, biasAddress);
        } else if (DistilleryCpu.f32Gemm(kind, transA, transB, m, n, k, alpha, a.address(), lda, b.address(), ldb, beta, c.address(), ldc,
                biasAddress) != 0) {
            throw new OutOfMemoryError("fp32 GEMM " + m + "x" + n + "x" + k + ": no memory to pack its B operand");
        }
    }

    /**
     * op(B) of k rows and n columns packed once, for products that each read its first rows or its
     * first columns ({@link #sgemm(int, int, int, float, MemorySegment, int, Pack, float, MemorySegment, int)}):
     * one attention head's K or V for all its bands of query rows.
     */
    record Pack(MemorySegment bytes, int k, int n) {
    }

    /** Bytes of op(B) (k, n) packed by {@link #pack}. */
    static long packBytes(int k, int n) {
        return DistilleryCpu.f32PackedBBytes(k, n);
    }

    /** op(B) (k, n) of B (row stride ldb) packed into {@code into}: {@link #packBytes} of it, 64-byte aligned. */
    Pack pack(boolean transB, int k, int n, MemorySegment b, int ldb, MemorySegment into) {
        long bytes = packBytes(k, n);
        if (into.byteSize() < bytes || into.address() % 64 != 0) {
            throw new IllegalArgumentException("fp32 GEMM: a pack of " + k + "x" + n + " needs " + bytes + " bytes at a 64-byte boundary, got "
                    + into.byteSize() + " at " + into.address());
        }
        long last = transB ? (long) (n - 1) * ldb + k : (long) (k - 1) * ldb + n;
        DistilleryCpu.f32PackB(kind, transB, k, n, b.asSlice(0, 4 * last).address(), ldb, into.address());
        return new Pack(into, k, n);
    }

    /**
     * C (m, n) = alpha op(A) op(B)[0, k)×[0, n) + beta C on our blocks, op(B) a {@link #pack} of at least
     * k rows and n columns: the bits of a product that packed that part of op(B) at the call.
     */
    void sgemm(int m, int n, int k, float alpha, MemorySegment a, int lda, Pack b, float beta, MemorySegment c, int ldc) {
        if (k > b.k() || n > b.n()) {
            throw new IllegalArgumentException("fp32 GEMM: " + k + "x" + n + " of op(B) from a pack of " + b.k() + "x" + b.n());
        }
        if (m == 0 || n == 0) return;
        // A's and C's extents, checked here (asSlice throws past a segment's end) before C reads them by address
        a.asSlice(0, 4 * ((long) (m - 1) * lda + k));
        c.asSlice(0, 4 * ((long) (m - 1) * ldc + n));
        DistilleryCpu.f32GemmPackedB(kind, false, m, n, k, alpha, a.address(), lda, b.bytes().address(), b.k(), beta, c.address(), ldc, 0L);
    }

    @Override
    public void close() {
        vectors.close();
    }
}
