/*
 * The entry points of the native loss rows (distill_rows.inc, docs/KERNELS.md#the-native-row):
 * each takes the kind of machine to run on, as distillery_rows_kind() allows, and calls that
 * machine's build of the row.
 *
 * The Java side (kernels.cpu.distill.NativeRowPasses, through dev.distillery.bindings.DistilleryCpu)
 * calls a function once per row and keeps every other case, the sparse entries and every error
 * message: the C code returns a code and Java names the row and column.
 *
 * Built by cpu/build-native.sh (no -march: the kernel functions carry their own target attribute
 * and distillery_rows_kind() says which of them this CPU can run).
 */
#include "rows.h"

/* The interface version DistilleryCpu expects. */
int distillery_cpu_abi(void) { return 16; }

/*
 * ROWS_AVX512 (AVX-512 F/BW/DQ and FMA: the bf16 GEMM and the sampling exps run too), ROWS_AVX2
 * (AVX2 and FMA) or ROWS_NONE.
 */
int distillery_rows_kind(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("fma")) return ROWS_NONE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return ROWS_AVX512;
    return __builtin_cpu_supports("avx2") ? ROWS_AVX2 : ROWS_NONE;
}

int distillery_dense_forward_kl_row(int kind, const float *s, float *g, const void *t, int teacher_bf16, int v, float inv_t,
                                    int power, float c1, float cq, const char *next_s, long next_s_bytes, const char *next_t,
                                    long next_t_bytes, float *e_t, double *out) {
    return (kind == ROWS_AVX512 ? dense_forward_kl_row_avx512 : dense_forward_kl_row_avx2)(
            s, g, t, teacher_bf16, v, inv_t, power, c1, cq, next_s, next_s_bytes, next_t, next_t_bytes, e_t, out);
}

int distillery_dense_reverse_kl_row(int kind, const float *s, float *g, const void *t, int teacher_bf16, int v, float inv_t,
                                    int power, float c1, float cq, const char *next_s, long next_s_bytes, const char *next_t,
                                    long next_t_bytes, float *scratch, double *out) {
    return (kind == ROWS_AVX512 ? dense_reverse_kl_row_avx512 : dense_reverse_kl_row_avx2)(
            s, g, t, teacher_bf16, v, inv_t, power, c1, cq, next_s, next_s_bytes, next_t, next_t_bytes, scratch, out);
}

int distillery_dense_jsd_row(int kind, const float *s, float *g, const void *t, int teacher_bf16, int v, float inv_t, int power,
                             float beta, float c1, float cq, const char *next_s, long next_s_bytes, const char *next_t,
                             long next_t_bytes, float *scratch, double *out) {
    return (kind == ROWS_AVX512 ? dense_jsd_row_avx512 : dense_jsd_row_avx2)(
            s, g, t, teacher_bf16, v, inv_t, power, beta, c1, cq, next_s, next_s_bytes, next_t, next_t_bytes, scratch, out);
}

void distillery_student_pass(int kind, const float *s, int v, float inv_t, int power, float *e, float *block_max,
                             const char *next_s, long next_s_bytes, double *out) {
    (kind == ROWS_AVX512 ? student_pass_avx512 : student_pass_avx2)(s, v, inv_t, power, e, block_max, next_s, next_s_bytes, out);
}

void distillery_squared_gradient(int kind, float *g, const float *e, const float *block_max, int v, float m, float inv_t,
                                 float log_zt, float log_z1, float c1, float cqw) {
    (kind == ROWS_AVX512 ? squared_gradient_avx512 : squared_gradient_avx2)(g, e, block_max, v, m, inv_t, log_zt, log_z1, c1, cqw);
}
