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
 *   distillery_dense_reverse_kl_row   DenseReverseKl.row, the rows at T = 2 or T = 1: DenseRow.passA +
 *                                     passes B and C
 *     rkl_pass_a_block                DenseReverseKl.passABlock
 *     rkl_pass_b, rkl_pass_c          DenseReverseKl.passB, DenseReverseKl.passC
 *   distillery_dense_jsd_row          DenseJsd.row, the rows at T = 2 or T = 1: DenseRow.passA with
 *                                     DenseForwardKl's block + passes B and C
 *     jsd_pass_b, jsd_pass_c          DenseJsd.passB, DenseJsd.passC / passCSquared
 *     dense_pass_a                    DenseRow.start + DenseRow.passA, for every dense row
 *   logv, logs                        VectorOps.log (vector and scalar)
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
static const float LOG_FLOOR = -0x1.5d58ap+6f;      /* DenseReverseKl.LOG_FLOOR, log(FLT_MIN) */
static const float SQRT_HALF = 0.707106781186547524f;   /* VectorOps.SQRT_HALF, L0..L8, LN2_HI, LN2_LO: its log */
static const float L0 = 7.0376836292e-2f, L1 = -1.1514610310e-1f, L2 = 1.1676998740e-1f, L3 = -1.2420140846e-1f,
                   L4 = 1.4249322787e-1f, L5 = -1.6668057665e-1f, L6 = 2.0000714765e-1f, L7 = -2.4999993993e-1f,
                   L8 = 3.3333331174e-1f;
static const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
static const float MIX_SCALE = 0x1p64f, LOG_MIX_SCALE = 0x1.62e43p+5f;   /* DenseJsd's: 2^64 and 64 ln 2 */

/* Return codes of distillery_dense_forward_kl_row (NativeRowPasses names them). */
enum { ROW_OK = 0, ROW_NOT_FINITE = 1, ROW_TEACHER_NAN = 2, ROW_TEACHER_MAX = 3 };

/* The interface version DistilleryCpu expects. */
int distillery_cpu_abi(void) { return 14; }

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
 * VectorOps.log: log x = e ln2 + log m, x = m 2^e, m in [sqrt(1/2), sqrt(2)), Cephes' polynomial,
 * operation for operation (the Horner steps and the two small corrections fused, as there): the
 * same bits lane for lane; -inf for 0 and subnormals, NaN for negatives and NaN, +inf for +inf.
 */
static inline KERNEL __m512 logv(__m512 x) {
    __m512i bits = _mm512_castps_si512(x);
    __m512 e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(126)));
    __m512 mant = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007FFFFF)),
                                                      _mm512_set1_epi32(0x3F000000)));   /* [0.5, 1) */
    __mmask16 small = _mm512_cmp_ps_mask(mant, _mm512_set1_ps(SQRT_HALF), _CMP_LT_OQ);
    e = _mm512_mask_sub_ps(e, small, e, _mm512_set1_ps(1.f));
    __m512 f = _mm512_sub_ps(_mm512_mask_add_ps(mant, small, mant, mant), _mm512_set1_ps(1.f));
    __m512 z = _mm512_mul_ps(f, f);
    __m512 y = _mm512_fmadd_ps(f, _mm512_set1_ps(L0), _mm512_set1_ps(L1));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(L2));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(L3));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(L4));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(L5));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(L6));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(L7));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(L8));
    y = _mm512_mul_ps(_mm512_mul_ps(y, f), z);
    y = _mm512_fmadd_ps(e, _mm512_set1_ps(LN2_LO), y);
    y = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), y);
    __m512 r = _mm512_add_ps(_mm512_add_ps(f, y), _mm512_mul_ps(e, _mm512_set1_ps(LN2_HI)));
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(0x1p-126f), _CMP_LT_OQ);
    __mmask16 inf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ);
    __mmask16 bad = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ) | _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    r = _mm512_mask_mov_ps(r, tiny, _mm512_set1_ps(-INFINITY));
    r = _mm512_mask_mov_ps(r, inf, _mm512_set1_ps(INFINITY));
    return _mm512_mask_mov_ps(r, bad, _mm512_set1_ps(NAN));
}

/* The scalar twin, VectorOps.log(float). */
static inline KERNEL float logs(float x) {
    if (x != x || x < 0.f) return NAN;
    if (x < 0x1p-126f) return -INFINITY;
    if (x == INFINITY) return x;
    uint32_t u = bits(x);
    float e = (float) (int32_t) ((u >> 23) - 126);
    float mant = from_bits((u & 0x007FFFFFu) | 0x3F000000u);
    if (mant < SQRT_HALF) {
        e = e - 1.f;
        mant = mant + mant;
    }
    float f = mant - 1.f, z = f * f;
    float y = fmaf(f, L0, L1);
    y = fmaf(y, f, L2);
    y = fmaf(y, f, L3);
    y = fmaf(y, f, L4);
    y = fmaf(y, f, L5);
    y = fmaf(y, f, L6);
    y = fmaf(y, f, L7);
    y = fmaf(y, f, L8);
    y = y * f * z;
    y = fmaf(e, LN2_LO, y);
    y = fmaf(z, -0.5f, y);
    return f + y + e * LN2_HI;
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

/* 16 bf16 values at h as fp32 in one permute: word i to the high half of lane i, the low half zeroed (TeacherBlocks.widen). */
static inline __attribute__((always_inline)) KERNEL __m512 widen_bf16(const uint16_t *h) {
    const __m512i WIDEN = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8,
                                           7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, WIDEN,
                                                              _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) h))));
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

/* The next row's line at a (never past end), into L2 (to_l2) or L1. */
static inline __attribute__((always_inline)) KERNEL void prefetch_next(const char *a, const char *end, int to_l2) {
    if (to_l2) {
        _mm_prefetch(a < end ? a : end, _MM_HINT_T1);
    } else {
        _mm_prefetch(a < end ? a : end, _MM_HINT_T0);
    }
}

/* 16 teacher logits from element i, as fp32 (bf16 widened in registers, or fp32 as stored). */
static inline __attribute__((always_inline)) KERNEL __m512 teacher16(const void *tv, int bf, int i) {
    return bf ? widen_bf16((const uint16_t *) tv + i) : _mm512_loadu_ps((const float *) tv + i);
}

/*
 * One block of a dense row's pass A (DenseRow.PassABlock): s, len columns from the block's start,
 * against the maxima ms and mt (k = log2(e)/T), its rows written from row1 and row2, sums = {sum
 * e_s, sum e_s^2, sum e_t, the divergence's fourth sum or 0}; the next row's lines asked for from
 * ps / pt, never past ps_end / pt_end, a line of s and half a line of t per 16 columns.
 */
typedef void (*pass_a_block_fn)(const float *s, int len, float ms, float k, float inv_t, float *row1, float *s_save,
                                const void *t, float mt, float *row2, const char *ps, const char *ps_end, const char *pt,
                                const char *pt_end, float *sums);

/*
 * DenseForwardKl.passABlock: s copied to s_save, e_s = 2^((s - ms) k) to es_out (which may be s: each
 * vector is read before its e_s is stored), e_t = 2^((t - mt) k) to et_out, sums {sum e_s, sum e_s^2,
 * sum e_t, sum e_t ((t - mt) - (s - ms))}, terms whose e_t underflows left out of the fourth.
 */
static inline __attribute__((always_inline)) KERNEL void pass_a_block_t(const float *s, int len, float ms, float k,
        float *es_out, float *s_save, const void *tv, int bf, float mt, float *et_out, const char *ps, const char *ps_end,
        const char *pt, const char *pt_end, int pt_step, int to_l2, float *sums) {
    __m512 zs = _mm512_setzero_ps(), zsq = zs, zt = zs, acc = zs;
    __m512 MS = _mm512_set1_ps(ms), MT = _mm512_set1_ps(mt);
    float lo = EXP2_LO / k;
    __m512 LO = _mm512_set1_ps(lo);
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        prefetch_next(ps + (long) i * 4, ps_end, to_l2);
        prefetch_next(pt + (long) i * pt_step, pt_end, to_l2);
        __m512 sv = _mm512_loadu_ps(s + i);
        _mm512_storeu_ps(s_save + i, sv);
        __m512 ds = _mm512_sub_ps(sv, MS);
        __m512 dt = _mm512_sub_ps(teacher16(tv, bf, i), MT);
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
    const uint16_t *th = (const uint16_t *) tv;
    const float *tf = (const float *) tv;
    float szs = sum_lanes(zs), szsq = sum_lanes(zsq), szt = sum_lanes(zt), sacc = sum_lanes(acc);
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

/*
 * DenseReverseKl.passABlock: e_s = 2^((s - ms) k) to es_out, (t - mt)/T to dt_out (natural units,
 * for pass B's log p), sums {sum e_s, sum e_s^2, sum e_t, 0} with e_t = 2^(((t - mt)/T) log2(e)).
 */
static inline __attribute__((always_inline)) KERNEL void rkl_pass_a_block_t(const float *s, int len, float ms, float k,
        float inv_t, float *es_out, const void *tv, int bf, float mt, float *dt_out, const char *ps, const char *ps_end,
        const char *pt, const char *pt_end, int pt_step, int to_l2, float *sums) {
    __m512 zs = _mm512_setzero_ps(), zsq = zs, zt = zs;
    __m512 MS = _mm512_set1_ps(ms), MT = _mm512_set1_ps(mt), INVT = _mm512_set1_ps(inv_t);
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        prefetch_next(ps + (long) i * 4, ps_end, to_l2);
        prefetch_next(pt + (long) i * pt_step, pt_end, to_l2);
        __m512 es = exp2v(_mm512_sub_ps(_mm512_loadu_ps(s + i), MS), k);
        __m512 dt = _mm512_mul_ps(_mm512_sub_ps(teacher16(tv, bf, i), MT), INVT);
        zs = _mm512_add_ps(zs, es);
        zsq = _mm512_fmadd_ps(es, es, zsq);
        zt = _mm512_add_ps(zt, exp2v(dt, LOG2E));
        _mm512_storeu_ps(es_out + i, es);
        _mm512_storeu_ps(dt_out + i, dt);
    }
    const uint16_t *th = (const uint16_t *) tv;
    const float *tf = (const float *) tv;
    float szs = sum_lanes(zs), szsq = sum_lanes(zsq), szt = sum_lanes(zt);
    for (; i < len; i++) {
        float es = exp2s(s[i] - ms, k), dt = ((bf ? bf16(th[i]) : tf[i]) - mt) * inv_t;
        szs += es;
        szsq = fmaf(es, es, szsq);
        szt += exp2s(dt, LOG2E);
        es_out[i] = es;
        dt_out[i] = dt;
    }
    sums[0] = szs;
    sums[1] = szsq;
    sums[2] = szt;
    sums[3] = 0.f;
}

/* The blocks specialised by teacher type (bf16 or fp32: its step in bytes) and prefetch level. */
#define PASS_A_BLOCK(name, bf, pt_step, to_l2)                                                                        \
    static KERNEL void name(const float *s, int len, float ms, float k, float inv_t, float *row1, float *s_save,      \
                            const void *t, float mt, float *row2, const char *ps, const char *ps_end, const char *pt, \
                            const char *pt_end, float *sums) {                                                        \
        (void) inv_t;                                                                                                 \
        pass_a_block_t(s, len, ms, k, row1, s_save, t, bf, mt, row2, ps, ps_end, pt, pt_end, pt_step, to_l2, sums);   \
    }
#define RKL_PASS_A_BLOCK(name, bf, pt_step, to_l2)                                                                    \
    static KERNEL void name(const float *s, int len, float ms, float k, float inv_t, float *row1, float *s_save,      \
                            const void *t, float mt, float *row2, const char *ps, const char *ps_end, const char *pt, \
                            const char *pt_end, float *sums) {                                                        \
        (void) s_save;                                                                                                \
        rkl_pass_a_block_t(s, len, ms, k, inv_t, row1, t, bf, mt, row2, ps, ps_end, pt, pt_end, pt_step, to_l2, sums); \
    }
PASS_A_BLOCK(pass_a_block_bf16, 1, 2, 0)
PASS_A_BLOCK(pass_a_block_f32, 0, 4, 0)
PASS_A_BLOCK(pass_a_block_bf16_l2, 1, 2, 1)
PASS_A_BLOCK(pass_a_block_f32_l2, 0, 4, 1)
RKL_PASS_A_BLOCK(rkl_pass_a_block_bf16, 1, 2, 0)
RKL_PASS_A_BLOCK(rkl_pass_a_block_f32, 0, 4, 0)
RKL_PASS_A_BLOCK(rkl_pass_a_block_bf16_l2, 1, 2, 1)
RKL_PASS_A_BLOCK(rkl_pass_a_block_f32_l2, 0, 4, 1)

/* Which pass A a dense row runs: forward KL's (e_s and e_t: JSD's too, as in Java) or reverse KL's. */
enum { FORWARD_KL = 0, REVERSE_KL = 1 };

/*
 * DenseRow.start and DenseRow.passA for a row as wide as its teacher: the lazy maxima of the last
 * block (the row's where that has none finite), then pass A last block first; a block whose sums
 * pass RAISE raises the maxima to its own, what is done is rescaled (row1, e_s, by fs; row2 by
 * ft, or lowered by dmt/T where it holds (t - m_t)/T) and the block runs again. Forward KL's
 * block keeps each block's logits in sb, where a raise reads them and from where it puts them
 * back, since row1 may be s (the forward-KL row passes g; JSD a row of its own, where it costs a
 * store). z = {Z_s, Z_1 (Z_s at power 1, sum e_s^2 at 2), Z_t, the fourth
 * sum}, m = {m_s, m_t}; out[2] = raises. Returns ROW_OK, ROW_NOT_FINITE (nothing written),
 * ROW_TEACHER_MAX (the maximum in out[3]) or ROW_TEACHER_NAN (Z_t is NaN).
 */
static KERNEL int dense_pass_a(int divergence, const float *s, const void *t, int bf, int v, float inv_t, int power, float *row1,
                               float *row2, const char *next_s, long next_s_bytes, const char *next_t, long next_t_bytes,
                               double *z, float *m, double *out) {
    int first = (v - 1) / BLOCK * BLOCK, nb = (v + BLOCK - 1) / BLOCK;
    float ms = max_skipping_nan(s + first, v - first);
    if (!isfinite(ms)) ms = max_skipping_nan(s, v);
    float mt = teacher_max(t, bf, first, v - first);
    if (!isfinite(mt)) mt = teacher_max(t, bf, 0, v);
    if (!isfinite(ms) || !isfinite(mt)) return ROW_NOT_FINITE;

    const int to_l2 = next_s_bytes <= ROW_PREFETCH_L2_BYTES, keeps_s = divergence == FORWARD_KL;
    static const pass_a_block_fn blocks[2][2][2] = {   /* [divergence][bf16][to_l2] */
        {{pass_a_block_f32, pass_a_block_f32_l2}, {pass_a_block_bf16, pass_a_block_bf16_l2}},
        {{rkl_pass_a_block_f32, rkl_pass_a_block_f32_l2}, {rkl_pass_a_block_bf16, rkl_pass_a_block_bf16_l2}}};
    const pass_a_block_fn block = blocks[divergence][bf != 0][to_l2];
    float k = inv_t * LOG2E;
    float sb[BLOCK] __attribute__((aligned(64)));   /* the block's logits, where row1 may be s */
    float sums[4];
    double zs = 0, zsq = 0, zt = 0, acc = 0, raises = 0;
    int pt_step = bf ? 2 : 4;
    const char *ps_end = next_s + next_s_bytes - 1, *pt_end = next_t + next_t_bytes - 1;
    for (int bi = 0; bi < nb; bi++) {
        int j0 = (nb - 1 - bi) * BLOCK, len = v - j0 < BLOCK ? v - j0 : BLOCK;
        const char *ps = next_s + (long) bi * BLOCK * 4, *pt = next_t + (long) bi * BLOCK * pt_step;
        const void *tj = (const char *) t + (long) j0 * pt_step;
        block(s + j0, len, ms, k, inv_t, row1 + j0, sb, tj, mt, row2 + j0, ps, ps_end, pt, pt_end, sums);
        if (sums[0] > RAISE || sums[2] > RAISE) {
            /* raise the maxima to the block's, rescale what is done, run again */
            float ms2 = greater(ms, max_skipping_nan(keeps_s ? sb : s + j0, len));
            float mt2 = greater(mt, teacher_max(t, bf, j0, len));
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
            float ffs = (float) fs, fft = (float) ft, fdmt = (float) dmt;
            for (int j = j0 + len; j < v; j++) {
                row1[j] *= ffs;
                if (divergence == REVERSE_KL) {
                    row2[j] -= fdmt * inv_t;
                } else {
                    row2[j] *= fft;
                }
            }
            raises++;
            ms = ms2;
            mt = mt2;
            if (keeps_s) memcpy(row1 + j0, sb, (size_t) len * 4);
            block(s + j0, len, ms, k, inv_t, row1 + j0, sb, tj, mt, row2 + j0, ps, ps_end, pt, pt_end, sums);
        }
        zs += sums[0];
        zsq += sums[1];
        zt += sums[2];
        acc += sums[3];
    }
    if (isnan(zt)) return ROW_TEACHER_NAN;
    z[0] = zs;
    z[1] = power == 1 ? zs : zsq;
    z[2] = zt;
    z[3] = acc;
    m[0] = ms;
    m[1] = mt;
    out[2] = raises;
    return ROW_OK;
}

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
    double z[4];
    float m[2];
    int code = dense_pass_a(FORWARD_KL, s, t, teacher_bf16, v, inv_t, power, g, e_t, next_s, next_s_bytes, next_t, next_t_bytes,
                            z, m, out);
    if (code != ROW_OK) return code;
    double zs = z[0], z1 = z[1], zt = z[2];
    double kl = z[3] * inv_t / zt - log(zt) + log(zs);
    /* pass B: g = e_s (c1 e_s / Z_1 + cq / Z_s) - cq e_t / Z_t */
    pass_b_in_g(g, e_t, v, (float) (cq / zs), (float) (cq / zt), (float) (c1 / z1));
    out[0] = m[0] + log(z1);
    out[1] = kl;
    return ROW_OK;
}

/* DenseReverseKl.floor: max(x, LOG_FLOOR) by a compare and a blend; NaN stays NaN. */
static inline __attribute__((always_inline)) KERNEL __m512 log_floor(__m512 x) {
    return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, _mm512_set1_ps(LOG_FLOOR), _CMP_LT_OQ), _mm512_set1_ps(LOG_FLOOR));
}

/*
 * DenseReverseKl.passB over one block, with q = e_s fq, lq = (s - ms)/T - lzs and lp = max((t - mt)/T
 * - lzt, LOG_FLOOR): returns sum q (lq - lp), terms with q <= 0 left out, and writes l = lq - lp over
 * the row of (t - mt)/T, for pass C.
 */
static KERNEL float rkl_pass_b(const float *s, int len, float ms, float inv_t, float lzs, float lzt, const float *e_s, float fq,
                               float *dt) {
    __m512 MS = _mm512_set1_ps(ms), INVT = _mm512_set1_ps(inv_t), LZS = _mm512_set1_ps(lzs), LZT = _mm512_set1_ps(lzt),
           FQ = _mm512_set1_ps(fq), acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        __m512 lq = _mm512_sub_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(s + i), MS), INVT), LZS);
        __m512 l = _mm512_sub_ps(lq, log_floor(_mm512_sub_ps(_mm512_loadu_ps(dt + i), LZT)));
        __m512 q = _mm512_mul_ps(_mm512_loadu_ps(e_s + i), FQ);
        __mmask16 kept = _mm512_cmp_ps_mask(q, _mm512_setzero_ps(), _CMP_NLE_UQ);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(kept, _mm512_mul_ps(q, l)));
        _mm512_storeu_ps(dt + i, l);
    }
    float sum = sum_lanes(acc);
    for (; i < len; i++) {
        float q = e_s[i] * fq, lp = dt[i] - lzt;
        float l = ((s[i] - ms) * inv_t - lzs) - (lp < LOG_FLOOR ? LOG_FLOOR : lp);
        if (q > 0.f) sum += q * l;
        dt[i] = l;
    }
    return sum;
}

/*
 * DenseReverseKl.passC over one block: g = c1 sb + cq q (l - rkl), q = e_s fq, l from pass B, sb =
 * e_s^power sbz (0 where c1 is 0), 0 for the divergence's part where q <= 0. Reads the two rows
 * only, so g may be s.
 */
static KERNEL void rkl_pass_c(float *g, int len, const float *e_s, float fq, const float *l, float rkl, float cq, float c1,
                              int power, float sbz) {
    __m512 FQ = _mm512_set1_ps(fq), RKL = _mm512_set1_ps(rkl), CQ = _mm512_set1_ps(cq), C1 = _mm512_set1_ps(c1),
           SBZ = _mm512_set1_ps(sbz);
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        __m512 e = _mm512_loadu_ps(e_s + i), q = _mm512_mul_ps(e, FQ);
        __mmask16 kept = _mm512_cmp_ps_mask(q, _mm512_setzero_ps(), _CMP_NLE_UQ);
        __m512 gq = _mm512_maskz_mov_ps(kept, _mm512_mul_ps(_mm512_mul_ps(q, _mm512_sub_ps(_mm512_loadu_ps(l + i), RKL)), CQ));
        __m512 sb = c1 == 0.f ? _mm512_setzero_ps() : _mm512_mul_ps(power == 2 ? _mm512_mul_ps(e, e) : e, SBZ);
        _mm512_storeu_ps(g + i, _mm512_add_ps(_mm512_mul_ps(sb, C1), gq));
    }
    for (; i < len; i++) {
        float q = e_s[i] * fq;
        float sb = c1 == 0.f ? 0.f : (power == 2 ? e_s[i] * e_s[i] : e_s[i]) * sbz;
        g[i] = sb * c1 + (q > 0.f ? q * (l[i] - rkl) * cq : 0.f);
    }
}

/*
 * DenseReverseKl.row for one row, the arguments of distillery_dense_forward_kl_row but for the scratch:
 * two rows of v floats (e_s, then (t - m_t)/T, which pass B overwrites with lq - lp), since pass B
 * reads s again for log q and g may be s. Passes: A (2 exps an element), B (the reverse KL, a sum)
 * first block first, C (the gradient, from the two rows) last block first, with no exp and no
 * teacher read. out = {m_s + log Z_1, RKL, raises, the teacher
 * maximum when ROW_TEACHER_MAX}; the codes as there.
 */
KERNEL int distillery_dense_reverse_kl_row(const float *s, float *g, const void *t, int teacher_bf16, int v, float inv_t,
                                           int power, float c1, float cq, const char *next_s, long next_s_bytes,
                                           const char *next_t, long next_t_bytes, float *scratch, double *out) {
    float *e_s = scratch, *dt = scratch + v;
    double z[4];
    float m[2];
    int code = dense_pass_a(REVERSE_KL, s, t, teacher_bf16, v, inv_t, power, e_s, dt, next_s, next_s_bytes, next_t, next_t_bytes,
                            z, m, out);
    if (code != ROW_OK) return code;
    double zs = z[0], z1 = z[1], zt = z[2];
    float ms = m[0], lzs = (float) log(zs), lzt = (float) log(zt), fq = (float) (1 / zs), sbz = (float) (1 / z1);
    double rkl = 0;
    for (int j0 = 0; j0 < v; j0 += BLOCK) {
        int len = v - j0 < BLOCK ? v - j0 : BLOCK;
        rkl += rkl_pass_b(s + j0, len, ms, inv_t, lzs, lzt, e_s + j0, fq, dt + j0);
    }
    for (int j0 = (v - 1) / BLOCK * BLOCK; j0 >= 0; j0 -= BLOCK) {
        int len = v - j0 < BLOCK ? v - j0 : BLOCK;
        rkl_pass_c(g + j0, len, e_s + j0, fq, dt + j0, (float) rkl, cq, c1, power, sbz);
    }
    out[0] = ms + log(z1);
    out[1] = rkl;
    return ROW_OK;
}

/*
 * DenseJsd.passB over one block, q = e_s fs, p = e_t ft, lq = (s - ms)/T - lzs, lp = (t - mt)/T - lzt,
 * lm = log m, m mixed at 2^64 its size (MIX_SCALE: e_s fs can be subnormal, which log takes for 0):
 * sums = {sum beta p (lp - lm) + sum q g_q, sum q g_q}, g_q = (1 - beta)(lq - lm), terms with p = 0 or
 * q = 0 left out; g_q (0 where q = 0) written over e_t.
 */
static KERNEL void jsd_pass_b(const float *s, int len, float ms, float inv_t, float lzs, const void *tv, int bf, float mt,
                              float lzt, const float *e_s, float *e_t, float fs, float ft, float beta, float *sums) {
    float ob = 1.f - beta, cp = beta * ft * MIX_SCALE, cqm = ob * fs * MIX_SCALE;
    __m512 MS = _mm512_set1_ps(ms), MT = _mm512_set1_ps(mt), INVT = _mm512_set1_ps(inv_t), LZS = _mm512_set1_ps(lzs),
           LZT = _mm512_set1_ps(lzt), FS = _mm512_set1_ps(fs), FT = _mm512_set1_ps(ft), OB = _mm512_set1_ps(ob),
           BETA = _mm512_set1_ps(beta), CP = _mm512_set1_ps(cp), CQM = _mm512_set1_ps(cqm), ZERO = _mm512_setzero_ps();
    __m512 acc_v = ZERO, acc_s = ZERO;
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        __m512 es = _mm512_loadu_ps(e_s + i), et = _mm512_loadu_ps(e_t + i);
        __m512 lm = _mm512_sub_ps(logv(_mm512_fmadd_ps(es, CQM, _mm512_mul_ps(et, CP))), _mm512_set1_ps(LOG_MIX_SCALE));
        __m512 lq = _mm512_sub_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(s + i), MS), INVT), LZS);
        __m512 lp = _mm512_sub_ps(_mm512_mul_ps(_mm512_sub_ps(teacher16(tv, bf, i), MT), INVT), LZT);
        __m512 q = _mm512_mul_ps(es, FS), p = _mm512_mul_ps(et, FT);
        __m512 gq = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(q, ZERO, _CMP_NLE_UQ), _mm512_mul_ps(_mm512_sub_ps(lq, lm), OB));
        acc_s = _mm512_fmadd_ps(q, gq, acc_s);
        acc_v = _mm512_add_ps(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(p, ZERO, _CMP_NLE_UQ),
                                                  _mm512_mul_ps(_mm512_mul_ps(p, BETA), _mm512_sub_ps(lp, lm))), acc_v);
        _mm512_storeu_ps(e_t + i, gq);
    }
    const uint16_t *th = (const uint16_t *) tv;
    const float *tf = (const float *) tv;
    float sv = sum_lanes(acc_v), ss = sum_lanes(acc_s);
    for (; i < len; i++) {
        float es = e_s[i], et = e_t[i];
        float lm = logs(fmaf(es, cqm, et * cp)) - LOG_MIX_SCALE;
        float lq = (s[i] - ms) * inv_t - lzs, lp = ((bf ? bf16(th[i]) : tf[i]) - mt) * inv_t - lzt;
        float q = es * fs, p = et * ft;
        float gq = q > 0.f ? (lq - lm) * ob : 0.f;
        ss = fmaf(q, gq, ss);
        if (p > 0.f) sv += p * beta * (lp - lm);
        e_t[i] = gq;
    }
    sums[0] = sv + ss;
    sums[1] = ss;
}

/*
 * DenseJsd.passCSquared (power 2, or no hard label: g = e_s (c1z e_s + a (g_q - S))) and passC
 * (power 1 with one: g = e_s a (g_q - S) + c1 e_s sbz) over one block, g_q where pass B left it.
 */
static KERNEL void jsd_pass_c(float *g, const float *e_s, const float *gq, int len, float a, float sq, int squared, float c1z,
                              float c1, float sbz) {
    __m512 A = _mm512_set1_ps(a), SQ = _mm512_set1_ps(sq), C1Z = _mm512_set1_ps(c1z), C1 = _mm512_set1_ps(c1),
           SBZ = _mm512_set1_ps(sbz);
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        __m512 e = _mm512_loadu_ps(e_s + i), w = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(gq + i), SQ), A);
        _mm512_storeu_ps(g + i, squared ? _mm512_mul_ps(_mm512_fmadd_ps(e, C1Z, w), e)
                                        : _mm512_fmadd_ps(e, w, _mm512_mul_ps(_mm512_mul_ps(e, SBZ), C1)));
    }
    for (; i < len; i++) {
        float e = e_s[i], w = (gq[i] - sq) * a;
        g[i] = squared ? fmaf(e, c1z, w) * e : fmaf(e, w, e * sbz * c1);
    }
}

/*
 * DenseJsd.row for one row at T = 2 or T = 1, the arguments of distillery_dense_forward_kl_row with
 * beta, and for the scratch two rows of v floats (e_s, then e_t, which pass B overwrites with
 * g_q). Pass A is forward KL's (e_s to its row, not over g: pass B reads s), pass B (the value and
 * S, one log an element) first block first, pass C (the gradient, from the rows only) last block
 * first. out = {m_s + log Z_1, JSD, raises, the teacher maximum when ROW_TEACHER_MAX}.
 */
KERNEL int distillery_dense_jsd_row(const float *s, float *g, const void *t, int teacher_bf16, int v, float inv_t, int power,
                                    float beta, float c1, float cq, const char *next_s, long next_s_bytes, const char *next_t,
                                    long next_t_bytes, float *scratch, double *out) {
    float *e_s = scratch, *e_t = scratch + v;
    double z[4];
    float m[2];
    int code = dense_pass_a(FORWARD_KL, s, t, teacher_bf16, v, inv_t, power, e_s, e_t, next_s, next_s_bytes, next_t, next_t_bytes,
                            z, m, out);
    if (code != ROW_OK) return code;
    double zs = z[0], z1 = z[1], zt = z[2];
    float ms = m[0], mt = m[1], lzs = (float) log(zs), lzt = (float) log(zt), fs = (float) (1 / zs), ft = (float) (1 / zt);
    int pt_step = teacher_bf16 ? 2 : 4;
    double value = 0, sum_qg = 0;
    for (int j0 = 0; j0 < v; j0 += BLOCK) {
        int len = v - j0 < BLOCK ? v - j0 : BLOCK;
        float sums[2];
        jsd_pass_b(s + j0, len, ms, inv_t, lzs, (const char *) t + (long) j0 * pt_step, teacher_bf16, mt, lzt, e_s + j0, e_t + j0,
                   fs, ft, beta, sums);
        value += sums[0];
        sum_qg += sums[1];
    }
    float a = cq * fs, sq = (float) sum_qg, c1z = (float) (c1 / z1), sbz = (float) (1 / z1);
    int squared = c1 == 0.f || power == 2;
    for (int j0 = (v - 1) / BLOCK * BLOCK; j0 >= 0; j0 -= BLOCK) {
        int len = v - j0 < BLOCK ? v - j0 : BLOCK;
        jsd_pass_c(g + j0, e_s + j0, e_t + j0, len, a, sq, squared, c1z, c1, sbz);
    }
    out[0] = ms + log(z1);
    out[1] = value;
    return ROW_OK;
}

/*
 * StudentPass.block: one block of the student pass, e = 2^((s - m) k) to e, *s1 = sum e and
 * *sp = sum e^power (power 1 or 2: the CE's normalizer at T = 1 or 2), prefetching the next
 * row's line per 16 columns, into L2 (to_l2) or L1.
 */
static inline __attribute__((always_inline)) KERNEL void student_block(const float *s, int len, float m, float k,
        int power, float *e, float *s_save, const char *ps, const char *ps_end, int to_l2, float *s1, float *sp) {
    __m512 acc = _mm512_setzero_ps(), accp = acc, M = _mm512_set1_ps(m);
    int i = 0;
    for (; i + LANES <= len; i += LANES) {
        const char *a = ps + (long) i * 4;
        if (to_l2) {
            _mm_prefetch(a < ps_end ? a : ps_end, _MM_HINT_T1);
        } else {
            _mm_prefetch(a < ps_end ? a : ps_end, _MM_HINT_T0);
        }
        __m512 sv = _mm512_loadu_ps(s + i);
        _mm512_storeu_ps(s_save + i, sv);
        __m512 x = exp2v(_mm512_sub_ps(sv, M), k);
        _mm512_storeu_ps(e + i, x);
        acc = _mm512_add_ps(acc, x);
        accp = power == 2 ? _mm512_fmadd_ps(x, x, accp) : _mm512_add_ps(accp, x);
    }
    float a1 = sum_lanes(acc), ap = sum_lanes(accp);
    for (; i < len; i++) {
        s_save[i] = s[i];
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
 * maximum each block's e is shifted by goes to block_max. out = {m, log Z_T, log Z_1, raises}. e
 * may be s (the gradient row in place, which the squared gradient then forms over e): each block's
 * logits are kept in sb, where a raise reads them and from where it puts them back.
 */
KERNEL void distillery_student_pass(const float *s, int v, float inv_t, int power, float *e, float *block_max,
                                    const char *next_s, long next_s_bytes, double *out) {
    const int to_l2 = next_s_bytes <= ROW_PREFETCH_L2_BYTES;
    float k = inv_t * LOG2E;
    float m = max_skipping_nan(s, v < BLOCK ? v : BLOCK);
    if (!isfinite(m)) m = max_skipping_nan(s, v);
    double zt = 0, z1 = 0;
    int raises = 0;
    float sb[BLOCK] __attribute__((aligned(64)));
    const char *ps_end = next_s + next_s_bytes - 1;
    for (int j0 = 0; j0 < v; j0 += BLOCK) {
        int len = v - j0 < BLOCK ? v - j0 : BLOCK;
        float s1, sp;
        student_block(s + j0, len, m, k, power, e + j0, sb, next_s + (long) j0 * 4, ps_end, to_l2, &s1, &sp);
        if (!(s1 <= RAISE && sp <= RAISE)) {
            float bm = max_skipping_nan(sb, len);
            if (bm > m) {
                zt *= exp((m - bm) * (double) inv_t);
                z1 *= exp(m - (double) bm);
                m = bm;
                raises++;
                memcpy(e + j0, sb, (size_t) len * 4);
                student_block(s + j0, len, m, k, power, e + j0, sb, next_s + (long) j0 * 4, ps_end, to_l2, &s1, &sp);
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
