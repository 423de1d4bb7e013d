/*
 * The fp32 GEMM's two machines (f32_gemm.c: AVX-512; f32_gemm_avx2.c: AVX2 with FMA) behind one
 * driver. Both read the same pack of op(B) and form each element of C as the same chain of FMAs
 * over k, panel by panel, with the same store: on a CPU that has both, they give the same bits.
 */
#ifndef DISTILLERY_F32_GEMM_H
#define DISTILLERY_F32_GEMM_H

#include <stddef.h>

/* distillery_f32_gemm_kind()'s answers; NativeF32Gemm's twins are DistilleryCpu.F32_*. */
enum { F32_NONE = 0, F32_AVX2 = 1, F32_AVX512 = 2 };

/* k a panel: a 32-column block of packed B at that depth is 64 KB, as the bf16 path's KC of 1,024 pairs' halves. */
#define KC_F32 512

/*
 * One R x W block of C (R the path's rows or fewer for the last strip of a short C, W its
 * columns), rows i0.., columns j0.., from k in [k0, k1) of a pack made at depth kp (its 16-column
 * blocks kp * 16 floats apart; kp ≥ k1): row i0 + r of op(A) at step kk is
 * a[r * rs + (kk - k0) * ks] (a where op(A) lies, or its pack); C = alpha sums + beta C (C not read where beta is 0; a bias is in
 * C by then, copied by the driver). next: the packed B of the block formed next, asked for into L2
 * as this one runs, or NULL.
 */
typedef void f32_tile(int m, int n, int kp, const float *a, size_t rs, size_t ks, const float *bp, int i0, int j0, int k0, int k1,
                      float alpha, float beta, float *c, int ldc, const float *next);
/* The row_cols columns j0.. (all inside C) of a C of one row, from k in [k0, k1) of a pack of depth kp: op(A) at step kk is a[(kk - k0) * ks]. */
typedef void f32_row(const float *a, size_t ks, const float *bp, int kp, int j0, int k0, int k1, float alpha, float beta, float *c);
/* op(B) (k, n) into bp in the one layout both paths read (distillery_f32_pack_b). */
typedef void f32_pack(int trans_b, int k, int n, const float *b, int ldb, float *bp);

typedef struct {
    int rows, cols;       /* a block of C */
    int row_cols;         /* a one-row block's columns */
    long band_bytes;      /* packed B a band holds in L2 while the row strips pass */
    int pack_a_t;         /* 1: a transposed op(A) is packed a strip at a time (the driver's pack_a_t) */
    f32_tile *tile;
    f32_row *row;
    f32_pack *pack;
} f32_path;

extern const f32_path F32_PATH_AVX2;

#endif
