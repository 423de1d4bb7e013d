/*
 * The native rows of the fused distillation loss: the passes of its commonest rows in C, the same
 * plan and arithmetic as the Java rows (kernels/src/main/java/dev/distillery/kernels/cpu/distill),
 * operation for operation, with prefetches of the next row (docs/KERNELS.md#the-native-row). Each
 * function is named after its Java twin:
 *
 *   distillery_dense_forward_kl_row   DenseForwardKl.row, the rows whose gradient is formed over the
 *                                     e_s pass A leaves in the gradient row (T = 2, or T = 1 without a
 *                                     hard label), fp32 or bf16 teacher as wide as the student:
 *                                     DenseRow.passA (lazy maxima, last block first) + pass B
 *     pass_a_block                    DenseForwardKl.passABlock, e_s written over g directly and the
 *                                     block's s kept in an L1 block for a raise (Java stages e_s in
 *                                     that block and copies it over g: the same values, a copy fewer)
 *     pass_b_in_g                     DenseForwardKl.passBInG
 *     teacher_max                     TeacherBlocks.max
 *   distillery_student_pass           StudentPass.run with e kept (top-k and sampled rows)
 *   distillery_squared_gradient       SparseRows.squaredGradient
 *   exp2v, exp2s                      VectorOps.exp2 (vector and scalar; exp2v scales by VSCALEFPS)
 *   max_skipping_nan                  VectorOps.maxSkippingNaN
 *   sum_lanes                         VectorOps.sumLanes
 *
 * The Java side (kernels.cpu.distill.NativeRowPasses, through dev.distillery.bindings.DistilleryCpu)
 * calls a function once per row and keeps every other case, the sparse entries and every error
 * message: the C code returns a code and Java names the row and column.
 *
 * Built by cpu/build-native.sh (no -march: the kernel functions carry their own target attribute
 * and distillery_cpu_supported() says whether this CPU can run them).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16
#define KERNEL __attribute__((target("avx512f,avx512bw,avx512dq,fma")))

/* Shared with the Java rows; SharedConstantsTest checks every value against its Java twin. */
#define BLOCK 2048                                  /* FusedDistillLoss.BLOCK */
static const float RAISE = 0x1p56f;                 /* DenseRow.RAISE */
/*
 * Rows up to this many bytes (65,536 floats) have the next row asked for into L2 rather than L1:
 * a row, its scratch and the next one then fit in a 1 MB L2, and the hint that stops at L2 leaves
 * L1 to the row being worked on (docs/PERFORMANCE.md: top-k rows 17-19% faster at V = 32,000 and
 * 50,257, dense ones 2-3%). Longer rows keep the L1 hint: at V = 128,256 three rows are 1.5 MB,
 * and the L2 hint was slower there.
 */
#define ROW_PREFETCH_L2_BYTES (256L * 1024)
static const float LOG2E = 1.44269504088896341f;    /* VectorOps.LOG2E */
static const float ROUND = 12582912.f;              /* VectorOps.ROUND, 1.5 * 2^23 */
static const float EXP2_LO = -126.f;                /* VectorOps.EXP2_LO */
static const float E1 = 6.9314718246e-01f, E2 = 2.4022647738e-01f, E3 = 5.5503323674e-02f,   /* VectorOps.E1..E6 */
                   E4 = 9.6184369177e-03f, E5 = 1.3398875017e-03f, E6 = 1.5353361960e-04f;
#define EXP2_FIELD_MAX 255                          /* VectorOps.EXP2_FIELD_MAX */

/* Return codes of distillery_dense_forward_kl_row (NativeRowPasses names them). */
enum { ROW_OK = 0, ROW_NOT_FINITE = 1, ROW_TEACHER_NAN = 2, ROW_TEACHER_MAX = 3 };

/* The interface version DistilleryCpu expects. */
int distillery_cpu_abi(void) { return 10; }

int distillery_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
}

static inline uint32_t bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float from_bits(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
static inline float bf16(uint16_t h) { return from_bits((uint32_t) h << 16); }
static inline float greater(float a, float b) { return b > a ? b : a; } /* VectorOps.greater: skips NaN b */

/*
 * VectorOps.exp2(d, k) = 2^(d k): the same reduction and polynomial lane for lane; 2^n goes in by
 * VSCALEFPS, one instruction where the Java side has an integer subtract, min, shift and a
 * multiply. The same value wherever d k < 127.5; from there to 128.5 it may be finite where Java
 * gives +inf, both far past DenseRow.RAISE, so the block is raised and run again on either side.
 * n = t - 1.5 2^23 is formed once and serves both the reduction (r = d k - n, the bits of Java's
 * fma(d, k, 1.5 2^23 - t)) and the scale: one operation fewer per exp than forming both.
 */
static inline KERNEL __m512 exp2v(__m512 d, float k) {
    __m512 K = _mm512_set1_ps(k), R = _mm512_set1_ps(ROUND);
    __mmask16 under = _mm512_cmp_ps_mask(d, _mm512_set1_ps(EXP2_LO / k), _CMP_LT_OQ);
    __m512 t = _mm512_fmadd_ps(d, K, R), n = _mm512_sub_ps(t, R);
    __m512 r = _mm512_fmsub_ps(d, K, n);
    __m512 p = _mm512_fmadd_ps(r, _mm512_set1_ps(E6), _mm512_set1_ps(E5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(E4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(E3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(E2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(E1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
    return _mm512_maskz_scalef_ps((__mmask16) ~under, p, n);
}

/* The scalar twin, VectorOps.exp2(float, float). */
static inline KERNEL float exp2s(float d, float k) {
    if (d < EXP2_LO / k) return 0.f;
    if (d != d) return d;
    float t = fmaf(d, k, ROUND);
    float r = fmaf(d, k, ROUND - t);
    float p = fmaf(r, E6, E5);
    p = fmaf(p, r, E4);
    p = fmaf(p, r, E3);
    p = fmaf(p, r, E2);
    p = fmaf(p, r, E1);
    p = fmaf(p, r, 1.f);
    int32_t field = (int32_t) bits(t) - (0x4B400000 - 127);
    if (field > EXP2_FIELD_MAX) field = EXP2_FIELD_MAX;
    return p * from_bits((uint32_t) field << 23);
}

/*
 * VectorOps.sumLanes: the lanes added in lane order, so that the sums (and through log Z_T a
 * top-k row's tail 1 - sum q, which cancels when the student leaves little mass outside the
 * top-k) have the Java rows' bits.
 */
static inline KERNEL float sum_lanes(__m512 v) {
    float lanes[LANES], sum = 0.f;
    _mm512_storeu_ps(lanes, v);
    for (int l = 0; l < LANES; l++) sum += lanes[l];
    return sum;
}

/* VectorOps.maxSkippingNaN: a lane takes x only where x > it, so NaN never wins. */
static KERNEL float max_skipping_nan(const float *x, int n) {
    __m512 a = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        __m512 y = _mm512_loadu_ps(x + i);
        a = _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(y, a, _CMP_GT_OQ), y);
    }
    float lanes[LANES], m = -INFINITY;
    _mm512_storeu_ps(lanes, a);
    for (int l = 0; l < LANES; l++) m = greater(m, lanes[l]);
    for (; i < n; i++) m = greater(m, x[i]);
    return m;
}

/* 16 bf16 values at h as fp32: each word to the high half of its lane (TeacherBlocks.widen). */
static inline KERNEL __m512 widen_bf16(const uint16_t *h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *) h)), 16));
}

/*
 * TeacherBlocks.max: the largest non-NaN logit of n from element `from`, -inf where there is none.
 * bf16 in two vector accumulators, fp32 a block at a time, lanes and blocks combined in the Java
 * twin's order, so that even the sign of a zero maximum is the same.
 */
static KERNEL float teacher_max(const void *t, int bf, long from, int n) {
    float m = -INFINITY;
    if (!bf) {
        const float *f = (const float *) t + from;
        for (int j0 = 0; j0 < n; j0 += BLOCK) m = greater(m, max_skipping_nan(f + j0, n - j0 < BLOCK ? n - j0 : BLOCK));
        return m;
    }
    const uint16_t *h = (const uint16_t *) t + from;
    int i = 0;
    if (n >= LANES) {
        __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
        for (; i + 2 * LANES <= n / LANES * LANES; i += 2 * LANES) {
            __m512 x0 = widen_bf16(h + i), x1 = widen_bf16(h + i + LANES);
            m0 = _mm512_mask_mov_ps(m0, _mm512_cmp_ps_mask(x0, m0, _CMP_GT_OQ), x0);
            m1 = _mm512_mask_mov_ps(m1, _mm512_cmp_ps_mask(x1, m1, _CMP_GT_OQ), x1);
        }
        for (; i + LANES <= n; i += LANES) {
            __m512 x0 = widen_bf16(h + i);
            m0 = _mm512_mask_mov_ps(m0, _mm512_cmp_ps_mask(x0, m0, _CMP_GT_OQ), x0);
        }
        m0 = _mm512_mask_mov_ps(m0, _mm512_cmp_ps_mask(m1, m0, _CMP_GT_OQ), m1);
        float lanes[LANES];
        _mm512_storeu_ps(lanes, m0);
        for (int l = 0; l < LANES; l++) m = greater(m, lanes[l]);
    }
    for (; i < n; i++) m = greater(m, bf16(h[i]));
    return m;
}

/*
 * DenseForwardKl.passABlock: s copied to s_save, e_s = 2^((s - ms) k) to es_out (which may be s: each
 * vector is read before its e_s is stored), e_t = 2^((t - mt) k) to et, sums {sum e_s, sum e_s^2,
 * sum e_t, sum e_t ((t - mt) - (s - ms))}, terms whose e_t underflows left out of the fourth.
 * Prefetches one line of the next student row and half a line of its teacher row per 16 columns,
 * from ps / pt, never past ps_end / pt_end, into L2 (to_l2) or L1.
 */
static inline __attribute__((always_inline)) KERNEL void pass_a_block_t(const float *s, int len, float ms, float k,
        float *es_out, float *s_save, const void *tv, int bf, float mt, float *et_out, const char *ps, const char *ps_end,
        const char *pt, const char *pt_end, int pt_step, int to_l2, float *sums) {
    const uint16_t *th = (const uint16_t *) tv;
    const float *tf = (const float *) tv;
    __m512 zs = _mm512_setzero_ps(), zsq = zs, zt = zs, acc = zs;
    __m512 MS = _mm512_set1_ps(ms), MT = _mm512_set1_ps(mt);
    float lo = EXP2_LO / k;
    __m512 LO = _mm512_set1_ps(lo);
    /* bf16 to fp32 in one permute: word i to the high half of lane i, the low half zeroed (masked) */
    const __m512i WIDEN = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8,
                                           7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        const char *a = ps + (long) i * 4, *b = pt + (long) i * pt_step;
        if (to_l2) {
            _mm_prefetch(a < ps_end ? a : ps_end, _MM_HINT_T1);
            _mm_prefetch(b < pt_end ? b : pt_end, _MM_HINT_T1);
        } else {
            _mm_prefetch(a < ps_end ? a : ps_end, _MM_HINT_T0);
            _mm_prefetch(b < pt_end ? b : pt_end, _MM_HINT_T0);
        }
        __m512 sv = _mm512_loadu_ps(s + i);
        _mm512_storeu_ps(s_save + i, sv);
        __m512 ds = _mm512_sub_ps(sv, MS);
        __m512 tt = bf ? _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, WIDEN,
                             _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) (th + i)))))
                       : _mm512_loadu_ps(tf + i);
        __m512 dt = _mm512_sub_ps(tt, MT);
        __m512 es = exp2v(ds, k), et = exp2v(dt, k);
        zs = _mm512_add_ps(zs, es);
        zsq = _mm512_fmadd_ps(es, es, zsq);
        zt = _mm512_add_ps(zt, et);
        __mmask16 gone = _mm512_cmp_ps_mask(dt, LO, _CMP_LT_OQ);
        /* lanes whose e_t underflowed keep acc as it is (dt - ds may be -inf there: no 0 x inf) */
        acc = _mm512_mask3_fmadd_ps(_mm512_sub_ps(dt, ds), et, acc, (__mmask16) ~gone);
        _mm512_storeu_ps(es_out + i, es);
        _mm512_storeu_ps(et_out + i, et);
    }
    float szs = _mm512_reduce_add_ps(zs), szsq = _mm512_reduce_add_ps(zsq), szt = _mm512_reduce_add_ps(zt),
          sacc = _mm512_reduce_add_ps(acc);
    for (; i < len; i++) {
        s_save[i] = s[i];
        float ds = s[i] - ms, dt = (bf ? bf16(th[i]) : tf[i]) - mt;
        float es = exp2s(ds, k), et = exp2s(dt, k);
        szs += es;
        szsq = fmaf(es, es, szsq);
        szt += et;
        if (dt >= lo) sacc = fmaf(dt - ds, et, sacc);
        es_out[i] = es;
        et_out[i] = et;
    }
    sums[0] = szs;
    sums[1] = szsq;
    sums[2] = szt;
    sums[3] = sacc;
}

/* pass_a_block_t specialised by teacher type (bf16 or fp32: its step in bytes) and prefetch level */
#define PASS_A_BLOCK(name, bf, pt_step, to_l2)                                                                    \
    static KERNEL void name(const float *s, int len, float ms, float k, float *es_out, float *s_save, const void *t, float mt,  \
                            float *et_out, const char *ps, const char *ps_end, const char *pt, const char *pt_end, \
                            float *sums) {                                                                        \
        pass_a_block_t(s, len, ms, k, es_out, s_save, t, bf, mt, et_out, ps, ps_end, pt, pt_end, pt_step, to_l2, sums);  \
    }
PASS_A_BLOCK(pass_a_block_bf16, 1, 2, 0)
PASS_A_BLOCK(pass_a_block_f32, 0, 4, 0)
PASS_A_BLOCK(pass_a_block_bf16_l2, 1, 2, 1)
PASS_A_BLOCK(pass_a_block_f32_l2, 0, 4, 1)

/*
 * DenseForwardKl.passBInG over a whole row: g = e_s (c1z e_s + a) - b e_t, over the e_s pass A
 * left in g.
 */
static inline KERNEL void pass_b_in_g(float *g, const float *e_t, int v, float a, float b, float c1z) {
    __m512 A = _mm512_set1_ps(a), NB = _mm512_set1_ps(-b), C = _mm512_set1_ps(c1z);
    int i = 0;
    for (; i + LANES <= v; i += LANES) {
        __m512 e = _mm512_loadu_ps(g + i);
        _mm512_storeu_ps(g + i, _mm512_fmadd_ps(e, _mm512_fmadd_ps(e, C, A), _mm512_mul_ps(_mm512_loadu_ps(e_t + i), NB)));
    }
    for (; i < v; i++) g[i] = fmaf(g[i], fmaf(g[i], c1z, a), e_t[i] * -b);
}

/*
 * DenseForwardKl.row for one row: s (student logits, v), g (gradient row, may be s), t (teacher logits of this row,
 * v, bf16 when teacher_bf16 else fp32), power 1 or 2 (the CE's normalizer is sum e_s or sum e_s^2;
 * power 1 only without a hard label term, c1 = 0), next_s / next_t the next row's lines to
 * prefetch (next_s_bytes / next_t_bytes long), e_t a scratch row of v floats. out = {m_s + log Z_1,
 * KL, raises, the teacher maximum when ROW_TEACHER_MAX}.
 *
 * ROW_NOT_FINITE: a row without finite maxima; nothing was written (the Java rows take it).
 * ROW_TEACHER_NAN: the teacher sum came out NaN (a NaN or +inf logit; the caller names it).
 * ROW_TEACHER_MAX: a raise found a teacher maximum of +inf.
 */
KERNEL int distillery_dense_forward_kl_row(const float *s, float *g, const void *t, int teacher_bf16, int v, float inv_t,
                                           int power, float c1, float cq, const char *next_s, long next_s_bytes,
                                           const char *next_t, long next_t_bytes, float *e_t, double *out) {
    int first = (v - 1) / BLOCK * BLOCK, nb = (v + BLOCK - 1) / BLOCK;
    float ms = max_skipping_nan(s + first, v - first);
    if (!isfinite(ms)) ms = max_skipping_nan(s, v);
    float mt = teacher_max(t, teacher_bf16, first, v - first);
    if (!isfinite(mt)) mt = teacher_max(t, teacher_bf16, 0, v);
    if (!isfinite(ms) || !isfinite(mt)) return ROW_NOT_FINITE;

    float k = inv_t * LOG2E;
    float sb[BLOCK] __attribute__((aligned(64)));   /* the block's logits: g may be s, and a raise runs the block again */
    float sums[4];
    double zs = 0, zsq = 0, zt = 0, acc = 0, raises = 0;
    int pt_step = teacher_bf16 ? 2 : 4;
    const char *ps_end = next_s + next_s_bytes - 1, *pt_end = next_t + next_t_bytes - 1;
    void (*block)(const float *, int, float, float, float *, float *, const void *, float, float *, const char *, const char *,
                  const char *, const char *, float *) = next_s_bytes <= ROW_PREFETCH_L2_BYTES
                                                          ? (teacher_bf16 ? pass_a_block_bf16_l2 : pass_a_block_f32_l2)
                                                          : (teacher_bf16 ? pass_a_block_bf16 : pass_a_block_f32);
    for (int bi = 0; bi < nb; bi++) {
        int j0 = (nb - 1 - bi) * BLOCK, len = v - j0 < BLOCK ? v - j0 : BLOCK;
        const char *ps = next_s + (long) bi * BLOCK * 4, *pt = next_t + (long) bi * BLOCK * pt_step;
        const void *tj = (const char *) t + (long) j0 * pt_step;
        block(s + j0, len, ms, k, g + j0, sb, tj, mt, e_t + j0, ps, ps_end, pt, pt_end, sums);
        if (sums[0] > RAISE || sums[2] > RAISE) {
            /* DenseRow.passA: raise the maxima to the block's, rescale what is done, run again */
            float ms2 = greater(ms, max_skipping_nan(sb, len));
            float mt2 = greater(mt, teacher_max(t, teacher_bf16, j0, len));
            if (isnan(mt2) || isinf(mt2)) {
                out[3] = mt2;
                return ROW_TEACHER_MAX;
            }
            double dms = (double) ms2 - ms, dmt = (double) mt2 - mt;
            double fs = exp(-dms * inv_t), ft = exp(-dmt * inv_t);
            acc = ft * (acc + (dms - dmt) * zt);
            zs *= fs;
            zsq *= fs * fs;
            zt *= ft;
            float ffs = (float) fs, fft = (float) ft;
            for (int j = j0 + len; j < v; j++) {
                g[j] *= ffs;
                e_t[j] *= fft;
            }
            raises++;
            ms = ms2;
            mt = mt2;
            memcpy(g + j0, sb, (size_t) len * 4);
            block(s + j0, len, ms, k, g + j0, sb, tj, mt, e_t + j0, ps, ps_end, pt, pt_end, sums);
        }
        zs += sums[0];
        zsq += sums[1];
        zt += sums[2];
        acc += sums[3];
    }
    if (isnan(zt)) return ROW_TEACHER_NAN;
    double z1 = power == 1 ? zs : zsq;
    double kl = acc * inv_t / zt - log(zt) + log(zs);
    /* pass B: g = e_s (c1 e_s / Z_1 + cq / Z_s) - cq e_t / Z_t */
    pass_b_in_g(g, e_t, v, (float) (cq / zs), (float) (cq / zt), (float) (c1 / z1));
    out[0] = ms + log(z1);
    out[1] = kl;
    out[2] = raises;
    return ROW_OK;
}

/*
 * StudentPass.block: one block of the student pass, e = 2^((s - m) k) to e, *s1 = sum e and
 * *sp = sum e^power (power 1 or 2: the CE's normalizer at T = 1 or 2), prefetching the next
 * row's line per 16 columns, into L2 (to_l2) or L1.
 */
static inline __attribute__((always_inline)) KERNEL void student_block(const float *s, int len, float m, float k,
        int power, float *e, const char *ps, const char *ps_end, int to_l2, float *s1, float *sp) {
    __m512 acc = _mm512_setzero_ps(), accp = acc, M = _mm512_set1_ps(m);
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        const char *a = ps + (long) i * 4;
        if (to_l2) {
            _mm_prefetch(a < ps_end ? a : ps_end, _MM_HINT_T1);
        } else {
            _mm_prefetch(a < ps_end ? a : ps_end, _MM_HINT_T0);
        }
        __m512 x = exp2v(_mm512_sub_ps(_mm512_loadu_ps(s + i), M), k);
        _mm512_storeu_ps(e + i, x);
        acc = _mm512_add_ps(acc, x);
        accp = power == 2 ? _mm512_fmadd_ps(x, x, accp) : _mm512_add_ps(accp, x);
    }
    float a1 = sum_lanes(acc), ap = sum_lanes(accp);
    for (; i < len; i++) {
        float x = exp2s(s[i] - m, k);
        e[i] = x;
        a1 += x;
        ap = power == 2 ? fmaf(x, x, ap) : ap + x;
    }
    *s1 = a1;
    *sp = ap;
}

/*
 * StudentPass.run with e kept, for top-k and sampled rows, with DenseRow's lazy maximum: it
 * starts as the first block's (the row's when that has none finite) and rises to a block's own
 * when that block's sums pass RAISE, the sums so far rescaled and the block run again; the
 * maximum each block's e is shifted by goes to block_max. out = {m, log Z_T, log Z_1, raises}.
 */
KERNEL void distillery_student_pass(const float *s, int v, float inv_t, int power, float *e, float *block_max,
                                    const char *next_s, long next_s_bytes, double *out) {
    const int to_l2 = next_s_bytes <= ROW_PREFETCH_L2_BYTES;
    float k = inv_t * LOG2E;
    float m = max_skipping_nan(s, v < BLOCK ? v : BLOCK);
    if (!isfinite(m)) m = max_skipping_nan(s, v);
    double zt = 0, z1 = 0;
    int raises = 0;
    const char *ps_end = next_s + next_s_bytes - 1;
    for (int j0 = 0; j0 < v; j0 += BLOCK) {
        int len = v - j0 < BLOCK ? v - j0 : BLOCK;
        float s1, sp;
        student_block(s + j0, len, m, k, power, e + j0, next_s + (long) j0 * 4, ps_end, to_l2, &s1, &sp);
        if (!(s1 <= RAISE && sp <= RAISE)) {
            float bm = max_skipping_nan(s + j0, len);
            if (bm > m) {
                zt *= exp((m - bm) * (double) inv_t);
                z1 *= exp(m - (double) bm);
                m = bm;
                raises++;
                student_block(s + j0, len, m, k, power, e + j0, next_s + (long) j0 * 4, ps_end, to_l2, &s1, &sp);
            }
        }
        block_max[j0 / BLOCK] = m;
        zt += s1;
        z1 += sp;
    }
    out[0] = m;
    out[1] = log(zt);
    out[2] = log(z1);
    out[3] = raises;
}

/*
 * SparseRows.squaredGradient: g = q cqw + c2 q^2 = e (a_b + b_b e) with q = e f_b, f_b =
 * exp((m_b - m)/T - log Z_T), a_b = cqw f_b and b_b = c1 exp(2 (m_b - m)/T - log Z_1) (the CE's
 * softmax(s) = (q Z_T)^2 / Z_1 at T = 2; 0 without a hard label), last block first.
 */
KERNEL void distillery_squared_gradient(float *g, const float *e, const float *block_max, int v, float m, float inv_t,
                                        float log_zt, float log_z1, float c1, float cqw) {
    for (int j0 = (v - 1) / BLOCK * BLOCK; j0 >= 0; j0 -= BLOCK) {
        int len = v - j0 < BLOCK ? v - j0 : BLOCK;
        double d = (block_max[j0 / BLOCK] - m) * (double) inv_t;
        float a = (float) (cqw * exp(d - log_zt)), b = c1 == 0.f ? 0.f : (float) (c1 * exp(2.0 * d - log_z1));
        __m512 A = _mm512_set1_ps(a), B = _mm512_set1_ps(b);
        int i = 0;
        for (; i + LANES <= len; i += LANES) {
            __m512 x = _mm512_loadu_ps(e + j0 + i);
            _mm512_storeu_ps(g + j0 + i, _mm512_mul_ps(x, _mm512_fmadd_ps(x, B, A)));
        }
        for (; i < len; i++) {
            float x = e[j0 + i];
            g[j0 + i] = x * fmaf(x, b, a);
        }
    }
}
