/*
 * What the row kernels' machines (rows_avx512.c, rows_avx2.c, both built from distill_rows.inc
 * and sample_rows.inc) share with each other and with the entry points (distill_cpu.c,
 * sample_rows.c): the loss rows' constants shared with the Java rows, their return codes, the
 * machines' kinds and each machine's functions.
 */
#ifndef DISTILLERY_ROWS_H
#define DISTILLERY_ROWS_H

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

/* distillery_rows_kind()'s answers; DistilleryCpu.ROWS_* are their twins. */
enum { ROWS_NONE = 0, ROWS_AVX2 = 1, ROWS_AVX512 = 2 };

/*
 * One machine's rows, the arguments of distill_cpu.c's and sample_rows.c's entries of the same
 * names but the kind; not exported.
 */
#define HIDDEN __attribute__((visibility("hidden")))
#define ROWS_ENTRIES(suffix)                                                                                         \
    HIDDEN int dense_forward_kl_row_##suffix(const float *s, float *g, const void *t, int teacher_bf16, int v,       \
            float inv_t, int power, float c1, float cq, const char *next_s, long next_s_bytes, const char *next_t,   \
            long next_t_bytes, float *e_t, double *out);                                                             \
    HIDDEN int dense_reverse_kl_row_##suffix(const float *s, float *g, const void *t, int teacher_bf16, int v,       \
            float inv_t, int power, float c1, float cq, const char *next_s, long next_s_bytes, const char *next_t,   \
            long next_t_bytes, float *scratch, double *out);                                                         \
    HIDDEN int dense_jsd_row_##suffix(const float *s, float *g, const void *t, int teacher_bf16, int v, float inv_t, \
            int power, float beta, float c1, float cq, const char *next_s, long next_s_bytes, const char *next_t,    \
            long next_t_bytes, float *scratch, double *out);                                                         \
    HIDDEN void student_pass_##suffix(const float *s, int v, float inv_t, int power, float *e, float *block_max,     \
            const char *next_s, long next_s_bytes, double *out);                                                     \
    HIDDEN void squared_gradient_##suffix(float *g, const float *e, const float *block_max, int v, float m,          \
            float inv_t, float log_zt, float log_z1, float c1, float cqw);                                           \
    HIDDEN double sample_exps_##suffix(const float *x, int n, float max, double scale, double *p);                   \
    HIDDEN double sample_block_sums_##suffix(const float *x, int n, int block, double scale, double *sums,           \
            float *max);
ROWS_ENTRIES(avx512)
ROWS_ENTRIES(avx2)

#endif
