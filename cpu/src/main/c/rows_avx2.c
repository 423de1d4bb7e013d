/*
 * The row kernels on AVX2 with FMA (AMD Zen 2 and 3, Intel client cores): the loss rows and the
 * sampling exps in 8 float or 4 double lanes.
 */
#define ROWS_VEC_AVX2
#include "distill_rows.inc"
#include "sample_rows.inc"
