/*
 * The entry points of the exps of drawing a token (sample_rows.inc, docs/KERNELS.md#sampling-a-token):
 * each takes the kind of machine to run on, as distillery_rows_kind() allows.
 */
#include "rows.h"

double distillery_sample_exps(int kind, const float *x, int n, float max, double scale, double *p) {
    return (kind == ROWS_AVX512 ? sample_exps_avx512 : sample_exps_avx2)(x, n, max, scale, p);
}

double distillery_sample_block_sums(int kind, const float *x, int n, int block, double scale, double *sums, float *max) {
    return (kind == ROWS_AVX512 ? sample_block_sums_avx512 : sample_block_sums_avx2)(x, n, block, scale, sums, max);
}
