/* The row kernels on AVX-512 (F, BW, DQ) with FMA: the loss rows and the sampling exps in 16 float or 8 double lanes. */
#define ROWS_VEC_AVX512
#include "distill_rows.inc"
#include "sample_rows.inc"
