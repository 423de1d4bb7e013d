/*
 * Pieces the native GEMMs share (bf16_gemm.c, f32_gemm.c): a per-thread packing buffer, the store
 * of a block of sums into C (and of a one-row block's 128), and a 16 x 16 transpose in registers
 * for their packs.
 */
#ifndef DISTILLERY_GEMM_BLOCKS_H
#define DISTILLERY_GEMM_BLOCKS_H

#include <immintrin.h>
#include <stddef.h>
#include <stdlib.h>

#define BLOCKS __attribute__((target("avx512f,avx512bw")))

static inline int round_up(int x, int to) { return (x + to - 1) / to * to; }

/*
 * The calling thread's packing buffer number slot (0 or 1: two that are needed at once), at least
 * bytes long and 64-byte aligned (NULL when it cannot be had), grown as needed and kept, so that a
 * training step allocates nothing once its shapes have been seen. Each file that includes this has
 * its own.
 */
static __thread void *scratch[2];
static __thread size_t scratch_bytes[2];

static inline void *packing_buffer(int slot, size_t bytes) {
    if (bytes > scratch_bytes[slot]) {
        free(scratch[slot]);
        size_t grown = (bytes + 4095) / 4096 * 4096;
        scratch[slot] = aligned_alloc(64, grown);
        scratch_bytes[slot] = scratch[slot] == NULL ? 0 : grown;
    }
    return scratch[slot];
}

/* r[0..15] as a 16 x 16 matrix of dwords, transposed in place. */
BLOCKS static inline void transpose_16x16(__m512i r[16]) {
    __m512i t[16];
    for (int q = 0; q < 16; q += 2) {
        t[q] = _mm512_unpacklo_epi32(r[q], r[q + 1]);
        t[q + 1] = _mm512_unpackhi_epi32(r[q], r[q + 1]);
    }
    for (int q = 0; q < 16; q += 4) {
        r[q] = _mm512_unpacklo_epi64(t[q], t[q + 2]);
        r[q + 1] = _mm512_unpackhi_epi64(t[q], t[q + 2]);
        r[q + 2] = _mm512_unpacklo_epi64(t[q + 1], t[q + 3]);
        r[q + 3] = _mm512_unpackhi_epi64(t[q + 1], t[q + 3]);
    }
    for (int q = 0; q < 4; q++) {
        t[q] = _mm512_shuffle_i32x4(r[q], r[q + 4], 0x88);
        t[q + 4] = _mm512_shuffle_i32x4(r[q], r[q + 4], 0xdd);
        t[q + 8] = _mm512_shuffle_i32x4(r[q + 8], r[q + 12], 0x88);
        t[q + 12] = _mm512_shuffle_i32x4(r[q + 8], r[q + 12], 0xdd);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm512_shuffle_i32x4(t[q], t[q + 8], 0x88);
        r[q + 8] = _mm512_shuffle_i32x4(t[q], t[q + 8], 0xdd);
        r[q + 4] = _mm512_shuffle_i32x4(t[q + 4], t[q + 12], 0x88);
        r[q + 12] = _mm512_shuffle_i32x4(t[q + 4], t[q + 12], 0xdd);
    }
}

/*
 * C[i0 + r][j0 + c] = alpha acc[r][c] + beta X[r][c] (X not read when beta is 0), for the rows and
 * columns that exist; X is C itself (x = c, ldx = ldc) or, in a first panel with a bias, the bias
 * row for every row (x = bias + j0, ldx = 0): the bits of that row copied into C before the GEMM.
 */
BLOCKS static inline void store_block(const float *acc, int ld_acc, int rows, int cols, float alpha, float beta, float *c, int ldc,
                             const float *x, size_t ldx) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < rows; r++) {
        float *out = c + (size_t) r * ldc;
        const float *in = acc + (size_t) r * ld_acc, *add = x + r * ldx;
        for (int q = 0; q < cols; q += 16) {
            const __mmask16 live = cols - q >= 16 ? 0xffff : (__mmask16) ((1u << (cols - q)) - 1);
            __m512 v = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(live, in + q));
            if (beta != 0.f) v = _mm512_add_ps(v, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(live, add + q)));
            _mm512_mask_storeu_ps(out + q, live, v);
        }
    }
}

/*
 * The 128 sums s[0..7] of a one-row block into out[0, 128): out = alpha s + beta x, x being out
 * itself or a bias row (as store_block's); where alpha is 1 and beta 0 or 1, the sums go from the
 * registers to C with store_block's arithmetic (1 x is x).
 */
BLOCKS static inline void store_row_128(const __m512 s[8], float alpha, float beta, float *out, const float *x) {
    if (alpha == 1.f && (beta == 0.f || beta == 1.f)) {
        for (int q = 0; q < 8; q++) {
            __m512 v = s[q];
            if (beta != 0.f) v = _mm512_add_ps(v, _mm512_loadu_ps(x + 16 * q));
            _mm512_storeu_ps(out + 16 * q, v);
        }
        return;
    }
    float acc[128] __attribute__((aligned(64)));
    for (int q = 0; q < 8; q++) _mm512_store_ps(acc + 16 * q, s[q]);
    store_block(acc, 128, 1, 128, alpha, beta, out, 0, x, 0);
}

#endif
