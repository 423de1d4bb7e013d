/*
 * The fp32 GEMM: C = alpha op(A) op(B) + beta C, row-major, fp32 throughout, with op(B) packed at
 * each call into the calling thread's buffer (distillery_f32_gemm), or once for many calls where B
 * stays the same (distillery_f32_pack_b, distillery_f32_gemm_packed_b: a generation call's weights,
 * token after token; the LM head's weight over a step's chunks). op(A) is read where it lies, one
 * broadcast a row and step of k. Twin of the float64 reference ReferenceKernels.gemm;
 * docs/KERNELS.md#the-fp32-gemm.
 *
 *   Bp  op(B) in blocks of 16 columns, each k rows of 16 floats: Bp[jb][kk][j] = op(B)[kk][16 jb + j],
 *       columns padded with zeros to np = ceil32(n)
 *
 * The driver here walks C in blocks of the machine's shape (f32_gemm.h): on AVX-512, 8 rows x 32
 * columns of accumulators, as the AVX512-BF16 path's block_8x32 with one FMA where it has one dot
 * product (4, 2 or 1 rows for the last strip of a short C); on AVX2, 6 x 16 (f32_gemm_avx2.c).
 * Blocks are walked in bands of packed B that stay in L2 while op(A)'s rows stream past, over
 * panels of KC_F32 of k; each panel's sums are added to C in fp32. Every element of C is one sum
 * over k in order, panel by panel, so the bits do not depend on how the callers split C between
 * threads, nor on the machine's blocks. The driver carries no target attribute: it runs, and is
 * compiled for, any x86-64; only the blocks use their machine's instructions.
 */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "f32_gemm.h"
#include "gemm_blocks.h"

#define F32 __attribute__((target("avx512f,avx512bw,fma")))

/* The machine that runs the fp32 GEMM here: F32_AVX512, F32_AVX2 or F32_NONE. */
int distillery_f32_gemm_kind(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) return F32_NONE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return F32_AVX512;
    return __builtin_cpu_supports("avx2") ? F32_AVX2 : F32_NONE;
}

F32 static void pack_avx512(int trans_b, int k, int n, const float *b, int ldb, float *bp) {
    if (n <= 0 || k <= 0) return;
    const int np = round_up(n, 32);
    if (np != n) memset(bp + (size_t) (n / 16) * k * 16, 0, (size_t) (np - n / 16 * 16) * k * 4);   /* the last blocks, padding included */
    if (!trans_b) {   /* op(B)[kk][j] = b[kk * ldb + j]: 16 columns of a row of B are one line of their block */
        for (int kk = 0; kk < k; kk++) {
            const float *row = b + (size_t) kk * ldb;
            int j = 0;
            for (; j + 16 <= n; j += 16) _mm512_storeu_ps(bp + ((size_t) (j / 16) * k + kk) * 16, _mm512_loadu_ps(row + j));
            if (j < n) {
                const __mmask16 live = (__mmask16) ((1u << (n - j)) - 1);
                _mm512_storeu_ps(bp + ((size_t) (j / 16) * k + kk) * 16, _mm512_maskz_loadu_ps(live, row + j));
            }
        }
    } else {          /* op(B)[kk][j] = b[j * ldb + kk]: 16 rows of B by 16 of k at a time, transposed in registers */
        int j = 0;
        for (; j + 16 <= n; j += 16) {
            float *block = bp + (size_t) (j / 16) * k * 16;
            int kk = 0;
            for (; kk + 16 <= k; kk += 16) {
                __m512i r[16];
                for (int q = 0; q < 16; q++) r[q] = _mm512_castps_si512(_mm512_loadu_ps(b + (size_t) (j + q) * ldb + kk));
                transpose_16x16(r);
                for (int q = 0; q < 16; q++) _mm512_storeu_si512(block + (size_t) (kk + q) * 16, r[q]);
            }
            for (int q = 0; q < 16; q++) {
                for (int kt = kk; kt < k; kt++) block[(size_t) kt * 16 + q] = b[(size_t) (j + q) * ldb + kt];
            }
        }
        for (; j < n; j++) {
            const float *row = b + (size_t) j * ldb;
            float *col = bp + (size_t) (j / 16) * k * 16 + (j % 16);
            for (int kk = 0; kk < k; kk++) col[(size_t) kk * 16] = row[kk];
        }
    }
}

/*
 * One R x 32 block of C (rows i0.., columns j0..; R 8, 4, 2 or 1, a constant where it is inlined) from
 * k in [k0, k1), as f32_gemm.h's f32_tile. Rows past m read the last row again (their sums are not stored), so
 * the loop has no edge cases. While it runs, the lines of the block formed next (next, or NULL) are
 * asked for into L2, a line of each of its two 16-column blocks a step: the first row strip of a
 * band reads its packed B from memory, and the prefetchers, which follow a stream only once it has
 * started, left that strip waiting on every block's first lines.
 */
F32 static inline __attribute__((always_inline)) void block_f32(const int R, int m, int n, int kp, const float *a, size_t rs, size_t ks,
                                                                const float *bp, int i0, int j0, int k0, int k1, float alpha, float beta,
                                                                float *c, int ldc, const float *next) {
    const float *b0 = bp + (size_t) (j0 / 16) * kp * 16, *b1 = b0 + (size_t) kp * 16;
    const float *n0 = next != NULL ? next : b0, *n1 = n0 + (size_t) kp * 16;
    const int rows = m - i0 < R ? m - i0 : R, cols = n - j0 < 32 ? n - j0 : 32;
    float *cb = c + (size_t) i0 * ldc + j0;
    const float *ar[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) ar[r] = a + (size_t) (r < rows ? r : rows - 1) * rs;
    __m512 s[8][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) s[r][0] = s[r][1] = _mm512_setzero_ps();
    for (int kk = k0; kk < k1; kk++) {
        const __m512 v0 = _mm512_loadu_ps(b0 + (size_t) kk * 16), v1 = _mm512_loadu_ps(b1 + (size_t) kk * 16);
        _mm_prefetch((const char *) (n0 + (size_t) kk * 16), _MM_HINT_T1);
        _mm_prefetch((const char *) (n1 + (size_t) kk * 16), _MM_HINT_T1);
        const size_t o = (size_t) (kk - k0) * ks;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512 x = _mm512_set1_ps(ar[r][o]);
            s[r][0] = _mm512_fmadd_ps(x, v0, s[r][0]);
            s[r][1] = _mm512_fmadd_ps(x, v1, s[r][1]);
        }
    }
    if (rows == R && cols == 32 && alpha == 1.f && (beta == 0.f || beta == 1.f)) {
        /* store_block's arithmetic where 1 x is x: the sums go from the registers to C */
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            float *out = cb + (size_t) r * ldc;
            __m512 v0 = s[r][0], v1 = s[r][1];
            if (beta != 0.f) {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(out));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(out + 16));
            }
            _mm512_storeu_ps(out, v0);
            _mm512_storeu_ps(out + 16, v1);
        }
        return;
    }
    float acc[8 * 32] __attribute__((aligned(64)));
    for (int r = 0; r < R; r++) {
        _mm512_store_ps(acc + r * 32, s[r][0]);
        _mm512_store_ps(acc + r * 32 + 16, s[r][1]);
    }
    store_block(acc, 32, rows, cols, alpha, beta, cb, ldc, cb, (size_t) ldc);
}

/*
 * 128 columns of a C of one row (j0.., all of them inside C) from k in [k0, k1): eight 16-column
 * blocks of packed B against one broadcast of op(A) a step. Each element is the same chain of
 * FMAs over k as in block_f32, so a row alone has the bits it has among others; but block_f32's
 * one row holds two chains, each FMA waiting on the last, where eight keep the FMA
 * pipe fed (a decode step of one sequence).
 */
F32 static void row_f32_128(const float *a, size_t ks, const float *bp, int kp, int j0, int k0, int k1, float alpha, float beta,
                            float *c) {
    const float *b = bp + (size_t) (j0 / 16) * kp * 16;
    __m512 s[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) s[q] = _mm512_setzero_ps();
    for (int kk = k0; kk < k1; kk++) {
        const __m512 x = _mm512_set1_ps(a[(size_t) (kk - k0) * ks]);
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) s[q] = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + ((size_t) q * kp + kk) * 16), s[q]);
    }
    store_row_128(s, alpha, beta, c + j0, c + j0);
}

F32 static void tile_avx512(int m, int n, int kp, const float *a, size_t rs, size_t ks, const float *bp, int i0, int j0, int k0, int k1,
                            float alpha, float beta, float *c, int ldc, const float *next) {
    const int left = m - i0;   /* the last strip of rows: the narrowest block that covers it */
    if (left > 4) {
        block_f32(8, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    } else if (left > 2) {
        block_f32(4, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    } else if (left == 2) {
        block_f32(2, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    } else {
        block_f32(1, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    }
}

/*
 * Bands of 512 KB of packed B: half of a Zen 4 core's 1 MB L2, as the bf16 path's BAND_BYTES. A
 * transposed op(A) is read where it lies: packing it (pack_a_t) has not been measured on AVX-512.
 */
static const f32_path F32_PATH_AVX512 = {8, 32, 128, 512L * 1024, 0, tile_avx512, row_f32_128, pack_avx512};

static const f32_path *path(int kind) {
    return kind == F32_AVX2 ? &F32_PATH_AVX2 : &F32_PATH_AVX512;
}

/* Bytes of op(B) (k, n) packed by distillery_f32_pack_b. */
long distillery_f32_packed_b_bytes(int k, int n) {
    return (long) (k > 0 ? k : 1) * round_up(n > 0 ? n : 1, 32) * 4;
}

/*
 * op(B) (k, n) into bp (distillery_f32_packed_b_bytes(k, n) bytes, 64-byte aligned), for
 * distillery_f32_gemm_packed_b; kind: F32_AVX512 or F32_AVX2, as distillery_f32_gemm_kind()
 * allows. Either writes the same bytes.
 */
void distillery_f32_pack_b(int kind, int trans_b, int k, int n, const float *b, int ldb, float *bp) {
    path(kind)->pack(trans_b, k, n, b, ldb, bp);
}

/* The most a transposed op(A)'s packed panel may take: past it, a strip is packed again for each band. */
#define A_PANEL_BYTES (4L << 20)

/*
 * Rows [i0, i0 + rows) of a transposed op(A) (op(A)[i][kk] = a[kk lda + i]) over the panel [kc, kend),
 * into ap as the blocks read them: row r at step kk is ap[(kk - kc) R + r], R the path's rows (rows
 * past m are not written: the blocks read their last row again). Where it lies, the R elements a
 * block broadcasts each step sit one row of A apart: at a row of 1,024 floats, every step's line
 * falls in the same L1 set, and each block of the strip read them back from L2. Packed, they are
 * read from L1.
 */
static void pack_a_t(int R, int rows, const float *a, int lda, int i0, int kc, int kend, float *ap) {
    for (int kk = kc; kk < kend; kk++) {
        const float *from = a + (size_t) kk * lda + i0;
        float *to = ap + (size_t) (kk - kc) * R;
        for (int r = 0; r < rows; r++) to[r] = from[r];
    }
}

/*
 * C (m, n) = alpha op(A) op(B) + beta C on the calling thread, op(B) the first k rows and n
 * columns of what distillery_f32_pack_b left at depth kp ≥ k (kp = k: the whole pack), in kind's
 * blocks: the same bits as from a pack of that part alone, since a pack's columns are its
 * 16-column blocks, kp * 16 floats apart, and its rows their first lines (one head's K or V packed
 * once for the products of all its bands of query rows, docs/KERNELS.md#packed-once-a-head);
 * C = alpha op(A) op(B) where beta is 0 (C not read: NaN there never reaches it). With k = 0,
 * C = beta C (blocks of no steps, their zero sums times 0). bias: NULL, or n floats that stand in
 * for every row of C as beta's operand (C = alpha op(A) op(B) + beta bias: a linear layer's
 * output, with the bits of its bias copied into every row first, as the bf16 GEMM takes it). The
 * bias row is copied into a block's rows of C just before the block's first panel, where
 * they are in L1 for its store, instead of in a pass over the whole of C beforehand; the blocks
 * themselves are unchanged. A transposed op(A) is packed a strip at a time where the path asks
 * for it (pack_a_t), as the first band reaches the strip, into a buffer of the panel that later
 * bands read again; where that buffer would pass A_PANEL_BYTES (a tall product, the LM head's
 * weight gradient), or cannot be had, into one strip's buffer, packed again for each band (the
 * blocks of a band that share a strip run one after the other).
 */
void distillery_f32_gemm_packed_b(int kind, int trans_a, int m, int n, int k, float alpha, const float *a, int lda, const float *bp,
                                  int kp, float beta, float *c, int ldc, const float *bias) {
    if (m <= 0 || n <= 0) return;
    const f32_path *p = path(kind);
    if (bias != NULL && beta == 0.f) bias = NULL;   /* not read */
    if (k <= 0) alpha = 0.f;
    const size_t rs = trans_a ? 1 : (size_t) lda, ks = trans_a ? (size_t) lda : 1;
    const int pack_a = trans_a && p->pack_a_t && m > 1 && k > 0;
    const size_t panel_floats = pack_a ? (size_t) round_up(m, p->rows) * (size_t) (k < KC_F32 ? k : KC_F32) : 0;
    float *panel = panel_floats > 0 && panel_floats * 4 <= A_PANEL_BYTES ? (float *) packing_buffer(1, panel_floats * 4) : NULL;
    float strip[8 * KC_F32] __attribute__((aligned(64)));   /* else one strip: at most 8 rows by a panel */
    const int panels = k > 0 ? (k + KC_F32 - 1) / KC_F32 : 1;
    for (int q = 0; q < panels; q++) {
        const int kc = q * KC_F32, kend = k - kc < KC_F32 ? (k > 0 ? k : 0) : kc + KC_F32;
        const float panel_beta = q == 0 ? beta : 1.f;   /* later panels add to what the first wrote */
        if (m == 1) {   /* one row: the path's wide blocks while they last, then its narrow ones */
            if (q == 0 && bias != NULL) memcpy(c, bias, (size_t) n * 4);
            const float *at = a + (size_t) kc * ks;
            int j0 = 0;
            for (; j0 + p->row_cols <= n; j0 += p->row_cols) p->row(at, ks, bp, kp, j0, kc, kend, alpha, panel_beta, c);
            for (; j0 < n; j0 += p->cols) p->tile(1, n, kp, at, rs, ks, bp, 0, j0, kc, kend, alpha, panel_beta, c, ldc, NULL);
            continue;
        }
        const int blocks_i = (m + p->rows - 1) / p->rows, blocks_j = round_up(n, p->cols) / p->cols;
        const long block_bytes = (long) (kend - kc > 0 ? kend - kc : 1) * 4 * p->cols;
        const int band = p->band_bytes / block_bytes > 0 ? (int) (p->band_bytes / block_bytes) : 1;
        for (int t = 0; t < blocks_i * blocks_j; t++) {
            const int first = t / (blocks_i * band) * band, width = blocks_j - first < band ? blocks_j - first : band;
            const int in_band = t - first * blocks_i;
            const int i0 = p->rows * (in_band / width), j0 = p->cols * (first + in_band % width);
            const int rows = m - i0 < p->rows ? m - i0 : p->rows;
            const float *next = i0 == 0 && j0 + p->cols < p->cols * (first + width) ? bp + (size_t) (j0 + p->cols) / 16 * kp * 16 : NULL;
            if (q == 0 && bias != NULL) {
                const int cols = n - j0 < p->cols ? n - j0 : p->cols;
                for (int r = 0; r < rows; r++) memcpy(c + (size_t) (i0 + r) * ldc + j0, bias + j0, (size_t) cols * 4);
            }
            if (pack_a) {
                float *ap = panel != NULL ? panel + (size_t) i0 * (kend - kc) : strip;
                if (in_band % width == 0 && (panel == NULL || first == 0)) pack_a_t(p->rows, rows, a, lda, i0, kc, kend, ap);
                p->tile(m, n, kp, ap, 1, (size_t) p->rows, bp, i0, j0, kc, kend, alpha, panel_beta, c, ldc, next);
            } else {
                p->tile(m, n, kp, a + (size_t) i0 * rs + (size_t) kc * ks, rs, ks, bp, i0, j0, kc, kend, alpha, panel_beta, c, ldc, next);
            }
        }
    }
}

/*
 * distillery_f32_gemm_packed_b with op(B) packed first into the calling thread's buffer. Returns 0,
 * or 1 when that buffer could not be allocated (nothing written).
 */
int distillery_f32_gemm(int kind, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc, const float *bias) {
    if (m <= 0 || n <= 0) return 0;
    float *bp = (float *) packing_buffer(0, (size_t) distillery_f32_packed_b_bytes(k, n));
    if (bp == NULL) return 1;
    distillery_f32_pack_b(kind, trans_b, k, n, b, ldb, bp);
    distillery_f32_gemm_packed_b(kind, trans_a, m, n, k, alpha, a, lda, bp, k, beta, c, ldc, bias);
    return 0;
}
