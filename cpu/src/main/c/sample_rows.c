/*
 * The exps of drawing a token (docs/KERNELS.md#sampling-a-token): p = exp((x - max) * scale) in
 * float64 over a row of fp32 logits, for RowSampler (the CPU's sampleRows); the twin of its Java
 * exps (Float64Exp) and of CUDA's ops_sample_rows. A draw needs every candidate's p at float64
 * accuracy (its boundaries may move only by rounding), and at a 128k vocabulary those exps are
 * most of a decode step's draw. Float64Exp's degree-13 polynomial keeps Zen 4's FMA pipe busy for
 * 18 operations a vector; this exp takes 12:
 *
 *   x = (16 n + j) ln2/16 + r, |r| <= ln2/32      n16 = 16 n + j = round(x 16/ln2), r by two fmas
 *                                                 against ln2/16 split as Float64Exp splits ln2
 *   e^x = 2^n * T[j] * (1 + w), w = e^r - 1 = r (1 + r/2 + ... + r^6/7!)   (truncation 1.2e-18)
 *   S = 2^n T[j] by adding n to T[j]'s exponent bits (T[j] in [1, 2), n >= -1022: S is normal),
 *   e^x = fma(S, w, S): one rounding, gradual underflow included
 *
 * T[j] = 2^(j/16) correctly rounded, picked by one in-register permute on j = n16's low bits.
 * Within 1 ulp of correctly rounded e^x (the table's half ulp and the final rounding);
 * NativeSampleExpsTest holds it to Math.exp. Arguments are <= 0 here (x <= max); below LO
 * (e^x subnormal), -inf and NaN give 0, as Float64Exp does.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SAMPLE __attribute__((target("avx512f,avx512dq,fma")))

/* Below this e^x is subnormal; 0 is returned (Float64Exp.LO). */
#define SAMPLE_EXP_LO (-708.3964185322641)

static const double T16[16] __attribute__((aligned(64))) = {
    0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
    0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
    0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
    0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0,
};

/* e^v for 8 arguments v <= 0 (or NaN); 0 below SAMPLE_EXP_LO and for NaN. */
SAMPLE static inline __m512d exp_sample(__m512d v, __m512d t_lo, __m512d t_hi) {
    const double round = 6755399441055744.0;                       /* 1.5 2^52: adding it rounds to an integer */
    const __mmask8 keep = _mm512_cmp_pd_mask(v, _mm512_set1_pd(SAMPLE_EXP_LO), _CMP_GE_OQ);   /* false for NaN */
    const __m512d t = _mm512_fmadd_pd(v, _mm512_set1_pd(16 * 1.4426950408889634), _mm512_set1_pd(round));
    const __m512d k = _mm512_sub_pd(t, _mm512_set1_pd(round));                                   /* n16 */
    __m512d r = _mm512_fmadd_pd(k, _mm512_set1_pd(-0.6931471803691238 / 16), v);              /* ln2's 32-bit high part */
    r = _mm512_fmadd_pd(k, _mm512_set1_pd(-1.9082149292705877e-10 / 16), r);
    __m512d q = _mm512_fmadd_pd(r, _mm512_set1_pd(1.0 / 5040), _mm512_set1_pd(1.0 / 720));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0));
    const __m512d w = _mm512_mul_pd(q, r);
    /* t's low bits hold n16: the table index is its low 4 (the permute reads no others), n its rest */
    int64_t round_bits;
    memcpy(&round_bits, &round, 8);
    const __m512i n16 = _mm512_sub_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(round_bits));
    const __m512d table = _mm512_permutex2var_pd(t_lo, _mm512_castpd_si512(t), t_hi);
    const __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(_mm512_castpd_si512(table), _mm512_slli_epi64(_mm512_srai_epi64(n16, 4), 52)));
    return _mm512_maskz_mov_pd(keep, _mm512_fmadd_pd(s, w, s));
}

/* The 8 doubles (x[i] - max) * scale of x[0..7] (lo) and x[8..15] (hi). */
SAMPLE static inline void arguments(const float *x, __mmask16 live, __m512d max, __m512d scale, __m512d *lo, __m512d *hi) {
    const __m512 f = _mm512_maskz_loadu_ps(live, x);
    *lo = _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(f)), max), scale);
    *hi = _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1)), max), scale);
}

/*
 * p[i] = exp((x[i] - max) * scale) for i < n, in float64 (0 where that is NaN: x = +inf = max, or
 * x NaN), each x[i] <= max; p NULL: not stored. Returns their sum.
 */
SAMPLE double distillery_sample_exps(const float *x, int n, float max, double scale, double *p) {
    const __m512d top = _mm512_set1_pd(max), sc = _mm512_set1_pd(scale);
    const __m512d t_lo = _mm512_load_pd(T16), t_hi = _mm512_load_pd(T16 + 8);
    __m512d sum_lo = _mm512_setzero_pd(), sum_hi = _mm512_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        const int left = n - i;
        const __mmask16 live = left >= 16 ? 0xffff : (__mmask16) ((1u << left) - 1);
        __m512d lo, hi;
        arguments(x + i, live, top, sc, &lo, &hi);
        /* lanes past n: masked to 0 below */
        const __m512d e_lo = _mm512_maskz_mov_pd((__mmask8) live, exp_sample(lo, t_lo, t_hi));
        const __m512d e_hi = _mm512_maskz_mov_pd((__mmask8) (live >> 8), exp_sample(hi, t_lo, t_hi));
        if (p != NULL) {
            _mm512_mask_storeu_pd(p + i, (__mmask8) live, e_lo);
            _mm512_mask_storeu_pd(p + i + 8, (__mmask8) (live >> 8), e_hi);
        }
        sum_lo = _mm512_add_pd(sum_lo, e_lo);
        sum_hi = _mm512_add_pd(sum_hi, e_hi);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(sum_lo, sum_hi));
}

/* The largest of x[0, n), NaN skipped: -inf when there is none. */
SAMPLE static float max_skipping_nan(const float *x, int n) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {   /* MAXPS returns its second operand where either is NaN */
        m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
    }
    for (; i < n; i += 16) {
        const int left = n - i;
        const __mmask16 live = left >= 16 ? 0xffff : (__mmask16) ((1u << left) - 1);
        m0 = _mm512_mask_max_ps(m0, live, _mm512_maskz_loadu_ps(live, x + i), m0);
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}

/*
 * The sums of a row's exps by blocks, in one pass over the row: each block's largest x found in
 * it (while it is in L1), its exps taken against the largest so far, and the sums of the blocks
 * before scaled by exp((old - new) * scale) whenever that largest grows, so that the row is read
 * once and not first for its maximum. On return *max is the largest of x[0, n) (NaN skipped; -inf
 * when there is none) and sums[b] is block b's sum of exp((x - *max) * scale), over
 * [b * block, min(n, (b + 1) block)), to within a few roundings of distillery_sample_exps against
 * *max (the draw's walk forms the exps of one block again against *max, and takes the rounding
 * between the two as it comes). Returns the sum of the sums, in block order.
 */
SAMPLE double distillery_sample_block_sums(const float *x, int n, int block, double scale, double *sums, float *max) {
    float top = -INFINITY;
    for (int b = 0; (long) b * block < n; b++) {
        const int from = b * block, len = n - from < block ? n - from : block;
        const float m = max_skipping_nan(x + from, len);
        if (m > top) {
            const double rescale = exp(((double) top - m) * scale);   /* 0 from -inf, and where m is +inf */
            for (int q = 0; q < b; q++) sums[q] *= rescale;
            top = m;
        }
        sums[b] = distillery_sample_exps(x + from, len, top, scale, NULL);
    }
    double total = 0;
    for (int b = 0; (long) b * block < n; b++) total += sums[b];
    *max = top;
    return total;
}
