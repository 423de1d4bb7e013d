package dev.distillery.kernels.cpu;

import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;

import java.lang.foreign.MemorySegment;
import java.util.function.Supplier;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.Kernels;
import jdk.incubator.vector.FloatVector;

/**
 * The CPU kernels' causal self-attention ({@link Kernels#attentionForward}, {@link Kernels#attentionDecode},
 * {@link Kernels#attentionBackward}, {@link Kernels#attentionBackwardInBands}).
 *
 * <p>Per (batch, head), on one pool thread each, with single-threaded GEMMs: q, k, v of a head
 * are (t, hs) matrices inside qkv with row stride 3c. The products run in bands of rows of the
 * (t, t) scores, each only as wide (or, transposed, as deep) as the causal mask leaves anything
 * in it: bands of 64 rows do 5/8 of the whole products' FLOPs at t = 256, where whole products
 * would cost twice the causal FLOPs. The probabilities above the diagonal are
 * written as zeros, so every product reads a lower triangle. See docs/KERNELS.md#attention.
 */
final class CpuAttention {

    /** Rows of the scores per band where each band is a GEMM call: fewer, wider calls at 64 than at 32. */
    private static final int CAUSAL_ROWS = 64;
    /**
     * Rows per band in the AVX512-BF16 path's one call a product, which packs each operand once for
     * all bands: 32, its column blocks' width, so each band computes less past the diagonal (9/16
     * of the whole square at t = 256, 5/8 at t = 128, against 5/8 and 3/4 at 64) at no cost in calls.
     */
    private static final int CAUSAL_ROWS_NATIVE = 32;

    /** The CPU kernels' per-chunk scratch: {@code floats} floats for each of {@code chunks} chunks, reused across calls. */
    @FunctionalInterface
    interface ChunkScratch {
        MemorySegment of(int chunks, long floats);
    }

    private final WorkerPool pool;
    /** The GEMM of the training products: fp32 (ours, OpenBLAS or the Vector API) or bf16. */
    private final Gemm gemm;
    /** The fp32 GEMM of generation's products, under either precision (made at its first use). */
    private final Supplier<Gemm> fp32Gemm;
    private final ChunkScratch chunkScratch;

    CpuAttention(WorkerPool pool, Gemm gemm, Supplier<Gemm> fp32Gemm, ChunkScratch chunkScratch) {
        this.pool = pool;
        this.gemm = gemm;
        this.fp32Gemm = fp32Gemm;
        this.chunkScratch = chunkScratch;
    }

    /**
     * Which part of C a band of rows [i0, i1) forms in {@link #causalProduct}: COLUMNS its columns
     * [0, i1) (q kᵀ and dout vᵀ: the scores as far as the band's last row's), K_TO the sums over
     * k &lt; i1 (att v and dpre k: the probabilities reach no further), K_FROM the sums over k ≥ i0
     * (attᵀ dout and dpreᵀ q: the rows below the band's first).
     */
    private enum Causal { COLUMNS, K_TO, K_FROM }

    /**
     * One head's causal product C (t, n) = alpha op(A) op(B) + beta C in bands of rows,
     * op(A) (t, k) and op(B) (k, n), with k = t for K_TO and K_FROM and n = t for COLUMNS; C's other
     * entries are left as they are. A GEMM call a band of CAUSAL_ROWS ({@link #bandProduct}), or on the
     * AVX512-BF16 path one native call that packs each operand once and gives the bits of a GEMM call
     * a band of CAUSAL_ROWS_NATIVE (docs/KERNELS.md#causal-self-attention).
     */
    private void causalProduct(Causal mode, boolean transA, int t, int n, int k, float alpha,
                               MemorySegment a, int lda, HeadOperand op, float beta, MemorySegment c, int ldc) {
        boolean transB = op.trans();
        MemorySegment b = op.b();
        int ldb = op.ldb();
        if (gemm instanceof Bf16Gemm bf16 && bf16.hasCausal()) {
            int cols = mode == Causal.COLUMNS ? t : n;
            int code = switch (mode) {
                case COLUMNS -> DistilleryCpu.CAUSAL_COLUMNS;
                case K_TO -> DistilleryCpu.CAUSAL_K_TO;
                case K_FROM -> DistilleryCpu.CAUSAL_K_FROM;
            };
            bf16.causal(code, CAUSAL_ROWS_NATIVE, transA, transB, t, n, k, alpha,
                    a.asSlice(0, 4L * (transA ? (long) (k - 1) * lda + t : (long) (t - 1) * lda + k)), lda,
                    b.asSlice(0, 4L * (transB ? (long) (n - 1) * ldb + k : (long) (k - 1) * ldb + n)), ldb,
                    beta, c.asSlice(0, 4L * ((long) (t - 1) * ldc + cols)), ldc);
            return;
        }
        for (int i0 = 0; i0 < t; i0 += CAUSAL_ROWS) {
            int i1 = Math.min(t, i0 + CAUSAL_ROWS), k0 = mode == Causal.K_FROM ? i0 : 0;
            bandProduct(transA, i1 - i0, mode == Causal.COLUMNS ? i1 : n, mode == Causal.K_TO ? i1 : k - k0, alpha,
                    a.asSlice(4L * (transA ? (long) k0 * lda + i0 : (long) i0 * lda + k0)), lda, op, k0, beta, c.asSlice(4L * i0 * ldc), ldc);
        }
    }

    /**
     * A B operand of a head's products: op(B) = {@code b}, transposed where {@code trans}, rows of
     * stride ldb; and for the head's K or V where the GEMM is ours, op(B) packed once for all the
     * head's bands, each of which reads its first columns (the scores' Kᵀ, dP's Vᵀ) or its first rows
     * (P V's V, dS K's K): the bits of the pack each band's call would make, without packing a
     * prefix of K or V again for every band (docs/KERNELS.md#packed-once-a-head).
     */
    private record HeadOperand(boolean trans, MemorySegment b, int ldb, NativeF32Gemm.Pack pack) {
        /** An operand read where it lies. */
        HeadOperand(boolean trans, MemorySegment b, int ldb) {
            this(trans, b, ldb, null);
        }
    }

    /**
     * The floats of a chunk's scratch that one of a head's packed K or V takes (a multiple of 16,
     * so packs laid one after another stay 64-byte aligned); 0 where the GEMM packs at each call.
     */
    private long headPackFloats(int t, int hs) {
        if (!(gemm instanceof NativeF32Gemm)) return 0;
        long bytes = Math.max(NativeF32Gemm.packBytes(hs, t), NativeF32Gemm.packBytes(t, hs));
        return (bytes / 4 + 15) / 16 * 16;
    }

    /**
     * The head's K or V at element {@code at} of qkv as op(B), Kᵀ or Vᵀ (hs, t) where {@code trans},
     * else (t, hs): packed into {@code scratch} ({@link #headPackFloats}) where the GEMM is ours.
     */
    private HeadOperand headOperand(boolean trans, MemorySegment qkv, long at, int t, int c, int hs, MemorySegment scratch) {
        MemorySegment b = qkv.asSlice(4 * at);
        return new HeadOperand(trans, b, 3 * c, gemm instanceof NativeF32Gemm ours
                ? ours.pack(trans, trans ? hs : t, trans ? t : hs, b, 3 * c, scratch) : null);
    }

    /**
     * C (m, n) = alpha op(A) op(B)[k0, k0 + k)×[0, n) + beta C, op(B) a head's operand: from its
     * pack where it has one (never with a transposed A or rows skipped: no band reads its pack so).
     */
    private void bandProduct(boolean transA, int m, int n, int k, float alpha, MemorySegment a, int lda, HeadOperand op, int k0,
                             float beta, MemorySegment c, int ldc) {
        if (op.pack() != null && !transA && k0 == 0) {
            ((NativeF32Gemm) gemm).sgemm(m, n, k, alpha, a, lda, op.pack(), beta, c, ldc);
        } else {
            gemm.sgemm(transA, op.trans(), m, n, k, alpha, a, lda, op.b().asSlice(4L * (op.trans() ? k0 : (long) k0 * op.ldb())), op.ldb(),
                    beta, c, ldc);
        }
    }

    /**
     * {@link Kernels#attentionForward}, its output in bf16 where {@code bf16} (checked by the caller).
     * On the AVX512-BF16 path a head is one native call ({@link Bf16Gemm#attentionForward}: each
     * operand packed once, the softmax between the products in C, the probabilities packed as it
     * makes them), kept probabilities or not alike; elsewhere the products are GEMM calls and the
     * softmax is {@link #softmaxRow}'s.
     */
    void forward(MemorySegment out, boolean bf16, MemorySegment att, MemorySegment qkv, int b, int t, int c, int nh) {
        boolean kept = att != null;
        int hs = headSize(c, nh), c3 = 3 * c;
        if (gemm instanceof Bf16Gemm native16 && native16.hasCausal()) {
            float scale = (float) (1.0 / Math.sqrt(hs));
            long eo = bf16 ? 2 : 4, headRows = 4L * ((long) (t - 1) * c3 + hs);
            pool.forEachClaimed(b * nh, 1, (chunk, start, end) -> {
                for (int bh = start; bh < end; bh++) {
                    int bb = bh / nh, h = bh % nh;
                    long q = (long) bb * t * c3 + (long) h * hs;
                    native16.attentionForward(t, hs, scale, qkv.asSlice(4 * q, headRows), qkv.asSlice(4 * (q + c), headRows),
                            qkv.asSlice(4 * (q + 2L * c), headRows), c3, kept ? att.asSlice(4L * bh * t * t, 4L * t * t) : null,
                            out.asSlice(eo * ((long) bb * t * c + (long) h * hs), eo * ((long) (t - 1) * c + hs)), c, bf16);
                }
            });
            return;
        }
        // per chunk: the head's packed Kᵀ and V; under a bf16 output, the fp32 product of a head,
        // rounded into its columns after; without att, one band of probabilities
        long packFloats = headPackFloats(t, hs), productFloats = bf16 ? (long) t * hs : 0;
        long perChunk = (2 * packFloats + productFloats + (kept ? 0 : bandFloats(t)) + 15) / 16 * 16;
        MemorySegment scratch = perChunk > 0 ? chunkScratch.of(pool.chunks(b * nh, 1), perChunk) : null;
        pool.forEachClaimed(b * nh, 1, (chunk, start, end) -> {
            long at = chunk * perChunk;
            MemorySegment kPack = packFloats > 0 ? scratch.asSlice(4L * at, 4L * packFloats) : null;
            MemorySegment vPack = packFloats > 0 ? scratch.asSlice(4L * (at + packFloats), 4L * packFloats) : null;
            MemorySegment y = bf16 ? scratch.asSlice(4L * (at + 2 * packFloats)) : null;
            MemorySegment band = kept ? null : scratch.asSlice(4L * (at + 2 * packFloats + productFloats), 4L * bandFloats(t));
            for (int bh = start; bh < end; bh++) {
                int bb = bh / nh, h = bh % nh;
                long q = (long) bb * t * c3 + (long) h * hs;
                HeadOperand kT = headOperand(true, qkv, q + c, t, c, hs, kPack), v = headOperand(false, qkv, q + 2L * c, t, c, hs, vPack);
                MemorySegment yh = bf16 ? y : out.asSlice(4 * ((long) bb * t * c + (long) h * hs));
                int ldy = bf16 ? hs : c;
                if (kept) {
                    MemorySegment attBh = attentionProbs(att, qkv, bh, q, kT, t, c, hs);
                    // out_h = att · v (t, hs), rows of stride c; rows [i0, i1) read att's first i1 columns
                    causalProduct(Causal.K_TO, false, t, hs, t, 1f, attBh, t, v, 0f, yh, ldy);
                } else {
                    // the same band calls as the kept probabilities' and their product's, one band at a time
                    for (int i0 = 0; i0 < t; i0 += CAUSAL_ROWS) {
                        int i1 = Math.min(t, i0 + CAUSAL_ROWS);
                        probsBand(band, qkv, q, kT, i0, i1, t, c, hs);
                        bandProduct(false, i1 - i0, hs, i1, 1f, band, t, v, 0, 0f, yh.asSlice(4L * i0 * ldy), ldy);
                    }
                }
                if (bf16) {
                    for (int i = 0; i < t; i++) roundRow(y, (long) i * hs, out, (long) bb * t * c + (long) i * c + (long) h * hs, hs);
                }
            }
        });
    }

    /** n fp32 values of x from element xo, rounded as the bf16 GEMM rounds, into bf16 elements of out from oo. */
    private static void roundRow(MemorySegment x, long xo, MemorySegment out, long oo, int n) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            VectorOps.intoBf16(FloatVector.fromMemorySegment(SPECIES, x, (xo + i) * 4L, ORDER), out, oo + i);
        }
        for (; i < n; i++) CpuKernels.setOutput(out, true, oo + i, get(x, xo + i));
    }

    /**
     * Head bh's probabilities (t, t) in att: scale · q kᵀ, rows [i0, i1) as far as column i1, then
     * the causal softmax of each row, zeros above the diagonal; q is the offset of the head's q in
     * qkv, kT its Kᵀ. Its bands are {@link #probsBand}'s calls, so the kept and the banded paths agree.
     */
    private MemorySegment attentionProbs(MemorySegment att, MemorySegment qkv, int bh, long q, HeadOperand kT, int t, int c, int hs) {
        float scale = (float) (1.0 / Math.sqrt(hs));
        MemorySegment attBh = att.asSlice(4L * bh * t * t);
        causalProduct(Causal.COLUMNS, false, t, t, hs, scale, qkv.asSlice(4 * q), 3 * c, kT, 0f, attBh, t);
        for (int i = 0; i < t; i++) softmaxRow(attBh, (long) i * t, i, t, t);
        return attBh;
    }

    /** Floats of one band of probabilities (or of their gradient): CAUSAL_ROWS rows of t. */
    private static long bandFloats(int t) {
        return (long) Math.min(t, CAUSAL_ROWS) * t;
    }

    /**
     * Rows [i0, i1) of the probabilities of the head whose q is at offset q of qkv (kT its Kᵀ), into
     * band (rows of t floats, row i at band row i − i0) as far as column i1: the band's own score
     * product and the rows' softmax, the calls and so the bits of those rows of {@link #attentionProbs}
     * on the fp32 path.
     */
    private void probsBand(MemorySegment band, MemorySegment qkv, long q, HeadOperand kT, int i0, int i1, int t, int c, int hs) {
        int c3 = 3 * c;
        bandProduct(false, i1 - i0, i1, hs, (float) (1.0 / Math.sqrt(hs)), qkv.asSlice(4 * (q + (long) i0 * c3)), c3, kT, 0, 0f, band, t);
        for (int i = i0; i < i1; i++) softmaxRow(band, (long) (i - i0) * t, i, t, i1);
    }

    /**
     * Row i of the causal softmax, in place over the scores at element row: its first i + 1 entries
     * become the probabilities and the rest up to width zeros. Over whole vectors: the scores past the
     * diagonal up to the next multiple of a vector (written by the product, whose band reaches that
     * far) are set to −inf first, so their exps are 0.
     */
    private static void softmaxRow(MemorySegment s, long row, int i, int t, int width) {
        int n = paddedRow(i + 1, t);
        VectorOps.fill(s, row + i + 1, n - i - 1, Float.NEGATIVE_INFINITY);
        float mx = VectorOps.max(s, row, n);
        float sum = VectorOps.expSum(s, row, n, mx, s, row);
        VectorOps.scale(s, row, n, 1f / sum);
        VectorOps.fill(s, row + n, width - n, 0f);
    }

    /** {@link Kernels#attentionDecode}. */
    void decode(MemorySegment out, MemorySegment scores, MemorySegment q, MemorySegment keys, MemorySegment values,
                                int b, int len, int maxLen, int nh, int kvh, int hs) {
        if (len < 1 || len > maxLen || nh % kvh != 0) {
            throw new IllegalArgumentException("attention over " + len + " of " + maxLen + " cached rows, " + nh + " heads over " + kvh);
        }
        float scale = (float) (1.0 / Math.sqrt(hs));
        int group = nh / kvh, width = kvh * hs;
        // fp32 under either precision, as the CUDA twin: a bf16 GEMM would round and pack K and V at
        // every token for products of one query row
        Gemm fp32 = fp32Gemm.get();
        pool.forEachClaimed(b * nh, 1, (chunk, start, end) -> {
            for (int bh = start; bh < end; bh++) {
                int bb = bh / nh, h = bh % nh;
                long qh = (long) bb * nh * hs + (long) h * hs, kv = (long) bb * maxLen * width + (long) (h / group) * hs;
                long row = (long) bh * maxLen;
                // scores = scale · K q (len), K's rows of stride width; then the softmax over them
                fp32.sgemm(false, false, len, 1, hs, scale, keys.asSlice(4 * kv), width, q.asSlice(4 * qh), 1, 0f, scores.asSlice(4 * row), 1);
                float mx = VectorOps.max(scores, row, len);
                float sum = VectorOps.expSum(scores, row, len, mx, scores, row);
                VectorOps.scale(scores, row, len, 1f / sum);
                // out_h = Vᵀ p (hs)
                fp32.sgemm(true, false, hs, 1, len, 1f, values.asSlice(4 * kv), width, scores.asSlice(4 * row), 1, 0f, out.asSlice(4 * qh), 1);
            }
        });
    }

    /** {@link Kernels#attentionBackward}, dqkvBeta checked by the caller. */
    void backward(MemorySegment dqkv, float dqkvBeta, MemorySegment datt, MemorySegment dout,
                  MemorySegment qkv, MemorySegment att, int b, int t, int c, int nh) {
        if (gemm instanceof Bf16Gemm bf16 && bf16.hasCausal()) {
            backwardByProducts(dqkv, dqkvBeta, datt, dout, qkv, att, b, t, c, nh);
        } else {
            inBands(dqkv, dqkvBeta, dout, qkv, att, b, t, c, nh);
        }
    }

    /** {@link Kernels#attentionBackwardInBands}, dqkvBeta checked by the caller. */
    void backwardInBands(MemorySegment dqkv, float dqkvBeta, MemorySegment dout, MemorySegment qkv, int b, int t, int c, int nh) {
        inBands(dqkv, dqkvBeta, dout, qkv, null, b, t, c, nh);
    }

    /**
     * The backward a band of query rows at a time, the last band first, with the band's
     * probabilities read from att where the forward kept them, or made again from qkv where att is
     * null ({@link #probsBand}: the kept ones' bits). Either way the calls are the same, so the two
     * give the same bits (docs/KERNELS.md#without-kept-probabilities). Each band's products read
     * only its own rows of P and dS, and the head's K and V from their packs (kept probabilities
     * read by column blocks, as {@link #backwardByProducts} does, would pack a suffix of G or Q
     * again for every block).
     */
    private void inBands(MemorySegment dqkv, float dqkvBeta, MemorySegment dout, MemorySegment qkv, MemorySegment att,
                         int b, int t, int c, int nh) {
        int hs = headSize(c, nh);
        float scale = (float) (1.0 / Math.sqrt(hs));
        int c3 = 3 * c;
        boolean kept = att != null;
        long bandFloats = bandFloats(t), packFloats = headPackFloats(t, hs);
        // per chunk, the head's packed Kᵀ (without att), Vᵀ and K, a band of probabilities (without att) and a band of their gradient
        long perChunk = (3 * packFloats + 2 * bandFloats + 15) / 16 * 16;
        MemorySegment scratch = chunkScratch.of(pool.chunks(b * nh, 1), perChunk);
        pool.forEachClaimed(b * nh, 1, (chunk, start, end) -> {
            long at = chunk * perChunk;
            MemorySegment kTPack = packFloats > 0 ? scratch.asSlice(4L * at, 4L * packFloats) : null;
            MemorySegment vTPack = packFloats > 0 ? scratch.asSlice(4L * (at + packFloats), 4L * packFloats) : null;
            MemorySegment kPack = packFloats > 0 ? scratch.asSlice(4L * (at + 2 * packFloats), 4L * packFloats) : null;
            MemorySegment made = scratch.asSlice(4L * (at + 3 * packFloats), 4L * bandFloats);
            MemorySegment dp = scratch.asSlice(4L * (at + 3 * packFloats + bandFloats), 4L * bandFloats);
            for (int bh = start; bh < end; bh++) {
                int bb = bh / nh, h = bh % nh;
                long q = (long) bb * t * c3 + (long) h * hs, k = q + c, v = q + 2L * c;
                long doutH = (long) bb * t * c + (long) h * hs;
                HeadOperand kT = kept ? null : headOperand(true, qkv, k, t, c, hs, kTPack);
                HeadOperand vT = headOperand(true, qkv, v, t, c, hs, vTPack), kOp = headOperand(false, qkv, k, t, c, hs, kPack);
                // the last band first: it reaches every row of dk and dv, so it writes them (dqkvBeta) and the others add
                for (int i0 = (t - 1) / CAUSAL_ROWS * CAUSAL_ROWS; i0 >= 0; i0 -= CAUSAL_ROWS) {
                    int i1 = Math.min(t, i0 + CAUSAL_ROWS), rows = i1 - i0;
                    float kvBeta = i1 == t ? dqkvBeta : 1f;
                    MemorySegment doutBand = dout.asSlice(4 * (doutH + (long) i0 * c));
                    MemorySegment p = kept ? att.asSlice(4L * ((long) bh * t * t + (long) i0 * t)) : made;
                    if (!kept) probsBand(made, qkv, q, kT, i0, i1, t, c, hs);
                    // dv[0, i1) += pᵀ · dout[i0, i1);  dp = dout[i0, i1) · v[0, i1)ᵀ
                    gemm.sgemm(true, false, i1, hs, rows, 1f, p, t, doutBand, c, kvBeta, dqkv.asSlice(4 * v), c3);
                    bandProduct(false, rows, i1, hs, 1f, doutBand, c, vT, 0, 0f, dp, t);
                    // softmax backward, with the 1/√hs of the scores folded in: dpre = scale · p ⊙ (dp − Σ p·dp), over
                    // whole vectors as in the forward (p is 0 past the diagonal), then +0 past it
                    for (int i = i0; i < i1; i++) {
                        long row = (long) (i - i0) * t;
                        VectorOps.softmaxBackward(p, dp, row, paddedRow(i + 1, t), scale);
                        VectorOps.fill(dp, row + i + 1, i1 - i - 1, 0f);
                    }
                    // dq[i0, i1) = dpre · k[0, i1);  dk[0, i1) += dpreᵀ · q[i0, i1)
                    bandProduct(false, rows, hs, i1, 1f, dp, t, kOp, 0, dqkvBeta, dqkv.asSlice(4 * (q + (long) i0 * c3)), c3);
                    gemm.sgemm(true, false, i1, hs, rows, 1f, dp, t, qkv.asSlice(4 * (q + (long) i0 * c3)), c3, kvBeta,
                            dqkv.asSlice(4 * k), c3);
                }
            }
        });
    }

    /**
     * The backward of kept probabilities on the AVX512-BF16 path: each of the four products one
     * {@link #causalProduct} over the whole head (one native call that packs each operand once),
     * rows of dv and dk from the column blocks of att and dpre below the diagonal.
     */
    private void backwardByProducts(MemorySegment dqkv, float dqkvBeta, MemorySegment datt, MemorySegment dout,
                                    MemorySegment qkv, MemorySegment att, int b, int t, int c, int nh) {
        int hs = headSize(c, nh);
        float scale = (float) (1.0 / Math.sqrt(hs));
        int c3 = 3 * c;
        // datt is scratch: each chunk's heads share its chunk's (t, t) slice of it, which stays in
        // cache from one head to the next, where a slice a head would be written to lines fetched
        // from memory (docs/PERFORMANCE.md)
        pool.forEachClaimed(b * nh, 1, (chunk, start, end) -> {
            MemorySegment dattBh = datt.asSlice(4L * chunk * t * t, 4L * t * t);
            for (int bh = start; bh < end; bh++) {
                int bb = bh / nh, h = bh % nh;
                long q = (long) bb * t * c3 + (long) h * hs, probs = (long) bh * t * t;
                MemorySegment attBh = att.asSlice(4 * probs);
                long doutH = (long) bb * t * c + (long) h * hs;
                // dv += attᵀ · dout: rows [j0, j1) of dv from att's rows j0.. (above them att is 0). Each of
                // dv, dq and dk has one product, over all of its rows: beta 0 writes it (a sum starts at
                // +0 and never becomes -0, so its bits are those of adding it to zeros)
                causalProduct(Causal.K_FROM, true, t, hs, t, 1f, attBh, t, new HeadOperand(false, dout.asSlice(4 * doutH), c),
                        dqkvBeta, dqkv.asSlice(4 * (q + 2L * c)), c3);
                // datt = dout · vᵀ, rows [i0, i1) as far as column i1
                causalProduct(Causal.COLUMNS, false, t, t, hs, 1f, dout.asSlice(4 * doutH), c, new HeadOperand(true, qkv.asSlice(4 * (q + 2L * c)), c3),
                        0f, dattBh, t);
                // softmax backward, with the 1/√hs of the scores folded in: dpre = scale · att ⊙ (datt − Σ att·datt)
                for (int i = 0; i < t; i++) {
                    long row = (long) i * t;
                    // over whole vectors as in the forward (att is 0 past the diagonal), then +0 past it
                    VectorOps.softmaxBackward(attBh, dattBh, row, paddedRow(i + 1, t), scale);
                    VectorOps.fill(dattBh, row + i + 1, t - i - 1, 0f);
                }
                // dq += dpre · k, rows [i0, i1) from dpre's first i1 columns; dk += dpreᵀ · q, rows [j0, j1) from dpre's rows j0..
                causalProduct(Causal.K_TO, false, t, hs, t, 1f, dattBh, t, new HeadOperand(false, qkv.asSlice(4 * (q + c)), c3), dqkvBeta,
                        dqkv.asSlice(4 * q), c3);
                causalProduct(Causal.K_FROM, true, t, hs, t, 1f, dattBh, t, new HeadOperand(false, qkv.asSlice(4 * q), c3), dqkvBeta,
                        dqkv.asSlice(4 * (q + c)), c3);
            }
        });
    }

    /**
     * A causal row of n entries widened to a whole number of vectors, at most t: within the band
     * (CAUSAL_ROWS or CAUSAL_ROWS_NATIVE rows, a multiple of a vector) the row lies in, so its
     * products wrote those columns.
     */
    private static int paddedRow(int n, int t) {
        return Math.min(t, (n + LANES - 1) / LANES * LANES);
    }

    private static int headSize(int c, int nh) {
        if (nh <= 0 || c % nh != 0) {
            throw new IllegalArgumentException("channels " + c + " are not divisible by heads " + nh);
        }
        return c / nh;
    }
}
