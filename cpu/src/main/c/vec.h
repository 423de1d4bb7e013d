/*
 * The vector vocabulary the row kernels (distill_rows.inc, sample_rows.inc) are written in, for
 * one machine per translation unit: ROWS_VEC_AVX512 (rows_avx512.c: sixteen floats or eight
 * doubles a vector, masks in k registers, VSCALEFPS) or ROWS_VEC_AVX2 (rows_avx2.c: eight floats
 * or four doubles, masks as all-ones lanes, blends). Each operation is the same arithmetic on
 * both, one rounding per add, multiply or FMA, so the two machines' rows differ only in how many
 * lanes a sum runs in before it is added up (and in exp2v past 2^127, where both are far past
 * DenseRow.RAISE, and in its half unit below 2^-126, subnormal on AVX2 and 0 on AVX-512, which
 * forward KL's fourth sum takes in on AVX2: v_add_unless_under).
 */
#ifndef DISTILLERY_VEC_H
#define DISTILLERY_VEC_H

#include <immintrin.h>
#include <stdint.h>

#include "rows.h"

#if defined(ROWS_VEC_AVX512)

#define KERNEL __attribute__((target("avx512f,avx512bw,avx512dq,fma")))
#define LANES 16
#define ROWS(name) name##_avx512
#define EXP2_ROUND ROUND   /* exp2v's rounding constant: VSCALEFPS takes n as a float */
typedef __m512 vf;
typedef __mmask16 vm;

static inline KERNEL vf v_set1(float x) { return _mm512_set1_ps(x); }
static inline KERNEL vf v_zero(void) { return _mm512_setzero_ps(); }
static inline KERNEL vf v_load(const float *p) { return _mm512_loadu_ps(p); }
static inline KERNEL void v_store(float *p, vf x) { _mm512_storeu_ps(p, x); }
static inline KERNEL vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline KERNEL vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline KERNEL vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline KERNEL vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }   /* a b + c */
static inline KERNEL vf v_fms(vf a, vf b, vf c) { return _mm512_fmsub_ps(a, b, c); }   /* a b - c */
static inline KERNEL vm v_lt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
static inline KERNEL vm v_gt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static inline KERNEL vm v_eq(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
static inline KERNEL vm v_not_le(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_NLE_UQ); }   /* !(a <= b): NaN lanes too */
static inline KERNEL vm v_nan(vf a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
static inline KERNEL vm v_or(vm a, vm b) { return a | b; }
static inline KERNEL vf v_blend(vf x, vm m, vf y) { return _mm512_mask_mov_ps(x, m, y); }        /* m ? y : x */
static inline KERNEL vf v_keep(vm m, vf x) { return _mm512_maskz_mov_ps(m, x); }                 /* m ? x : 0 */

/* exp2v's argument d, and the lanes under 2^EXP2_LO (d k < EXP2_LO) found by a compare. */
static inline KERNEL vf v_exp2_arg(vf d, float k, vm *under) {
    *under = _mm512_cmp_ps_mask(d, _mm512_set1_ps(EXP2_LO / k), _CMP_LT_OQ);
    return d;
}
/* p 2^n for the lanes not under (t = n + 1.5 2^23), 0 for those: n by VSCALEFPS, with the mask in the same instruction. */
static inline KERNEL vf v_times_2n(vf p, vf t, vf n, vm under) {
    (void) t;
    return _mm512_maskz_scalef_ps((__mmask16) ~under, p, n);
}
/*
 * acc + (d - ds) e for e = exp2v(d, k), acc itself on the lanes where e is 0: v_exp2_arg's under
 * lanes (a NaN d goes in: it is not under), the compare exp2v made already, and a masked FMA, as
 * the Java lanes.
 */
static inline KERNEL vf v_add_unless_under(vf acc, vf d, vf ds, vf e, float k) {
    vm under;
    (void) v_exp2_arg(d, k, &under);
    return _mm512_mask3_fmadd_ps(_mm512_sub_ps(d, ds), e, acc, (__mmask16) ~under);
}

/* x's exponent field less 126 as a float, and its mantissa with the exponent of [0.5, 1). */
static inline KERNEL vf v_exponent(vf x) {
    return _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(_mm512_castps_si512(x), 23), _mm512_set1_epi32(126)));
}
static inline KERNEL vf v_half_mantissa(vf x) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x007FFFFF)),
                                               _mm512_set1_epi32(0x3F000000)));
}

/* 16 bf16 values at h as fp32 in one permute: word i to the high half of lane i, the low half zeroed (TeacherBlocks.widen). */
static inline __attribute__((always_inline)) KERNEL vf widen_bf16(const uint16_t *h) {
    const __m512i WIDEN = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8,
                                           7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, WIDEN,
                                                              _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) h))));
}


/* Doubles (sample_rows.inc): DLANES a vector; a group is 2 DLANES floats, widened into two. */
#define DLANES 8
typedef __m512d vd;
typedef __mmask8 vdm;
typedef __m512i vi;   /* 64-bit integers */
static inline KERNEL vd vd_set1(double x) { return _mm512_set1_pd(x); }
static inline KERNEL vd vd_zero(void) { return _mm512_setzero_pd(); }
static inline KERNEL vd vd_add(vd a, vd b) { return _mm512_add_pd(a, b); }
static inline KERNEL vd vd_sub(vd a, vd b) { return _mm512_sub_pd(a, b); }
static inline KERNEL vd vd_mul(vd a, vd b) { return _mm512_mul_pd(a, b); }
static inline KERNEL vd vd_fma(vd a, vd b, vd c) { return _mm512_fmadd_pd(a, b, c); }
static inline KERNEL vdm vd_ge(vd a, vd b) { return _mm512_cmp_pd_mask(a, b, _CMP_GE_OQ); }
static inline KERNEL vdm vd_and(vdm a, vdm b) { return a & b; }
static inline KERNEL vd vd_keep(vdm m, vd x) { return _mm512_maskz_mov_pd(m, x); }
static inline KERNEL double vd_sum(vd x) { return _mm512_reduce_add_pd(x); }
/* The first `live` lanes of a group's low (half 0) or high (half 1) vector. */
static inline KERNEL vdm vd_live(int live, int half) {
    const __mmask16 group = live >= 16 ? (__mmask16) 0xffff : (__mmask16) ((1u << live) - 1);
    return (vdm) (group >> (half * DLANES));
}
/* The group's 2 DLANES floats from x (the first `live` of them; 0 past) as (x - max) scale, in two halves. */
static inline KERNEL void vd_group(const float *x, int live, vd max, vd scale, vd *lo, vd *hi) {
    const __m512 f = _mm512_maskz_loadu_ps(live >= 16 ? (__mmask16) 0xffff : (__mmask16) ((1u << live) - 1), x);
    *lo = vd_mul(vd_sub(_mm512_cvtps_pd(_mm512_castps512_ps256(f)), max), scale);
    *hi = vd_mul(vd_sub(_mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1)), max), scale);
}
static inline KERNEL void vd_store_where(double *p, vdm m, vd x) { _mm512_mask_storeu_pd(p, m, x); }
/* table[j] for j the low 4 bits of t's lanes, from a 16-entry table in one two-register permute. */
static inline KERNEL vd vd_table16(const double *table, vd t) {
    return _mm512_permutex2var_pd(_mm512_load_pd(table), _mm512_castpd_si512(t), _mm512_load_pd(table + 8));
}
/* x's bits plus n's, lane by lane (64-bit integers). */
static inline KERNEL vd vd_add_bits(vd x, vi n) { return _mm512_castsi512_pd(_mm512_add_epi64(_mm512_castpd_si512(x), n)); }
static inline KERNEL vi vd_bits(vd x) { return _mm512_castpd_si512(x); }
static inline KERNEL vi vi_set1(int64_t x) { return _mm512_set1_epi64(x); }
static inline KERNEL vi vi_sub(vi a, vi b) { return _mm512_sub_epi64(a, b); }
static inline KERNEL vi vi_andnot(vi a, vi b) { return _mm512_andnot_si512(a, b); }   /* ~a & b */
static inline KERNEL vi vi_shl(vi a, int n) { return _mm512_slli_epi64(a, n); }
/* MAXPS: b where either is NaN, so a NaN x given as a never wins. */
static inline KERNEL vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }

#elif defined(ROWS_VEC_AVX2)

#define KERNEL __attribute__((target("avx2,fma")))
#define LANES 8
#define ROWS(name) name##_avx2
/*
 * exp2v's rounding constant: 1.5 2^23 + 127, so that t = n + EXP2_ROUND ends in the bits of n's
 * exponent field (v_times_2n). Odd where ROUND is even: a d k exactly halfway between two integers
 * may round to the other one (r = -0.5 for +0.5), within the polynomial's range either way.
 */
#define EXP2_ROUND (ROUND + 127.f)
typedef __m256 vf;
typedef __m256 vm;   /* all ones where true */

static inline KERNEL vf v_set1(float x) { return _mm256_set1_ps(x); }
static inline KERNEL vf v_zero(void) { return _mm256_setzero_ps(); }
static inline KERNEL vf v_load(const float *p) { return _mm256_loadu_ps(p); }
static inline KERNEL void v_store(float *p, vf x) { _mm256_storeu_ps(p, x); }
static inline KERNEL vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline KERNEL vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline KERNEL vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline KERNEL vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline KERNEL vf v_fms(vf a, vf b, vf c) { return _mm256_fmsub_ps(a, b, c); }
static inline KERNEL vm v_lt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
static inline KERNEL vm v_gt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
static inline KERNEL vm v_eq(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
static inline KERNEL vm v_not_le(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_NLE_UQ); }
static inline KERNEL vm v_nan(vf a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
static inline KERNEL vm v_or(vm a, vm b) { return _mm256_or_ps(a, b); }
static inline KERNEL vf v_blend(vf x, vm m, vf y) { return _mm256_blendv_ps(x, y, m); }
static inline KERNEL vf v_keep(vm m, vf x) { return _mm256_and_ps(m, x); }

/*
 * exp2v's argument d raised to (EXP2_LO - 1)/k, so that no lane needs a mask: such a lane's n is
 * EXP2_LO - 1, its exponent field in v_times_2n 0, and its 2^n 0. One MAXPS where the Java lanes
 * compare and clear, two operations among the FMAs' (docs/KERNELS.md#the-native-row); a NaN d
 * stays NaN (MAXPS gives its second operand). A lane with d k in [EXP2_LO - 0.5, EXP2_LO) keeps
 * its subnormal p 2^EXP2_LO where Java gives 0.
 */
static inline KERNEL vf v_exp2_arg(vf d, float k, vm *under) {
    (void) under;
    return _mm256_max_ps(_mm256_set1_ps((EXP2_LO - 1.f) / k), d);
}
/*
 * p 2^n as the Java lanes form it on AVX2: 2^n from t's low bits, (n + 127) << 23 capped at the
 * largest exponent field, then one multiply. t = n + EXP2_ROUND, whose bits end in n + 127 (the
 * bias is in the rounding constant, so no subtract: the bits above shift out); n >= EXP2_LO - 1
 * (v_exp2_arg), so the field is never below 0 and no lane needs a mask.
 */
static inline KERNEL vf v_times_2n(vf p, vf t, vf n, vm under) {
    (void) n;
    (void) under;
    __m256i field = _mm256_min_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4B400000 + EXP2_FIELD_MAX));
    return v_mul(p, _mm256_castsi256_ps(_mm256_slli_epi32(field, 23)));
}
/*
 * The same sum without a mask: d raised by v_exp2_arg (the MAXPS exp2v made already), so a lane
 * whose e is 0 adds 0 times (d - ds) and acc keeps its bits;
 * a compare and a blend fewer a vector. Where e is subnormal (d k in [EXP2_LO - 0.5, EXP2_LO)) its
 * term goes in, as e itself goes into its sum here. A -inf student logit (ds = -inf) whose e is 0
 * makes 0 x inf, NaN: the caller runs such a block's sum again with the lanes masked (pass_a_block_t).
 */
static inline KERNEL vf v_add_unless_under(vf acc, vf d, vf ds, vf e, float k) {
    vm unused;
    return v_fma(v_sub(v_exp2_arg(d, k, &unused), ds), e, acc);
}

static inline KERNEL vf v_exponent(vf x) {
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(x), 23), _mm256_set1_epi32(126)));
}
static inline KERNEL vf v_half_mantissa(vf x) {
    return _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x007FFFFF)),
                                               _mm256_set1_epi32(0x3F000000)));
}

/* 8 bf16 values at h as fp32: each word widened to a lane and moved to its high half. */
static inline __attribute__((always_inline)) KERNEL vf widen_bf16(const uint16_t *h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *) h)), 16));
}


#define DLANES 4
typedef __m256d vd;
typedef __m256d vdm;
typedef __m256i vi;
static inline KERNEL vd vd_set1(double x) { return _mm256_set1_pd(x); }
static inline KERNEL vd vd_zero(void) { return _mm256_setzero_pd(); }
static inline KERNEL vd vd_add(vd a, vd b) { return _mm256_add_pd(a, b); }
static inline KERNEL vd vd_sub(vd a, vd b) { return _mm256_sub_pd(a, b); }
static inline KERNEL vd vd_mul(vd a, vd b) { return _mm256_mul_pd(a, b); }
static inline KERNEL vd vd_fma(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); }
static inline KERNEL vdm vd_ge(vd a, vd b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
static inline KERNEL vdm vd_and(vdm a, vdm b) { return _mm256_and_pd(a, b); }
static inline KERNEL vd vd_keep(vdm m, vd x) { return _mm256_and_pd(m, x); }
static inline KERNEL double vd_sum(vd x) {
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd(x, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
static inline KERNEL vdm vd_live(int live, int half) {
    return _mm256_castsi256_pd(_mm256_cmpgt_epi64(_mm256_set1_epi64x(live - half * DLANES), _mm256_setr_epi64x(0, 1, 2, 3)));
}
static inline KERNEL void vd_group(const float *x, int live, vd max, vd scale, vd *lo, vd *hi) {
    const __m256 f = live >= 8 ? _mm256_loadu_ps(x)
                               : _mm256_maskload_ps(x, _mm256_cmpgt_epi32(_mm256_set1_epi32(live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    *lo = vd_mul(vd_sub(_mm256_cvtps_pd(_mm256_castps256_ps128(f)), max), scale);
    *hi = vd_mul(vd_sub(_mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)), max), scale);
}
static inline KERNEL void vd_store_where(double *p, vdm m, vd x) { _mm256_maskstore_pd(p, _mm256_castpd_si256(m), x); }
/* table[j] for j the low 4 bits of t's lanes, gathered (AVX2 has no two-register permute). */
static inline KERNEL vd vd_table16(const double *table, vd t) {
    return _mm256_i64gather_pd(table, _mm256_and_si256(_mm256_castpd_si256(t), _mm256_set1_epi64x(15)), 8);
}
static inline KERNEL vd vd_add_bits(vd x, vi n) { return _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(x), n)); }
static inline KERNEL vi vd_bits(vd x) { return _mm256_castpd_si256(x); }
static inline KERNEL vi vi_set1(int64_t x) { return _mm256_set1_epi64x(x); }
static inline KERNEL vi vi_sub(vi a, vi b) { return _mm256_sub_epi64(a, b); }
static inline KERNEL vi vi_andnot(vi a, vi b) { return _mm256_andnot_si256(a, b); }
static inline KERNEL vi vi_shl(vi a, int n) { return _mm256_slli_epi64(a, n); }
static inline KERNEL vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }

#else
#error "define ROWS_VEC_AVX512 or ROWS_VEC_AVX2"
#endif

/*
 * VectorOps.exp2(d, k) = 2^(d k): the same reduction and polynomial lane for lane; 2^n goes in by
 * v_times_2n, on AVX-512 by VSCALEFPS, one instruction where the Java side has an integer
 * subtract, min, shift and a multiply (on AVX2 a min, a shift and the multiply). The same value
 * wherever d k < 127.5 (but for v_exp2_arg's and EXP2_ROUND's notes on AVX2); from there to 128.5
 * VSCALEFPS may be finite where Java gives +inf, both far past DenseRow.RAISE, so the block is
 * raised and run again on either side. n = t - EXP2_ROUND is formed once and serves the reduction
 * (r = d k - n, the bits of Java's fma(d, k, 1.5 2^23 - t)) and VSCALEFPS: one operation fewer per
 * exp than forming both.
 */
static inline KERNEL vf exp2v(vf d, float k) {
    vf K = v_set1(k), R = v_set1(EXP2_ROUND);
    vm under;
    d = v_exp2_arg(d, k, &under);
    vf t = v_fma(d, K, R), n = v_sub(t, R);
    vf r = v_fms(d, K, n);
    vf p = v_fma(r, v_set1(E6), v_set1(E5));
    p = v_fma(p, r, v_set1(E4));
    p = v_fma(p, r, v_set1(E3));
    p = v_fma(p, r, v_set1(E2));
    p = v_fma(p, r, v_set1(E1));
    p = v_fma(p, r, v_set1(1.f));
    return v_times_2n(p, t, n, under);
}

#endif
