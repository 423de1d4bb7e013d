/*
 * The fp32 GEMM's blocks for CPUs with AVX2 and FMA but no AVX-512 (AMD Zen 2 and 3, Intel
 * before Skylake-SP and its client cores): sixteen 256-bit registers, two FMA pipes. The driver,
 * the layout of packed B and the order of every sum are f32_gemm.c's; only the block's shape
 * differs, so a C formed here has the bits of the AVX-512 path's. docs/KERNELS.md#the-fp32-gemm.
 *
 * A block of C is 6 rows x 16 columns in 12 accumulators: each step of k loads one 16-column
 * line of packed B (two registers) and broadcasts one element of each of 6 rows of op(A), 12
 * FMAs, with 15 of the 16 registers live (BLIS' Haswell shape).
 */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "f32_gemm.h"
#include "gemm_blocks.h"

#define AVX2 __attribute__((target("avx2,fma")))

/* The first `live` of 8 lanes. */
AVX2 static inline __m256i lanes(int live) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* gemm_blocks.h's store_block in 8 lanes, with its arithmetic: C = alpha acc + beta X, two roundings. */
AVX2 static void store_block_avx2(const float *acc, int ld_acc, int rows, int cols, float alpha, float beta, float *c, int ldc,
                                  const float *x, size_t ldx) {
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int r = 0; r < rows; r++) {
        float *out = c + (size_t) r * ldc;
        const float *in = acc + (size_t) r * ld_acc, *add = x + r * ldx;
        for (int q = 0; q < cols; q += 8) {
            const __m256i live = lanes(cols - q);
            __m256 v = _mm256_mul_ps(va, _mm256_maskload_ps(in + q, live));
            if (beta != 0.f) v = _mm256_add_ps(v, _mm256_mul_ps(vb, _mm256_maskload_ps(add + q, live)));
            _mm256_maskstore_ps(out + q, live, v);
        }
    }
}

/* f32_gemm.c's pack: the same bytes, 8 lanes at a time (a transposed B 8 x 8 in registers). */
AVX2 static void pack_avx2(int trans_b, int k, int n, const float *b, int ldb, float *bp) {
    if (n <= 0 || k <= 0) return;
    const int np = round_up(n, 32);
    if (np != n) memset(bp + (size_t) (n / 16) * k * 16, 0, (size_t) (np - n / 16 * 16) * k * 4);   /* the last blocks, padding included */
    if (!trans_b) {
        for (int kk = 0; kk < k; kk++) {
            const float *row = b + (size_t) kk * ldb;
            for (int j = 0; j < n; j += 8) {
                float *to = bp + ((size_t) (j / 16) * k + kk) * 16 + j % 16;
                _mm256_storeu_ps(to, n - j >= 8 ? _mm256_loadu_ps(row + j) : _mm256_maskload_ps(row + j, lanes(n - j)));
            }
        }
        return;
    }
    int j = 0;
    for (; j + 8 <= n; j += 8) {   /* 8 rows of B, 8 of k at a time: op(B)[kk][j + q] = b[(j + q) ldb + kk] */
        float *block = bp + (size_t) (j / 16) * k * 16 + j % 16;
        int kk = 0;
        for (; kk + 8 <= k; kk += 8) {
            __m256 r[8], t[8];
            for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(b + (size_t) (j + q) * ldb + kk);
            for (int q = 0; q < 8; q += 2) {
                t[q] = _mm256_unpacklo_ps(r[q], r[q + 1]);
                t[q + 1] = _mm256_unpackhi_ps(r[q], r[q + 1]);
            }
            for (int q = 0; q < 8; q += 4) {
                r[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
                r[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xee);
                r[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
                r[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xee);
            }
            for (int q = 0; q < 4; q++) {
                t[q] = _mm256_permute2f128_ps(r[q], r[q + 4], 0x20);
                t[q + 4] = _mm256_permute2f128_ps(r[q], r[q + 4], 0x31);
            }
            for (int q = 0; q < 8; q++) _mm256_storeu_ps(block + (size_t) (kk + q) * 16, t[q]);
        }
        for (int q = 0; q < 8; q++) {
            for (int kt = kk; kt < k; kt++) block[(size_t) kt * 16 + q] = b[(size_t) (j + q) * ldb + kt];
        }
    }
    for (; j < n; j++) {
        const float *row = b + (size_t) j * ldb;
        float *col = bp + (size_t) (j / 16) * k * 16 + (j % 16);
        for (int kk = 0; kk < k; kk++) col[(size_t) kk * 16] = row[kk];
    }
}

/*
 * f32_gemm.c's block_f32 at R x 16 (R 6, 4, 2 or 1): the same chains, the same store. Rows past m
 * read the last row again (their sums are not stored); the next block's line is asked for into L2
 * a step at a time.
 */
AVX2 static inline __attribute__((always_inline)) void block_avx2(const int R, int m, int n, int kp, const float *a, size_t rs, size_t ks,
                                                                  const float *bp, int i0, int j0, int k0, int k1, float alpha, float beta,
                                                                  float *c, int ldc, const float *next) {
    const float *b = bp + (size_t) (j0 / 16) * kp * 16, *nb = next != NULL ? next : b;
    const int rows = m - i0 < R ? m - i0 : R, cols = n - j0 < 16 ? n - j0 : 16;
    float *cb = c + (size_t) i0 * ldc + j0;
    const float *ar[6];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) ar[r] = a + (size_t) (r < rows ? r : rows - 1) * rs;
    /* named accumulators, not an array: GCC kept an array's twelve in memory as well, a store each a step */
    __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00, s40 = s00, s41 = s00,
           s50 = s00, s51 = s00;
    for (int kk = k0; kk < k1; kk++) {
        const __m256 v0 = _mm256_loadu_ps(b + (size_t) kk * 16), v1 = _mm256_loadu_ps(b + (size_t) kk * 16 + 8);
        _mm_prefetch((const char *) (nb + (size_t) kk * 16), _MM_HINT_T1);
        const size_t o = (size_t) (kk - k0) * ks;
#define ROW(r)                                                   \
        if (R > r) {                                             \
            const __m256 x = _mm256_broadcast_ss(ar[r] + o);     \
            s##r##0 = _mm256_fmadd_ps(x, v0, s##r##0);           \
            s##r##1 = _mm256_fmadd_ps(x, v1, s##r##1);           \
        }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
    const __m256 s[6][2] = {{s00, s01}, {s10, s11}, {s20, s21}, {s30, s31}, {s40, s41}, {s50, s51}};
    if (rows == R && cols == 16 && alpha == 1.f && (beta == 0.f || beta == 1.f)) {   /* 1 x is x: from the registers to C */
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            float *out = cb + (size_t) r * ldc;
            __m256 v0 = s[r][0], v1 = s[r][1];
            if (beta != 0.f) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(out));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(out + 8));
            }
            _mm256_storeu_ps(out, v0);
            _mm256_storeu_ps(out + 8, v1);
        }
        return;
    }
    float acc[6 * 16] __attribute__((aligned(32)));
    for (int r = 0; r < R; r++) {
        _mm256_store_ps(acc + r * 16, s[r][0]);
        _mm256_store_ps(acc + r * 16 + 8, s[r][1]);
    }
    store_block_avx2(acc, 16, rows, cols, alpha, beta, cb, ldc, cb, (size_t) ldc);
}

AVX2 static void tile_avx2(int m, int n, int kp, const float *a, size_t rs, size_t ks, const float *bp, int i0, int j0, int k0, int k1,
                           float alpha, float beta, float *c, int ldc, const float *next) {
    const int left = m - i0;   /* the last strip of rows: the narrowest block that covers it */
    if (left > 4) {
        block_avx2(6, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    } else if (left > 2) {
        block_avx2(4, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    } else if (left == 2) {
        block_avx2(2, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    } else {
        block_avx2(1, m, n, kp, a, rs, ks, bp, i0, j0, k0, k1, alpha, beta, c, ldc, next);
    }
}

/* 64 columns of a C of one row: eight chains of FMAs (four 16-column blocks), as f32_gemm.c's 128 in 512-bit registers. */
AVX2 static void row_avx2(const float *a, size_t ks, const float *bp, int kp, int j0, int k0, int k1, float alpha, float beta, float *c) {
    const float *b = bp + (size_t) (j0 / 16) * kp * 16;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;   /* named, as block_avx2's */
    for (int kk = k0; kk < k1; kk++) {
        const __m256 x = _mm256_broadcast_ss(a + (size_t) (kk - k0) * ks);
        const float *line = b + (size_t) kk * 16;
#define CHAIN(q) s##q = _mm256_fmadd_ps(x, _mm256_loadu_ps(line + (size_t) (q / 2) * kp * 16 + (q % 2) * 8), s##q);
        CHAIN(0) CHAIN(1) CHAIN(2) CHAIN(3) CHAIN(4) CHAIN(5) CHAIN(6) CHAIN(7)
#undef CHAIN
    }
    const __m256 s[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
    float *out = c + j0;
    if (alpha == 1.f && (beta == 0.f || beta == 1.f)) {
        for (int q = 0; q < 8; q++) {
            __m256 v = s[q];
            if (beta != 0.f) v = _mm256_add_ps(v, _mm256_loadu_ps(out + 8 * q));
            _mm256_storeu_ps(out + 8 * q, v);
        }
        return;
    }
    float acc[64] __attribute__((aligned(32)));
    for (int q = 0; q < 8; q++) _mm256_store_ps(acc + 8 * q, s[q]);
    store_block_avx2(acc, 64, 1, 64, alpha, beta, out, 0, out, 0);
}

/*
 * Bands of 256 KB of packed B (eight 16-column blocks at a panel of 512): half of the 512 KB L2
 * of a Zen 2 or 3 core. A transposed op(A) is packed (f32_gemm.c's pack_a_t).
 */
const f32_path F32_PATH_AVX2 = {6, 16, 64, 256L * 1024, 1, tile_avx2, row_avx2, pack_avx2};
