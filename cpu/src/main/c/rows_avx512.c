/* The row kernels on AVX-512 (F, BW, DQ) with FMA: the loss rows and the sampling exps in 16 float or 8 double lanes. */
#define ROWS_VEC_AVX512
#include "distill_rows.inc"
#include "sample_rows.inc"

/*
 * One row of attention's causal softmax for the AVX512-BF16 path's head forward (bf16_gemm.c's
 * distillery_bf16_attention_forward), in place over its n unscaled scores s: p = exp(scale (s -
 * max)) / sum, the exps by exp2v as the loss rows take them (its k = scale log2 e), the sum in 16
 * lanes, then each exp times 1/sum (as CpuAttention's softmax forms it). Zeros follow in s up to
 * s_width; the probabilities rounded to bf16 (round to nearest even, as the GEMM's packs round) go
 * to p16 with zeros up to p16_width.
 */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx512bf16")))
void distillery_causal_softmax_row(float *s, int n, float scale, int s_width, uint16_t *p16, int p16_width) {
    const float k = scale * LOG2E;
    const int full = n / LANES * LANES;
    const vm tail = (vm) ((1u << (n - full)) - 1);
    vf mx = v_set1(-__builtin_inff());
    for (int j = 0; j < full; j += LANES) mx = v_max(mx, v_load(s + j));
    if (tail) mx = v_max(mx, _mm512_mask_loadu_ps(v_set1(-__builtin_inff()), tail, s + full));
    const vf m = v_set1(_mm512_reduce_max_ps(mx));
    vf acc = v_zero();
    for (int j = 0; j < full; j += LANES) {
        vf e = exp2v(v_sub(v_load(s + j), m), k);
        v_store(s + j, e);
        acc = v_add(acc, e);
    }
    if (tail) {
        vf e = v_keep(tail, exp2v(v_sub(_mm512_maskz_loadu_ps(tail, s + full), m), k));
        _mm512_mask_storeu_ps(s + full, tail, e);
        acc = v_add(acc, e);
    }
    const vf inv = v_set1(1.f / _mm512_reduce_add_ps(acc));
    for (int j = 0; j < full; j += LANES) {
        vf p = v_mul(v_load(s + j), inv);
        v_store(s + j, p);
        _mm256_storeu_si256((__m256i *) (p16 + j), (__m256i) _mm512_cvtneps_pbh(p));
    }
    if (tail) {
        vf p = v_mul(_mm512_maskz_loadu_ps(tail, s + full), inv);
        _mm512_mask_storeu_ps(s + full, tail, p);
        _mm256_mask_storeu_epi16(p16 + full, tail, (__m256i) _mm512_cvtneps_pbh(p));
    }
    for (int j = n; j < s_width; j++) s[j] = 0.f;
    for (int j = n; j < p16_width; j++) p16[j] = 0;
}
