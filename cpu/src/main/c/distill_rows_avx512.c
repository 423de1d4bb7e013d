/* The loss rows on AVX-512 (F, BW, DQ) with FMA: distill_rows.inc in 16 lanes. */
#define DISTILL_VEC_AVX512
#include "distill_rows.inc"
