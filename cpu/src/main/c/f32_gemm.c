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
 * A block of C is 8 rows x 32 columns of accumulators, as the AVX512-BF16 path's block_8x32 with
 * one FMA where it has one dot product (4, 2 or 1 rows for the last strip of a short C). Blocks
 * are walked in bands of packed B that stay in L2 while op(A)'s rows stream past, over panels of
 * KC_F32 of k; each panel's sums are added to C in fp32. Every element
 * of C is one sum over k in order, panel by panel, so the bits do not depend on how the callers
 * split C between threads.
 */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "gemm_blocks.h"

#define F32 __attribute__((target("avx512f,avx512bw,fma")))

/* k a panel: a 32-column block of packed B at that depth is 64 KB, as the bf16 path's KC of 1,024 pairs' halves. */
#define KC_F32 512
/* Packed B a band holds: half of a Zen 4 core's 1 MB L2, as the bf16 path's BAND_BYTES. */
#define BAND_F32_BYTES (512 * 1024)

/* Bytes of op(B) (k, n) packed by distillery_f32_pack_b. */
long distillery_f32_packed_b_bytes(int k, int n) {
    return (long) (k > 0 ? k : 1) * round_up(n > 0 ? n : 1, 32) * 4;
}

/* op(B) (k, n) into bp (distillery_f32_packed_b_bytes(k, n) bytes, 64-byte aligned), for distillery_f32_gemm_packed_b. */
F32 void distillery_f32_pack_b(int trans_b, int k, int n, const float *b, int ldb, float *bp) {
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
 * k in [k0, k1): row r of op(A) at step kk is a[(i0 + r) * rs + kk * ks] ((rs, ks) = (lda, 1), or
 * (1, lda) for a transposed A). Rows past m read the last row again (their sums are not stored), so
 * the loop has no edge cases. While it runs, the lines of the block formed next (next, or NULL) are
 * asked for into L2, a line of each of its two 16-column blocks a step: the first row strip of a
 * band reads its packed B from memory, and the prefetchers, which follow a stream only once it has
 * started, left that strip waiting on every block's first lines.
 */
F32 static inline __attribute__((always_inline)) void block_f32(const int R, int m, int n, int k, const float *a, size_t rs, size_t ks,
                                                                const float *bp, int i0, int j0, int k0, int k1, float alpha, float beta,
                                                                float *c, int ldc, const float *next) {
    const float *b0 = bp + (size_t) (j0 / 16) * k * 16, *b1 = b0 + (size_t) k * 16;
    const float *n0 = next != NULL ? next : b0, *n1 = n0 + (size_t) k * 16;
    const int rows = m - i0 < R ? m - i0 : R, cols = n - j0 < 32 ? n - j0 : 32;
    float *cb = c + (size_t) i0 * ldc + j0;
    const float *ar[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) ar[r] = a + (size_t) (i0 + (r < rows ? r : rows - 1)) * rs + (size_t) k0 * ks;
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
F32 static void row_f32_128(const float *a, size_t ks, const float *bp, int k, int j0, int k0, int k1, float alpha, float beta,
                            float *c) {
    const float *b = bp + (size_t) (j0 / 16) * k * 16;
    __m512 s[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) s[q] = _mm512_setzero_ps();
    const float *ar = a + (size_t) k0 * ks;
    for (int kk = k0; kk < k1; kk++) {
        const __m512 x = _mm512_set1_ps(ar[(size_t) (kk - k0) * ks]);
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) s[q] = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + ((size_t) q * k + kk) * 16), s[q]);
    }
    store_row_128(s, alpha, beta, c + j0, c + j0);
}

/*
 * C (m, n) = alpha op(A) op(B) + beta C on the calling thread, op(B) as distillery_f32_pack_b left
 * it; C = alpha op(A) op(B) where beta is 0 (C not read: NaN there never reaches it). With k = 0,
 * C = beta C. bias: NULL, or n floats that stand in for every row of C as beta's operand
 * (C = alpha op(A) op(B) + beta bias: a linear layer's output, with the bits of its bias copied
 * into every row first, as the bf16 GEMM takes it). The bias row is copied into a block's rows of
 * C just before the block's first panel, where they are in L1 for its store, instead of in a pass
 * over the whole of C beforehand; the blocks themselves are unchanged.
 */
F32 void distillery_f32_gemm_packed_b(int trans_a, int m, int n, int k, float alpha, const float *a, int lda, const float *bp,
                                      float beta, float *c, int ldc, const float *bias) {
    if (m <= 0 || n <= 0) return;
    if (bias != NULL && beta == 0.f) bias = NULL;   /* not read */
    if (bias != NULL && k <= 0) {                   /* no block to copy it for: into C, for beta times it */
        for (int i = 0; i < m; i++) memcpy(c + (size_t) i * ldc, bias, (size_t) n * 4);
        bias = NULL;
    }
    if (k <= 0) {
        float zero[32] __attribute__((aligned(64))) = {0};
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j += 32) store_block(zero, 0, 1, n - j < 32 ? n - j : 32, 0.f, beta, c + (size_t) i * ldc + j, ldc, c + (size_t) i * ldc + j, (size_t) ldc);
        }
        return;
    }
    const size_t rs = trans_a ? 1 : (size_t) lda, ks = trans_a ? (size_t) lda : 1;
    if (m == 1) {   /* one row: 128 columns a block while they last, then block_f32's 32 */
        for (int kc = 0; kc < k; kc += KC_F32) {
            const int kend = k - kc < KC_F32 ? k : kc + KC_F32;
            const float panel_beta = kc == 0 ? beta : 1.f;
            if (kc == 0 && bias != NULL) memcpy(c, bias, (size_t) n * 4);
            int j0 = 0;
            for (; j0 + 128 <= n; j0 += 128) row_f32_128(a, ks, bp, k, j0, kc, kend, alpha, panel_beta, c);
            for (; j0 < n; j0 += 32) block_f32(1, 1, n, k, a, rs, ks, bp, 0, j0, kc, kend, alpha, panel_beta, c, ldc, NULL);
        }
        return;
    }
    const int blocks_i = (m + 7) / 8, blocks_j = round_up(n, 32) / 32;
    for (int kc = 0; kc < k; kc += KC_F32) {
        const int kend = k - kc < KC_F32 ? k : kc + KC_F32;
        const float panel_beta = kc == 0 ? beta : 1.f;   /* later panels add to what the first wrote */
        const int band = BAND_F32_BYTES / ((kend - kc) * 4 * 32) > 0 ? BAND_F32_BYTES / ((kend - kc) * 4 * 32) : 1;
        for (int t = 0; t < blocks_i * blocks_j; t++) {
            const int first = t / (blocks_i * band) * band, width = blocks_j - first < band ? blocks_j - first : band;
            const int in_band = t - first * blocks_i;
            const int i0 = 8 * (in_band / width), j0 = 32 * (first + in_band % width);
            const float *next = i0 == 0 && j0 + 32 < 32 * (first + width) ? bp + (size_t) (j0 / 16 + 2) * k * 16 : NULL;
            if (kc == 0 && bias != NULL) {
                const int rows = m - i0 < 8 ? m - i0 : 8, cols = n - j0 < 32 ? n - j0 : 32;
                for (int r = 0; r < rows; r++) memcpy(c + (size_t) (i0 + r) * ldc + j0, bias + j0, (size_t) cols * 4);
            }
            const int left = m - i0;   /* the last strip of rows: the narrowest block that covers it */
            if (left > 4) {
                block_f32(8, m, n, k, a, rs, ks, bp, i0, j0, kc, kend, alpha, panel_beta, c, ldc, next);
            } else if (left > 2) {
                block_f32(4, m, n, k, a, rs, ks, bp, i0, j0, kc, kend, alpha, panel_beta, c, ldc, next);
            } else if (left == 2) {
                block_f32(2, m, n, k, a, rs, ks, bp, i0, j0, kc, kend, alpha, panel_beta, c, ldc, next);
            } else {
                block_f32(1, m, n, k, a, rs, ks, bp, i0, j0, kc, kend, alpha, panel_beta, c, ldc, next);
            }
        }
    }
}

/*
 * distillery_f32_gemm_packed_b with op(B) packed first into the calling thread's buffer. Returns 0,
 * or 1 when that buffer could not be allocated (nothing written).
 */
F32 int distillery_f32_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc, const float *bias) {
    if (m <= 0 || n <= 0) return 0;
    float *bp = (float *) packing_buffer((size_t) distillery_f32_packed_b_bytes(k, n));
    if (bp == NULL) return 1;
    distillery_f32_pack_b(trans_b, k, n, b, ldb, bp);
    distillery_f32_gemm_packed_b(trans_a, m, n, k, alpha, a, lda, bp, beta, c, ldc, bias);
    return 0;
}
