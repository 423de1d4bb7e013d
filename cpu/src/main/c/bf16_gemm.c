/*
 * The GEMM of bf16 mixed precision on the CPU: C = alpha op(A) op(B) + beta C, row-major, fp32
 * out, with both operands rounded to bf16 (round to nearest even) and the products summed in fp32.
 * Each operand is fp32, or already bf16 (a_bf16, b_bf16: an activation stored so by the kernel that
 * made it); a stored bf16 value is what the rounding would have given, so the product is the same.
 * Twin of the float64 reference ReferenceKernels.gemmBf16 and of CudaKernels' cublasGemmEx (bf16
 * inputs, fp32 compute); docs/KERNELS.md#bf16-gemm.
 *
 * Two machines run it:
 *   AMX (Intel Sapphire Rapids and later)  tiles: C in 16 x 16 fp32 tiles, TDPBF16PS over 32-deep
 *                                          slices of k, four C tiles per 32 x 32 block
 *   AVX512-BF16 (Cooper Lake, AMD Zen 4)   VDPBF16PS: 8 rows x 32 columns of accumulators
 * Both read the same packed operands, made once per call on the calling thread:
 *   Ap  op(A) as bf16 rows, (Mp, Kp): rows padded to Mp = ceil32(m), k to Kp = ceil32(k) with zeros
 *   Bp  op(B) in the pair-interleaved ("VNNI") layout the dot-product instructions read: for each
 *       block of 16 columns jb, Kp/2 rows of 16 (bf16 pair) dwords: Bp[jb][p][j] = (B[2p][j], B[2p+1][j])
 * The packing buffers are per thread and grow as needed, so a training step allocates nothing
 * once its shapes have been seen. A B operand that stays the same over several calls (the chunked
 * LM head's weight) can be packed once by the caller (distillery_bf16_pack_b) and passed packed
 * (distillery_bf16_gemm_packed_b, distillery_bf16_gemm_claimed). Threads split one call by
 * claiming row (or column) blocks of C from a shared counter (distillery_bf16_gemm_claimed) or by taking
 * fixed column ranges (distillery_bf16_gemm on a slice of B and C). distillery_bf16_gemm_causal
 * forms one attention head's product in causal bands of rows, operands packed once.
 *
 * distillery_bf16_gemm_kind() names the machine (asking Linux for the AMX tile state once);
 * -Ddistillery.bf16Gemm on the Java side can pick the AVX512-BF16 path on an AMX CPU.
 */
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gemm_blocks.h"

#define BF16_NONE 0
#define BF16_AVX512 1
#define BF16_AMX 2

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

#define PACK __attribute__((target("avx512f,avx512bw,avx512bf16,prfchw")))
#define AMX __attribute__((target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")))


/*
 * k in panels of KC (a multiple of 32): within one panel, a 32-row strip of packed A (64 KB) and a
 * 32-column block of packed B stay in the core's caches while every C block of the panel is
 * formed; without panels a long k (the LM head's backward, k = vocabulary) streams both operands
 * from memory for every C block. Each panel's sums are added to C in fp32.
 */
#define KC 1024
/*
 * On AMX, within a panel the C blocks are formed walking the larger operand once: row strips of Ap outer
 * when op(A) is the larger (the LM head's weight gradient, m = vocabulary), column blocks of Bp
 * outer otherwise, so the operand that is reread for every block is the smaller one, from cache.
 * Column blocks go in bands of SUPER (512 columns, in L2), every row block for each band, so C is
 * written along its rows 2 KB at a time rather than down a column of rows 64 KB apart (one page
 * walk per tile row on the LM head's logits).
 */
#define SUPER 16

/* Round to nearest even, subnormals to zero; a NaN stays a (quiet) NaN: as VCVTNEPS2BF16 does. */
static inline uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t) ((u >> 16) | 0x40);
    if ((u & 0x7f800000u) == 0) return (uint16_t) ((u >> 16) & 0x8000u);   /* subnormal to zero, as the instructions do */
    return (uint16_t) ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

int distillery_bf16_gemm_kind(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return BF16_NONE;
    int avx512 = (b >> 16) & 1 && (b >> 30) & 1;               /* AVX512 F, BW */
    int amx = (d >> 22) & 1 && (d >> 24) & 1;                   /* AMX-BF16, AMX-TILE */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return BF16_NONE;
    int avx512bf16 = (a >> 5) & 1;
    if (!avx512 || !avx512bf16) return BF16_NONE;
    if (amx && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) return BF16_AMX;
    return BF16_AVX512;
}

/* Element i of an operand stored as fp32 or as bf16. */
static inline const void *at(const void *base, size_t i, int bf16) {
    return (const char *) base + i * (bf16 ? 2 : 4);
}

/* Element i of an operand as bf16: rounded, or as stored. */
static inline uint16_t bf16_at(const void *base, size_t i, int bf16) {
    return bf16 ? ((const uint16_t *) base)[i] : to_bf16(((const float *) base)[i]);
}

/* 16 elements from p as bf16 (rounded, or as stored). */
PACK static inline __m256i load16(const void *p, int bf16) {
    return bf16 ? _mm256_loadu_si256((const __m256i *) p) : (__m256i) _mm512_cvtneps_pbh(_mm512_loadu_ps((const float *) p));
}

/* Rows 2p and 2p+1 of a row-major matrix (r1 NULL: zeros), 16 columns from j, as 16 (bf16, bf16) pairs: one dword per column. */
PACK static inline __m512i row_pairs(const void *r0, const void *r1, int j, int bf16) {
    const __m512i interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
            23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512i both;   /* r0's 16 in the low half, r1's in the high */
    if (bf16) {
        __m256i hi = r1 ? _mm256_loadu_si256((const __m256i *) ((const uint16_t *) r1 + j)) : _mm256_setzero_si256();
        both = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) ((const uint16_t *) r0 + j))), hi, 1);
    } else {
        __m512 lo = _mm512_loadu_ps((const float *) r0 + j);
        __m512 hi = r1 ? _mm512_loadu_ps((const float *) r1 + j) : _mm512_setzero_ps();
        both = (__m512i) _mm512_cvtne2ps_pbh(hi, lo);
    }
    return _mm512_permutexvar_epi16(interleave, both);
}

/*
 * Two packs write a whole line at a time across rows far apart: a transposed A (a line in each of
 * 16 rows of Ap, Kp * 2 bytes apart) and a B as stored (a line in each block of 16 columns, Kp * 32
 * bytes apart). A plain store first reads each such line in, and those reads, not the operand's,
 * bound the pack; so those lines are stored non-temporally (_mm512_stream_si512), and the other
 * packs, which write along their rows, keep plain stores (docs/PERFORMANCE.md, bf16 mixed
 * precision). Every such address is 64-byte aligned: Kp is a multiple of 32 and the buffers are.
 * A transposed A packed into a block small enough to stay in cache (cached) keeps plain stores:
 * its lines are there already, and the products read them next.
 */

/* Ap (Mp, Kp) from op(A). */
PACK static void pack_a(int trans, int m, int k, const void *a, int lda, int a_bf16, uint16_t *ap, int mp, int kp, int cached) {
    if (!trans) {
        for (int i = 0; i < m; i++) {
            const void *row = at(a, (size_t) i * lda, a_bf16);
            uint16_t *out = ap + (size_t) i * kp;
            int kk = 0;
            for (; kk + 16 <= k; kk += 16) _mm256_storeu_si256((__m256i *) (out + kk), load16(at(row, kk, a_bf16), a_bf16));
            for (; kk < k; kk++) out[kk] = bf16_at(row, kk, a_bf16);
            for (; kk < kp; kk++) out[kk] = 0;
        }
    } else {   /* op(A)[i][kk] = a[kk * lda + i]: rows kk, kk+1 of A as stored give the pair (kk, kk+1) of 16 rows of Ap */
        const int m16 = m / 16 * 16;
        /* 16 pairs of 16 rows at a time, transposed in registers, pairs past k as zeros; in blocks of
           256 rows of Ap (in L2) so that each pass reads 32 rows of A along 1 KB, not 64 bytes */
        for (int i0 = 0; i0 < m16; i0 += 256) {
            const int iend = m16 - i0 < 256 ? m16 : i0 + 256;
            for (int p0 = 0; p0 < kp / 2; p0 += 16) {
                for (int i = i0; i < iend; i += 16) {
                    __m512i r[16];
                    /* the same 16 columns of the next 32 rows, asked for into L2 a pass ahead: each pass
                       starts 32 new streams of 1 KB, more than the hardware prefetchers follow */
                    if (2 * p0 + 32 < k) {
                        for (int q = 0; q < 32 && 2 * p0 + 32 + q < k; q++) _mm_prefetch(at(a, (size_t) (2 * p0 + 32 + q) * lda + i, a_bf16), _MM_HINT_T1);
                    }
                    for (int q = 0; q < 16; q++) {
                        const int kk = 2 * (p0 + q);
                        r[q] = kk < k ? row_pairs(at(a, (size_t) kk * lda, a_bf16), kk + 1 < k ? at(a, (size_t) (kk + 1) * lda, a_bf16) : NULL, i, a_bf16)
                                      : _mm512_setzero_si512();
                    }
                    transpose_16x16(r);
                    if (cached) {
                        for (int q = 0; q < 16; q++) _mm512_store_si512((__m512i *) (ap + (size_t) (i + q) * kp + 2 * p0), r[q]);
                    } else {
                        for (int q = 0; q < 16; q++) _mm512_stream_si512((__m512i *) (ap + (size_t) (i + q) * kp + 2 * p0), r[q]);
                    }
                }
            }
        }
        _mm_sfence();
        int i = m16;
        for (; i < m; i++) {
            uint16_t *out = ap + (size_t) i * kp;
            int kk = 0;
            for (; kk < k; kk++) out[kk] = bf16_at(a, (size_t) kk * lda + i, a_bf16);
            for (; kk < kp; kk++) out[kk] = 0;
        }
    }
    memset(ap + (size_t) m * kp, 0, (size_t) (mp - m) * kp * 2);
}

/* Bp: blocks of 16 columns, each Kp/2 rows of 16 bf16 pairs (cached: plain stores, as for pack_a). */
PACK static void pack_b(int trans, int k, int n, const void *b, int ldb, int b_bf16, uint16_t *bp, int kp, int np, int cached) {
    if (kp != k || np != n) memset(bp, 0, (size_t) kp * np * 2);   /* the padding; everything else is written below */
    if (!trans) {   /* op(B)[kk][j] = b[kk * ldb + j]: rows 2p and 2p+1 interleaved */
        for (int p = 0; 2 * p < k; p++) {
            const void *r0 = at(b, (size_t) (2 * p) * ldb, b_bf16);
            const void *r1 = 2 * p + 1 < k ? at(r0, ldb, b_bf16) : NULL;
            int j = 0;
            for (; j + 16 <= n; j += 16) {
                __m512i *out = (__m512i *) (bp + ((size_t) (j / 16) * kp / 2 + p) * 32);
                if (cached) {
                    _mm512_store_si512(out, row_pairs(r0, r1, j, b_bf16));
                } else {
                    _mm512_stream_si512(out, row_pairs(r0, r1, j, b_bf16));
                }
            }
            for (; j < n; j++) {
                uint16_t *pair = bp + ((size_t) (j / 16) * kp / 2 + p) * 32 + (j % 16) * 2;
                pair[0] = bf16_at(r0, j, b_bf16);
                pair[1] = r1 ? bf16_at(r1, j, b_bf16) : 0;
            }
        }
        _mm_sfence();
    } else {        /* op(B)[kk][j] = b[j * ldb + kk]: a pair (2p, 2p+1) lies side by side in row j */
        int j = 0;
        for (; j + 16 <= n; j += 16) {   /* 16 columns by 16 pairs at a time, transposed in registers */
            uint16_t *block = bp + (size_t) (j / 16) * kp / 2 * 32;
            int kk = 0;
            for (; kk + 32 <= k; kk += 32) {
                __m512i r[16];
                for (int q = 0; q < 16; q++) {
                    const void *row = at(b, (size_t) (j + q) * ldb + kk, b_bf16);
                    r[q] = b_bf16 ? _mm512_loadu_si512(row)
                                  : (__m512i) _mm512_cvtne2ps_pbh(_mm512_loadu_ps((const float *) row + 16), _mm512_loadu_ps((const float *) row));
                }
                transpose_16x16(r);
                for (int p = 0; p < 16; p++) _mm512_storeu_si512(block + (size_t) (kk / 2 + p) * 32, r[p]);
            }
            for (int q = 0; q < 16; q++) {
                const void *row = at(b, (size_t) (j + q) * ldb, b_bf16);
                for (int kt = kk; kt < k; kt++) block[(size_t) (kt / 2) * 32 + q * 2 + (kt & 1)] = bf16_at(row, kt, b_bf16);
            }
        }
        for (; j < n; j++) {
            const void *row = at(b, (size_t) j * ldb, b_bf16);
            uint16_t *col = bp + (size_t) (j / 16) * kp / 2 * 32 + (j % 16) * 2;
            for (int kk = 0; kk < k; kk++) col[(size_t) (kk / 2) * 32 + (kk & 1)] = bf16_at(row, kk, b_bf16);
        }
    }
}

struct tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* tmm0..3: C (2 x 2 tiles of 16 x 16 fp32), tmm4..5: A (16 rows x 32 bf16), tmm6..7: B (16 pair rows x 16 columns). */
AMX static void gemm_amx(int m, int n, int mp, int np, int kp, const uint16_t *ap, const uint16_t *bp,
                         float alpha, float beta, float *c, int ldc, const float *bias) {
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    float acc[32 * 32] __attribute__((aligned(64)));
    const size_t a_stride = (size_t) kp * 2, b_block = (size_t) kp * 16;
    const int blocks_i = mp / 32, blocks_j = np / 32, rows_outer = mp > np;
    for (int kc = 0; kc < kp; kc += KC) {
        const int kend = kp - kc < KC ? kp : kc + KC;
        const float panel_beta = kc == 0 ? beta : 1.f;   /* later panels add to what the first wrote */
        for (int t = 0; t < blocks_i * blocks_j; t++) {
            int i0, j0;
            if (rows_outer) {
                i0 = 32 * (t / blocks_j);
                j0 = 32 * (t % blocks_j);
            } else {   /* SUPER column blocks at a time, every row block for each */
                const int band = t / (blocks_i * SUPER), in_band = t % (blocks_i * SUPER);
                const int width = blocks_j - band * SUPER < SUPER ? blocks_j - band * SUPER : SUPER;
                i0 = 32 * (in_band / width);
                j0 = 32 * (band * SUPER + in_band % width);
            }
            const uint16_t *b0 = bp + (size_t) (j0 / 16) * b_block, *b1 = b0 + b_block;
            const uint16_t *a0 = ap + (size_t) i0 * kp, *a1 = a0 + (size_t) 16 * kp;
            const int rows = m - i0 < 32 ? m - i0 : 32, cols = n - j0 < 32 ? n - j0 : 32;
            /* a whole block with alpha 1 and beta 0 or 1 goes through the tiles: C loaded as the start of the sums, stored back in place */
            const int direct = rows == 32 && cols == 32 && alpha == 1.f && (panel_beta == 0.f || panel_beta == 1.f);
            float *cb = c + (size_t) i0 * ldc + j0;
            const size_t c_stride = (size_t) ldc * 4;
            const float *first_bias = kc == 0 && bias != NULL ? bias + j0 : NULL;
            if (direct && panel_beta == 1.f && first_bias != NULL) {
                for (int r = 0; r < 32; r++) memcpy(cb + (size_t) r * ldc, first_bias, 32 * 4);   /* in L1, for the tile loads */
            }
            if (direct && panel_beta == 1.f) {
                _tile_loadd(0, cb, c_stride);
                _tile_loadd(1, cb + 16, c_stride);
                _tile_loadd(2, cb + (size_t) 16 * ldc, c_stride);
                _tile_loadd(3, cb + (size_t) 16 * ldc + 16, c_stride);
            } else {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
            }
            for (int k0 = kc; k0 < kend; k0 += 32) {
                _tile_loadd(4, a0 + k0, a_stride);
                _tile_loadd(5, a1 + k0, a_stride);
                _tile_loadd(6, b0 + (size_t) k0 * 16, 64);
                _tile_loadd(7, b1 + (size_t) k0 * 16, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            if (direct) {
                _tile_stored(0, cb, c_stride);
                _tile_stored(1, cb + 16, c_stride);
                _tile_stored(2, cb + (size_t) 16 * ldc, c_stride);
                _tile_stored(3, cb + (size_t) 16 * ldc + 16, c_stride);
                continue;
            }
            _tile_stored(0, acc, 128);
            _tile_stored(1, acc + 16, 128);
            _tile_stored(2, acc + 16 * 32, 128);
            _tile_stored(3, acc + 16 * 32 + 16, 128);
            if (rows > 0 && cols > 0) {
                store_block(acc, 32, rows, cols, alpha, panel_beta, cb, ldc, first_bias != NULL ? first_bias : cb, first_bias != NULL ? 0 : (size_t) ldc);
            }
        }
    }
    _tile_release();
}

/*
 * The AVX512-BF16 path walks each panel's C in bands of 32-column blocks, every row block for each
 * band, a band as many blocks as fill BAND_BYTES of packed B at the panel's depth (half of Zen 4's
 * 1 MB L2): the band stays in L2 while op(A) streams past it once, a row strip of it (8 rows) in
 * L1 across the band. Without bands a wide B (the MLP's 1,536 columns at k = 384: 1.2 MB packed)
 * was reread from L3 for every row strip, which two cores sharing L3 could not feed.
 */
#define BAND_BYTES (512 * 1024)
/* Packed op(A) rows a claim packs and multiplies at a time when it is shallow (claimed_rows). */
#define A_BLOCK_BYTES (256 * 1024)

/*
 * One 8 x 32 block of C (rows i0.., columns j0..) from the pairs [p0, p1) of k: 8 rows x 32 columns of
 * accumulators, each step a pair of k for 8 rows against two 16-column blocks, then C = alpha sums
 * + beta C. C's lines of the block are asked for (to own, PREFETCHW) before the products, not when
 * they are stored: a C far larger than the caches (the LM head's weight gradient, 49 MB read and
 * written) then arrives during the block's 2,000-odd cycles of dot products instead of after. While
 * it runs, the packed B of the block formed next (next, or NULL) is asked for into L2, a line of
 * each of its two 16-column blocks a step, as the fp32 GEMM's blocks do: the first row strip of a
 * band otherwise waits on memory for every block's first lines (a decode step's LM head, 32 rows,
 * is a quarter first strips).
 */
PACK static inline void block_8x32(int m, int n, int kp, const uint16_t *ap, size_t as, const uint16_t *bp, int i0, int j0, int p0, int p1,
                                   float alpha, float beta, float *c, int ldc, const float *bias, const uint16_t *next) {
    const size_t b_block = (size_t) kp * 16;
    const uint32_t *b0 = (const uint32_t *) (bp + (size_t) (j0 / 16) * b_block), *b1 = b0 + b_block / 2;
    const uint32_t *n0 = next != NULL ? (const uint32_t *) next : b0, *n1 = n0 + b_block / 2;
    const int rows = m - i0 < 8 ? m - i0 : 8, cols = n - j0 < 32 ? n - j0 : 32;
    float *cb = c + (size_t) i0 * ldc + j0;
    for (int r = 0; r < rows; r++) {
        __builtin_prefetch(cb + (size_t) r * ldc, 1, 3);
        if (cols > 16) __builtin_prefetch(cb + (size_t) r * ldc + 16, 1, 3);
    }
    __m512 s[8][2];
#pragma GCC unroll 8
    for (int r = 0; r < 8; r++) s[r][0] = s[r][1] = _mm512_setzero_ps();
    const uint32_t *a = (const uint32_t *) (ap + (size_t) i0 * as);
    for (int p = p0; p < p1; p++) {
        __m512bh v0 = (__m512bh) _mm512_loadu_si512(b0 + (size_t) p * 16);
        __m512bh v1 = (__m512bh) _mm512_loadu_si512(b1 + (size_t) p * 16);
        _mm_prefetch((const char *) (n0 + (size_t) p * 16), _MM_HINT_T1);
        _mm_prefetch((const char *) (n1 + (size_t) p * 16), _MM_HINT_T1);
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            __m512bh x = (__m512bh) _mm512_set1_epi32((int) a[(size_t) r * as / 2 + p]);
            s[r][0] = _mm512_dpbf16_ps(s[r][0], x, v0);
            s[r][1] = _mm512_dpbf16_ps(s[r][1], x, v1);
        }
    }
    const float *x = bias != NULL ? bias + j0 : cb;
    const size_t ldx = bias != NULL ? 0 : (size_t) ldc;
    if (rows == 8 && cols == 32 && alpha == 1.f && (beta == 0.f || beta == 1.f)) {
        /* store_block's arithmetic where 1 x is x: the sums go from the registers to C */
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            float *out = cb + (size_t) r * ldc;
            __m512 v0 = s[r][0], v1 = s[r][1];
            if (beta != 0.f) {
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(x + r * ldx));
                v1 = _mm512_add_ps(v1, _mm512_loadu_ps(x + r * ldx + 16));
            }
            _mm512_storeu_ps(out, v0);
            _mm512_storeu_ps(out + 16, v1);
        }
        return;
    }
    float acc[8 * 32] __attribute__((aligned(64)));
    for (int r = 0; r < 8; r++) {
        _mm512_store_ps(acc + r * 32, s[r][0]);
        _mm512_store_ps(acc + r * 32 + 16, s[r][1]);
    }
    store_block(acc, 32, rows, cols, alpha, beta, cb, ldc, x, ldx);
}

/*
 * 128 columns of a C of one row (j0.., all inside C) from the pairs [p0, p1): eight 16-column
 * blocks of packed B against one broadcast pair of op(A) a step. Each element is the same chain
 * of dot products as in block_8x32, so a row alone has the bits it has among others; but
 * block_8x32's one live row holds two chains, each VDPBF16PS waiting on the last, where eight keep
 * the pipe fed (a decode step of one sequence).
 */
PACK static void row_128(int kp, const uint16_t *ap, const uint16_t *bp, int j0, int p0, int p1, float alpha, float beta, float *c,
                         const float *bias) {
    const size_t b_block = (size_t) kp * 16;
    const uint32_t *b = (const uint32_t *) (bp + (size_t) (j0 / 16) * b_block);
    const uint32_t *a = (const uint32_t *) ap;
    __m512 s[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) s[q] = _mm512_setzero_ps();
    for (int p = p0; p < p1; p++) {
        const __m512bh x = (__m512bh) _mm512_set1_epi32((int) a[p]);
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) s[q] = _mm512_dpbf16_ps(s[q], x, (__m512bh) _mm512_loadu_si512(b + (size_t) q * b_block / 2 + (size_t) p * 16));
    }
    store_row_128(s, alpha, beta, c + j0, bias != NULL ? bias + j0 : c + j0);
}

/* C (m, n) from packed op(A) and op(B) with dot products, 8 x 32 blocks, in bands of op(B) (above). */
PACK static void gemm_avx512(int m, int n, int mp, int np, int kp, const uint16_t *ap, size_t as, const uint16_t *bp,
                             float alpha, float beta, float *c, int ldc, const float *bias) {
    (void) mp;
    if (m == 1) {   /* one row: 128 columns a block while they last, then block_8x32's 32 */
        for (int kc = 0; kc < kp; kc += KC) {
            const int kend = kp - kc < KC ? kp : kc + KC;
            const float panel_beta = kc == 0 ? beta : 1.f;
            int j0 = 0;
            for (; j0 + 128 <= n; j0 += 128) row_128(kp, ap, bp, j0, kc / 2, kend / 2, alpha, panel_beta, c, kc == 0 ? bias : NULL);
            for (; j0 < n; j0 += 32) block_8x32(1, n, kp, ap, as, bp, 0, j0, kc / 2, kend / 2, alpha, panel_beta, c, ldc, kc == 0 ? bias : NULL, NULL);
        }
        return;
    }
    const int blocks_i = (m + 7) / 8, blocks_j = np / 32;
    for (int kc = 0; kc < kp; kc += KC) {
        const int kend = kp - kc < KC ? kp : kc + KC;
        const float panel_beta = kc == 0 ? beta : 1.f;
        const int band = BAND_BYTES / ((kend - kc) * 2 * 32) > 0 ? BAND_BYTES / ((kend - kc) * 2 * 32) : 1;
        for (int t = 0; t < blocks_i * blocks_j; t++) {
            const int first = t / (blocks_i * band) * band, width = blocks_j - first < band ? blocks_j - first : band;
            const int in_band = t - first * blocks_i;
            const int i0 = 8 * (in_band / width), j0 = 32 * (first + in_band % width);
            const uint16_t *next = i0 == 0 && j0 + 32 < 32 * (first + width) ? bp + (size_t) (j0 / 16 + 2) * kp * 16 : NULL;
            block_8x32(m, n, kp, ap, as, bp, i0, j0, kc / 2, kend / 2, alpha, panel_beta, c, ldc, kc == 0 ? bias : NULL, next);
        }
    }
}

/*
 * C (m, n) from op(A) (rows `as` elements apart: kp where packed) and packed op(B) on the tiles or
 * with dot products, as kind says; with a bias (n floats, or NULL) the first panel adds beta times
 * it where it would add beta times C. The tiles read op(A) packed only (a_in_place).
 */
static void multiply(int kind, int m, int n, int mp, int np, int kp, const uint16_t *ap, size_t as, const uint16_t *bp,
                     float alpha, float beta, float *c, int ldc, const float *bias) {
    if (kind == BF16_AMX) {
        gemm_amx(m, n, mp, np, kp, ap, bp, alpha, beta, c, ldc, bias);
    } else {
        gemm_avx512(m, n, mp, np, kp, ap, as, bp, alpha, beta, c, ldc, bias);
    }
}

/*
 * Whether the dot products read op(A) where it lies instead of packed: stored as bf16 and not
 * transposed, its pack is a copy of its rows, Kp apart. That holds where k is a whole number of
 * 32s (no zero pairs to pad each row with: the products read pairs up to Kp), its rows whole
 * pairs apart and 4-byte aligned, and its rows a whole number of the 8 a block reads (no padding
 * rows: an activation kept in bf16, the fused loss's bf16 gradient). The tiles keep the pack,
 * whose 16-row loads read padding rows. Same bits: the products read the values the pack copies.
 */
static int a_in_place(int kind, int trans_a, int m, int k, const void *a, int lda, int a_bf16) {
    return kind == BF16_AVX512 && !trans_a && a_bf16 && k % 32 == 0 && lda % 2 == 0 && ((uintptr_t) a & 3) == 0 && m % 8 == 0;
}

/* op(A) packed into the calling thread's buffer (or read where it lies: a_in_place), then the tiles or dot products against Bp. */
static int gemm_packed(int kind, int trans_a, int m, int n, int k, float alpha, const void *a, int lda, int a_bf16,
                       const uint16_t *bp, float beta, float *c, int ldc, const float *bias) {
    int mp = round_up(m, 32), np = round_up(n, 32), kp = round_up(k > 0 ? k : 1, 32);
    if (a_in_place(kind, trans_a, m, k, a, lda, a_bf16)) {
        multiply(kind, m, n, mp, np, kp, (const uint16_t *) a, (size_t) lda, bp, alpha, beta, c, ldc, bias);
        return 0;
    }
    uint16_t *ap = (uint16_t *) packing_buffer(0, (size_t) mp * kp * 2);
    if (ap == NULL) return 1;
    pack_a(trans_a, m, k, a, lda, a_bf16, ap, mp, kp, 0);
    multiply(kind, m, n, mp, np, kp, ap, kp, bp, alpha, beta, c, ldc, bias);
    return 0;
}

/* Bytes of op(B) (k, n) packed by distillery_bf16_pack_b. */
long distillery_bf16_packed_b_bytes(int k, int n) {
    return (long) round_up(k > 0 ? k : 1, 32) * round_up(n > 0 ? n : 1, 32) * 2;
}

/* op(B) (k, n) packed into bp (distillery_bf16_packed_b_bytes(k, n) bytes, 64-byte aligned), for distillery_bf16_gemm_packed_b. */
void distillery_bf16_pack_b(int trans_b, int k, int n, const void *b, int ldb, int b_bf16, uint16_t *bp) {
    if (n <= 0) return;
    pack_b(trans_b, k, n, b, ldb, b_bf16, bp, round_up(k > 0 ? k : 1, 32), round_up(n, 32), 0);
}

/*
 * kind: BF16_AMX or BF16_AVX512 (as distillery_bf16_gemm_kind() allows); a_bf16, b_bf16: 1 where
 * that operand is stored as bf16, 0 for fp32. bias: NULL, or n floats that stand in for every row
 * of C as beta's operand (C = alpha op(A) op(B) + beta bias, C not read: a linear layer's output
 * with the bits of its bias copied into every row first, without that pass over C). Returns 0, or
 * 1 when the packing buffer could not be allocated (nothing written).
 */
int distillery_bf16_gemm(int kind, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const void *a, int lda, int a_bf16, const void *b, int ldb, int b_bf16, float beta, float *c, int ldc,
                         const float *bias) {
    if (m <= 0 || n <= 0) return 0;
    int np = round_up(n, 32), kp = round_up(k > 0 ? k : 1, 32);
    uint16_t *bp = (uint16_t *) packing_buffer(0, ((size_t) round_up(m, 32) * kp + (size_t) kp * np) * 2);
    if (bp == NULL) return 1;
    bp += (size_t) round_up(m, 32) * kp;   /* op(A) goes before it, in the same buffer */
    pack_b(trans_b, k, n, b, ldb, b_bf16, bp, kp, np, 0);
    return gemm_packed(kind, trans_a, m, n, k, alpha, a, lda, a_bf16, bp, beta, c, ldc, bias);
}

/* distillery_bf16_gemm with op(B) as distillery_bf16_pack_b left it (a weight packed once for several calls). */
int distillery_bf16_gemm_packed_b(int kind, int trans_a, int m, int n, int k, float alpha, const void *a, int lda, int a_bf16,
                                  const uint16_t *bp, float beta, float *c, int ldc, const float *bias) {
    if (m <= 0 || n <= 0) return 0;
    return gemm_packed(kind, trans_a, m, n, k, alpha, a, lda, a_bf16, bp, beta, c, ldc, bias);
}

/*
 * Rows the next claim takes when `remaining` rows of C are left: claim rows, or with guided > 0
 * (the call's threads) a share of what is left, 1 / (2 guided), between 32 and claim: the last
 * claims shrink, so threads that run unlike still end close together. A multiple of 32 either way.
 */
static inline int claim_size(int remaining, int claim, int guided) {
    if (guided <= 0) return claim;
    const int share = round_up((remaining + 2 * guided - 1) / (2 * guided), 32);
    return share < claim ? share : claim;
}

/*
 * The next claim of the `total` rows (or columns) counted by *next, shared by a call's threads:
 * its first in *first and its length in the return value (claim_size, cut at total), 0 when none are left.
 */
static inline int claim_next(int *next, int total, int claim, int guided, int *first) {
    int start = __atomic_load_n(next, __ATOMIC_RELAXED), size;
    do {
        if (start >= total) return 0;
        size = claim_size(total - start, claim, guided);
    } while (!__atomic_compare_exchange_n(next, &start, start + size, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    *first = start;
    return total - start < size ? total - start : size;
}

/*
 * distillery_bf16_gemm over the row blocks of C that the calling thread claims from *next_row, a
 * counter the threads of one call share (starting at 0): claim_rows rows at a time, or with
 * guided > 0 fewer as the rows run out (claim_size), a multiple of 32 either way, so every 32 x 32
 * block is formed whole, as on one thread, until m is reached, against op(B) packed already into
 * bp (held, or by the call's threads: distillery_bf16_pack_b). A thread that falls behind
 * (a busy or descheduled vCPU) claims fewer blocks instead of holding up the call. Returns 0, or 1
 * when the packing buffer could not be allocated.
 */
static int claimed_rows(int kind, int trans_a, int m, int n, int k, float alpha, const void *a, int lda, int a_bf16,
                        const uint16_t *bp, float beta, float *c, int ldc, const float *bias, int *next_row, int claim_rows, int guided) {
    if (m <= 0 || n <= 0) return 0;
    const int np = round_up(n, 32), kp = round_up(k > 0 ? k : 1, 32), claim = round_up(claim_rows > 0 ? claim_rows : 1, 32);
    const int in_place = a_in_place(kind, trans_a, m, k, a, lda, a_bf16);   /* claims are whole 32s of rows, so m's 8s stay whole */
    uint16_t *ap = in_place ? NULL : (uint16_t *) packing_buffer(0, (size_t) claim * kp * 2);
    if (!in_place && ap == NULL) return 1;
    /* an op(A) of one panel (k <= KC: a weight gradient's k, the tokens or a chunk's rows) is packed
       and used A_BLOCK_BYTES at a time (32 rows or more), so its packed rows stay in L2 between the
       pack and the products instead of going out to memory and back; a deeper one whole, since each
       part would walk all of op(B) once a panel */
    const int block = kp <= KC && (size_t) kp * 2 * 32 <= A_BLOCK_BYTES ? (int) (A_BLOCK_BYTES / ((size_t) kp * 2)) / 32 * 32 : claim;
    for (int r0, rows; (rows = claim_next(next_row, m, claim, guided, &r0)) > 0;) {
        if (in_place) {
            multiply(kind, rows, n, round_up(rows, 32), np, kp, (const uint16_t *) a + (size_t) r0 * lda, (size_t) lda, bp, alpha, beta,
                     c + (size_t) r0 * ldc, ldc, bias);
            continue;
        }
        for (int b0 = 0; b0 < rows; b0 += block) {
            const int br = rows - b0 < block ? rows - b0 : block, mp = round_up(br, 32), i0 = r0 + b0;
            pack_a(trans_a, br, k, at(a, trans_a ? (size_t) i0 : (size_t) i0 * lda, a_bf16), lda, a_bf16, ap, mp, kp, block < claim);
            multiply(kind, br, n, mp, np, kp, ap, kp, bp, alpha, beta, c + (size_t) i0 * ldc, ldc, bias);
        }
    }
    return 0;
}

/*
 * claimed_rows with the columns of C claimed instead of its rows, for an op(B) far larger
 * than op(A) (the LM head's logits: a chunk's 256 hidden states against the held 32,000-column
 * weight): each thread packs all of op(A) once (or reads it where it lies: a_in_place), then claims claim_cols columns of C at a time from
 * *next_col (shared by the call's threads, starting at 0), or with guided > 0 a share of what is
 * left (claim_size), a multiple of 32 either way. op(B) is walked once in all, not once a claim of
 * rows, and the last claims shrink so threads that run unlike end close together. Each 32 x 32
 * block of C is formed whole, as on one thread. Returns 0, or 1 when the packing buffer could not
 * be allocated.
 */
static int claimed_columns(int kind, int trans_a, int m, int n, int k, float alpha, const void *a, int lda, int a_bf16,
                           const uint16_t *bp, float beta, float *c, int ldc, const float *bias, int *next_col, int claim_cols, int guided) {
    if (m <= 0 || n <= 0) return 0;
    const int mp = round_up(m, 32), kp = round_up(k > 0 ? k : 1, 32), claim = round_up(claim_cols > 0 ? claim_cols : 1, 32);
    const uint16_t *ap = NULL;
    size_t as = (size_t) kp;
    for (int j0, cols; (cols = claim_next(next_col, n, claim, guided, &j0)) > 0;) {
        if (ap == NULL) {   /* at the first claim: a thread that claims none packs nothing */
            if (a_in_place(kind, trans_a, m, k, a, lda, a_bf16)) {
                ap = (const uint16_t *) a;
                as = (size_t) lda;
            } else {
                uint16_t *packed = (uint16_t *) packing_buffer(0, (size_t) mp * kp * 2);
                if (packed == NULL) return 1;
                pack_a(trans_a, m, k, a, lda, a_bf16, packed, mp, kp, 1);
                ap = packed;
            }
        }
        multiply(kind, m, cols, mp, round_up(cols, 32), kp, ap, as, bp + (size_t) (j0 / 16) * kp * 16, alpha, beta, c + j0, ldc,
                 bias != NULL ? bias + j0 : NULL);
    }
    return 0;
}

/*
 * distillery_bf16_gemm over the blocks of C the calling thread claims from *next (shared by the
 * call's threads, starting at 0): columns where by_columns (claimed_columns), else rows
 * (claimed_rows), claim at a time or shrinking with guided > 0; op(B) packed already into bp.
 */
int distillery_bf16_gemm_claimed(int kind, int by_columns, int trans_a, int m, int n, int k, float alpha, const void *a, int lda,
                                 int a_bf16, const uint16_t *bp, float beta, float *c, int ldc, const float *bias, int *next, int claim,
                                 int guided) {
    return by_columns ? claimed_columns(kind, trans_a, m, n, k, alpha, a, lda, a_bf16, bp, beta, c, ldc, bias, next, claim, guided)
                      : claimed_rows(kind, trans_a, m, n, k, alpha, a, lda, a_bf16, bp, beta, c, ldc, bias, next, claim, guided);
}

/*
 * A causal product of one attention head, on the AVX512-BF16 path, in bands of `band` rows of C
 * (a multiple of 32), as if each band were a GEMM call of its own (CpuKernels' attention, which
 * makes those calls where this is not used): the same sums in the same order, so the same bits,
 * with each operand packed once instead of once a band. Row i of C lies in band b = i / band,
 * whose rows end at e = min(m, (b + 1) band):
 *   CAUSAL_COLUMNS   C[i][j] for j < e only (q k^T: a band's scores as far as its last row's)
 *   CAUSAL_K_TO      sums over k < e (p v: a band's probabilities reach no further)
 *   CAUSAL_K_FROM    sums over k >= b band (p^T dout: the rows below a band's first)
 * C's other entries are not written. A band's GEMM padded its own k to 32 and ran panels of KC from
 * its first k; so do these sums. Returns 0, or 1 when the packing buffer could not be allocated.
 */
enum { CAUSAL_COLUMNS = 0, CAUSAL_K_TO = 1, CAUSAL_K_FROM = 2 };

/*
 * Rows [i_from, i_to) of distillery_bf16_gemm_causal's product C (m, n) from op(A) and op(B) packed
 * at depth kp, i_from a multiple of 8; ap and c point at row i_from of op(A) and of C (all of them
 * from row 0, or one band of rows in buffers of its own).
 */
static void causal_blocks(int mode, int band, int m, int n, int kp, const uint16_t *ap, const uint16_t *bp, float alpha, float beta,
                          float *c, int ldc, int i_from, int i_to) {
    for (int i0 = i_from; i0 < i_to; i0 += 8) {
        const int first = i0 / band * band, end = m - first < band ? m : first + band;
        const int cols = mode == CAUSAL_COLUMNS ? end : n;
        const int k0 = mode == CAUSAL_K_FROM ? first : 0, k1 = mode == CAUSAL_K_TO ? round_up(end, 32) : kp;
        for (int kc = k0; kc < k1; kc += KC) {
            const int kend = k1 - kc < KC ? k1 : kc + KC;
            for (int j0 = 0; j0 < cols; j0 += 32) {
                block_8x32(m - i_from, cols, kp, ap, kp, bp, i0 - i_from, j0, kc / 2, kend / 2, alpha, kc == k0 ? beta : 1.f, c, ldc,
                           NULL, NULL);
            }
        }
    }
}

int distillery_bf16_gemm_causal(int mode, int band, int trans_a, int trans_b, int m, int n, int k, float alpha,
                                const void *a, int lda, int a_bf16, const void *b, int ldb, int b_bf16, float beta,
                                float *c, int ldc) {
    if (m <= 0 || n <= 0) return 0;
    const int mp = round_up(m, 32), np = round_up(n, 32), kp = round_up(k > 0 ? k : 1, 32);
    uint16_t *ap = (uint16_t *) packing_buffer(0, ((size_t) mp * kp + (size_t) kp * np) * 2);
    if (ap == NULL) return 1;
    uint16_t *bp = ap + (size_t) mp * kp;
    pack_b(trans_b, k, n, b, ldb, b_bf16, bp, kp, np, 1);
    pack_a(trans_a, m, k, a, lda, a_bf16, ap, mp, kp, 1);
    causal_blocks(mode, band, m, n, kp, ap, bp, alpha, beta, c, ldc, 0, m);
    return 0;
}

/* rows_avx512.c: one row of the causal softmax, in place, and its bf16 rounding. */
void distillery_causal_softmax_row(float *s, int n, float scale, int s_width, uint16_t *p16, int p16_width);

/*
 * One attention head's forward on the AVX512-BF16 path in one call (CpuAttention's, under bf16):
 * q, k, v (t, hs) fp32 rows ld floats apart (a head's columns of qkv); att (t, t), rows t apart,
 * where the probabilities are kept, else NULL; out (t, hs), rows ldo apart, bf16 where out_bf16,
 * else fp32. Q, Kᵀ and V are packed once. Then, a band of 32 query rows [i0, i1) at a time: the
 * scores Q Kᵀ over the band's columns j < i1 (into att's rows, or a band of scratch), stored as
 * the blocks sum them (the scale goes into the exps); each row's causal softmax in fp32
 * (distillery_causal_softmax_row), kept in att with zeros above the diagonal up to t, and rounded
 * to bf16 straight into the packed op(A) of the band's product; then out = P V over k < i1, the
 * sums stored or rounded to bf16. The products' blocks are distillery_bf16_gemm_causal's (bands
 * of 32); the probabilities are packed as the softmax makes them instead of by a pass over att.
 * Returns 0, or 1 when the packing buffer could not be had (nothing written).
 */
PACK int distillery_bf16_attention_forward(int t, int hs, float scale, const float *q, const float *k, const float *v, int ld,
                                      float *att, void *out, int ldo, int out_bf16) {
    if (t <= 0 || hs <= 0) return 0;
    const int tp = round_up(t, 32), hp = round_up(hs, 32);
    const size_t qp_n = (size_t) tp * hp, kp_n = (size_t) hp * tp, vp_n = (size_t) tp * hp, p_n = (size_t) 32 * tp;
    const size_t floats = (att == NULL ? (size_t) 32 * tp : 0) + (size_t) 32 * hp;
    uint16_t *qp = (uint16_t *) packing_buffer(0, (qp_n + kp_n + vp_n + p_n) * 2 + floats * 4);
    if (qp == NULL) return 1;
    uint16_t *kp = qp + qp_n, *vp = kp + kp_n, *pp = vp + vp_n;
    float *band = (float *) (pp + p_n), *y = att == NULL ? band + (size_t) 32 * tp : band;
    pack_a(0, t, hs, q, ld, 0, qp, tp, hp, 1);
    pack_b(1, hs, t, k, ld, 0, kp, hp, tp, 1);   /* op(B) = Kᵀ (hs, t) */
    pack_b(0, t, hs, v, ld, 0, vp, tp, hp, 1);   /* op(B) = V (t, hs) */
    for (int i0 = 0; i0 < t; i0 += 32) {
        const int i1 = t - i0 < 32 ? t : i0 + 32, rows = i1 - i0, kend = round_up(i1, 32);
        float *s = att != NULL ? att + (size_t) i0 * t : band;
        const int lds = att != NULL ? t : tp;
        causal_blocks(CAUSAL_COLUMNS, 32, t, t, hp, qp + (size_t) i0 * hp, kp, 1.f, 0.f, s, lds, i0, i1);
        for (int r = 0; r < rows; r++) {
            distillery_causal_softmax_row(s + (size_t) r * lds, i0 + r + 1, scale, att != NULL ? t : 0, pp + (size_t) r * tp, kend);
        }
        float *yb = out_bf16 ? y : (float *) out + (size_t) i0 * ldo;
        const int ldy = out_bf16 ? hp : ldo;
        causal_blocks(CAUSAL_K_TO, 32, t, hs, tp, pp, vp, 1.f, 0.f, yb, ldy, i0, i1);
        if (out_bf16) {   /* VCVTNEPS2BF16 rounds as to_bf16 does */
            for (int r = 0; r < rows; r++) {
                uint16_t *o = (uint16_t *) out + (size_t) (i0 + r) * ldo;
                for (int j = 0; j < hs; j += 16) {
                    const __mmask16 in = hs - j >= 16 ? (__mmask16) 0xffff : (__mmask16) ((1u << (hs - j)) - 1u);
                    const __m256i b = (__m256i) _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(in, y + (size_t) r * hp + j));
                    _mm512_mask_storeu_epi16(o + j, (__mmask32) in, _mm512_castsi256_si512(b));
                }
            }
        }
    }
    return 0;
}

static volatile float peak_sink;

/*
 * The ceiling of the AVX512-BF16 path's arithmetic, the yardstick for its GEMM (Bf16DotPeakBenchmark,
 * twin of FmaPeakBenchmark): PEAK_CHAINS independent chains of VDPBF16PS on 16 fp32 lanes, in
 * registers, no memory traffic, iterations steps each. Returns the floating-point operations done
 * (a step of a chain: 16 lanes x 2 products x 2); the sums go to a sink, so no step is dead.
 * 24 chains: the ceiling needs more of them in flight than the instruction's latency times its
 * issue rate; on Zen 5 twelve fell short of it (docs/PERFORMANCE.md), and 24 accumulators and
 * the two operands still fit the 32 registers.
 */
#define PEAK_CHAINS 24
PACK long distillery_bf16_dot_peak(long iterations) {
    const __m512bh x = (__m512bh) _mm512_set1_epi32(0x3f803f80), y = (__m512bh) _mm512_set1_epi32(0x3a833a83);
    __m512 acc[PEAK_CHAINS];
#pragma GCC unroll 24
    for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_set1_ps((float) i);
    for (long it = 0; it < iterations; it++) {
#pragma GCC unroll 24
        for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    }
    __m512 sum = acc[0];
    for (int i = 1; i < PEAK_CHAINS; i++) sum = _mm512_add_ps(sum, acc[i]);
    peak_sink = _mm512_reduce_add_ps(sum);
    return iterations * PEAK_CHAINS * 16 * 2 * 2;
}
