/*
 * Pieces the native GEMMs share (bf16_gemm.c, f32_gemm.c): a per-thread packing buffer, the store
 * of a block of sums into C, and a 16 x 16 transpose in registers for their packs.
 */
#ifndef DISTILLERY_GEMM_BLOCKS_H
#define DISTILLERY_GEMM_BLOCKS_H

#include <immintrin.h>
#include <stddef.h>
#include <stdlib.h>

#define BLOCKS __attribute__((target("avx512f,avx512bw")))

static inline int round_up(int x, int to) { return (x + to - 1) / to * to; }

/*
 * The calling thread's packing buffer, at least bytes long and 64-byte aligned (NULL when it cannot
 * be had), grown as needed and kept, so that a training step allocates nothing once its shapes have
 * been seen. Each file that includes this has its own.
 */
static __thread void *scratch;
static __thread size_t scratch_bytes;

static inline void *packing_buffer(size_t bytes) {
    if (bytes > scratch_bytes) {
        free(scratch);
        size_t grown = (bytes + 4095) / 4096 * 4096;
        scratch = aligned_alloc(64, grown);
        scratch_bytes = scratch == NULL ? 0 : grown;
    }
    return scratch;
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

#endif
