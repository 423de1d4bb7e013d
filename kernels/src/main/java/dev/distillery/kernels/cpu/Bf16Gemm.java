package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.util.Objects;
import java.util.function.Consumer;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.Kernels.ConstantHold;

/**
 * The GEMM of bf16 mixed precision: both operands rounded to bf16, products summed in fp32, on AMX
 * tiles or AVX512-BF16 dot products ({@code cpu/src/main/c/bf16_gemm.c}, docs/KERNELS.md#bf16-gemm).
 * Built only where {@link #unavailableReason} is null. {@code -Ddistillery.bf16Gemm=avx512} takes
 * the AVX512-BF16 path on an AMX CPU (to test it, or to compare the two).
 *
 * <p>A B operand inside a {@linkplain #hold held} segment is packed once per (address, shape,
 * transpose) and reused until the hold closes ({@link HeldPacks}); every other operand is packed
 * at each call.
 */
final class Bf16Gemm implements Gemm {

    private final int kind;
    private final HeldPacks held = new HeldPacks(DistilleryCpu::bf16PackedBBytes, DistilleryCpu::bf16PackB);

    Bf16Gemm() {
        String why = unavailableReason();
        if (why != null) throw new IllegalStateException("bf16 GEMM: " + why);
        int best = DistilleryCpu.bf16GemmKind();
        String asked = System.getProperty("distillery.bf16Gemm", "auto").trim();
        this.kind = switch (asked) {
            case "auto" -> best;
            case "avx512" -> DistilleryCpu.BF16_AVX512;
            default -> throw new IllegalArgumentException("-Ddistillery.bf16Gemm must be auto or avx512, got '" + asked + "'");
        };
    }

    /** Why this machine has no bf16 GEMM, or null when it has one. */
    static String unavailableReason() {
        if (!DistilleryCpu.available()) return "the native CPU library is " + DistilleryCpu.status();
        if (DistilleryCpu.bf16GemmKind() == DistilleryCpu.BF16_NONE) return "this CPU has neither AMX-BF16 nor AVX512-BF16";
        return null;
    }

    @Override
    public String describe() {
        return "bf16 GEMM (" + (kind == DistilleryCpu.BF16_AMX ? "AMX" : "AVX512-BF16") + ", fp32 sums)";
    }

    /** Keeps the packs of B operands inside {@code operand} until the returned hold closes. */
    ConstantHold hold(MemorySegment operand) {
        return held.hold(operand);
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k,
                      float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
                      float beta, MemorySegment c, int ldc) {
        sgemm(transA, transB, m, n, k, alpha, a, false, lda, b, false, ldb, beta, c, ldc, null);
    }

    /**
     * {@link #sgemm} with A and/or B stored as bf16 ({@code aBf16}, {@code bBf16}), read as they are
     * instead of rounded, and with a bias (n floats, or null) that stands in for every row of C as
     * beta's operand: {@code C = alpha op(A) op(B) + beta bias}, the bits of that row copied into
     * every row of C before the call, without the pass over C.
     */
    void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, boolean aBf16, int lda,
               MemorySegment b, boolean bBf16, int ldb, float beta, MemorySegment c, int ldc, MemorySegment bias) {
        if (m == 0 || n == 0) return;
        MemorySegment packed = held.pack(transB, k, n, b, bBf16, ldb);
        long biasAddress = address(bias, n);
        int status = packed == null
                ? DistilleryCpu.bf16Gemm(kind, transA, transB, m, n, k, alpha, a.address(), lda, aBf16, b.address(), ldb, bBf16, beta,
                        c.address(), ldc, biasAddress)
                : DistilleryCpu.bf16GemmPackedB(kind, transA, m, n, k, alpha, a.address(), lda, aBf16, packed.address(), beta,
                        c.address(), ldc, biasAddress);
        requirePacked(status, m, n, k);
    }

    /**
     * {@link #sgemm} over the blocks of {@code claim} rows of C this thread claims from the int at
     * {@code next} (shared by the threads of one call, starting at 0), or of columns where
     * {@code byColumns} (each thread then packing all of op(A) once: for an op(A) much smaller than
     * op(B), which is then walked once in all instead of once a claim of rows), or with
     * {@code guided} (the call's threads) above 0 blocks that shrink to 32 as they run out, against
     * op(B) packed already into {@code packed} by the threads of the call ({@link #packColumns}),
     * for this call or held for the step ({@link #heldPack}); docs/KERNELS.md#bf16-gemm.
     */
    void sgemmClaimed(boolean byColumns, boolean transA, int m, int n, int k, float alpha, MemorySegment a, boolean aBf16, int lda,
                      MemorySegment packed, float beta, MemorySegment c, int ldc, MemorySegment bias, MemorySegment next, int claim,
                      int guided) {
        int status = DistilleryCpu.bf16GemmClaimed(kind, byColumns, transA, m, n, k, alpha, a.address(), lda, aBf16,
                packed.address(), beta, c.address(), ldc, address(bias, n), next.address(), claim, guided);
        requirePacked(status, m, n, k);
    }

    /** Bytes of op(B) (k, n) packed: what {@link #packColumns} fills over all n columns. */
    static long packedBytes(int k, int n) {
        return DistilleryCpu.bf16PackedBBytes(k, n);
    }

    /**
     * Columns [c0, c1) of op(B) (k, n) packed into their place in {@code packed}, a pack of all n
     * columns ({@link #packedBytes}): each 32 columns' pack depends on those columns alone, so
     * threads can pack disjoint column ranges of one operand. c0 is a multiple of 32, and so is c1
     * unless it is n.
     */
    static void packColumns(boolean transB, int k, int n, int c0, int c1, MemorySegment b, boolean bBf16, int ldb, MemorySegment packed) {
        if (c0 % 32 != 0 || (c1 != n && c1 % 32 != 0) || c0 < 0 || c1 > n || c0 >= c1) {
            throw new IllegalArgumentException("bf16 pack of columns [" + c0 + ", " + c1 + ") of " + n + ": bounds must be multiples of 32");
        }
        long eb = bBf16 ? 2 : 4, kp = (k + 31) / 32 * 32;
        long first = transB ? (long) c0 * ldb : c0, last = transB ? (long) (c1 - 1) * ldb + k : (long) (k - 1) * ldb + c1;
        Objects.checkFromToIndex(eb * first, eb * last, b.byteSize());
        Objects.checkFromToIndex(2L * kp * c0, 2L * kp * c0 + packedBytes(k, c1 - c0), packed.byteSize());
        DistilleryCpu.bf16PackB(transB, k, c1 - c0, b.address() + eb * first, ldb, bBf16, packed.address() + 2L * kp * c0);
    }

    /** Whether {@link #causal} runs here: on the AVX512-BF16 path (on AMX, attention makes a call a band). */
    boolean hasCausal() {
        return kind == DistilleryCpu.BF16_AVX512;
    }

    /**
     * One attention head's causal product, fp32 operands, in bands of {@code band} rows of C with
     * the bits of one {@link #sgemm} a band ({@code distillery_bf16_gemm_causal}; mode one of
     * {@code DistilleryCpu.CAUSAL_*}). The caller has checked that every operand lies in its segment.
     */
    void causal(int mode, int band, boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, int lda,
                MemorySegment b, int ldb, float beta, MemorySegment c, int ldc) {
        if (band <= 0 || band % 32 != 0) throw new IllegalArgumentException("causal bands of " + band + " rows: a positive multiple of 32");
        requirePacked(DistilleryCpu.bf16GemmCausal(mode, band, transA, transB, m, n, k, alpha, a.address(), lda, false,
                b.address(), ldb, false, beta, c.address(), ldc), m, n, k);
    }

    /**
     * One attention head's forward in one native call, on the AVX512-BF16 path ({@link #hasCausal}):
     * q, k and v (t, hs) rows {@code ld} floats apart; the probabilities kept in att (t, t) unless it
     * is null; out (t, hs), rows {@code ldo} elements apart, bf16 where {@code outBf16}
     * ({@code distillery_bf16_attention_forward}). The caller has checked that every operand lies in its segment.
     */
    void attentionForward(int t, int hs, float scale, MemorySegment q, MemorySegment k, MemorySegment v, int ld, MemorySegment att,
                          MemorySegment out, int ldo, boolean outBf16) {
        if (!hasCausal()) throw new IllegalStateException("a head's forward in one call runs on the AVX512-BF16 path only");
        requirePacked(DistilleryCpu.bf16AttentionForward(t, hs, scale, q.address(), k.address(), v.address(), ld,
                att == null ? 0L : att.address(), out.address(), ldo, outBf16), t, hs, t);
    }

    /** A bias row's address for the native GEMM (0: none), checked to hold n floats. */
    private static long address(MemorySegment bias, int n) {
        if (bias == null) return 0L;
        if (bias.byteSize() < 4L * n) throw new IllegalArgumentException("bf16 GEMM: a bias of " + bias.byteSize() + " bytes for " + n + " columns");
        return bias.address();
    }

    /** The native GEMM's status: 1 when its packing buffer could not be allocated (nothing was written). */
    private static void requirePacked(int status, int m, int n, int k) {
        if (status != 0) throw new OutOfMemoryError("bf16 GEMM " + m + "x" + n + "x" + k + ": no memory for its packed operands");
    }

    /**
     * op(B)'s pack when it lies inside a held segment, made now by {@code fill} ({@link #packColumns}
     * over a pool) if this slice and shape are new; else null.
     */
    MemorySegment heldPack(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb, Consumer<MemorySegment> fill) {
        return held.pack(transB, k, n, b, bBf16, ldb, fill);
    }

    /** Whether op(B) lies inside a held segment, so that it is packed once and not at every call. */
    boolean holds(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb) {
        return held.holds(transB, k, n, b, bBf16, ldb);
    }
}
