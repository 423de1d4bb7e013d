/* The loss rows on AVX2 with FMA (AMD Zen 2 and 3, Intel client cores): distill_rows.inc in 8 lanes. */
#define DISTILL_VEC_AVX2
#include "distill_rows.inc"
