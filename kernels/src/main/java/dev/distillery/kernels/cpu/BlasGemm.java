package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Locale;
import java.util.Set;

import dev.distillery.bindings.OpenBlasLibrary;
import dev.distillery.bindings.cblas.Cblas;

/**
 * SGEMM through the jextract-generated CBLAS bindings (SGEMV for a single row or column of C). Constructed only after
 * {@link OpenBlasLibrary#probe()} loaded a library, so {@code Cblas}' symbol lookup succeeds.
 */
final class BlasGemm implements Gemm {

    /**
     * Where OpenBLAS' sgemm has small-matrix kernels, a single row or column of C goes to sgemv
     * when the matrix it multiplies holds this many elements (512 KB) or more: below that those
     * kernels skip the packing, and sgemv's own set-up costs more than it saves (attention's
     * per-head products while decoding).
     */
    static final long GEMV_MIN_ELEMENTS = 1 << 17;

    /**
     * The OpenBLAS cores (as {@code openblas_get_corename} names them, in lower case) whose sgemm
     * has small-matrix kernels: SkylakeX's, which Cooperlake and SapphireRapids use too. Every other
     * core's sgemm packs the whole matrix operand of a one-row product before it multiplies, and
     * sgemv ran such products faster at every size (docs/PERFORMANCE.md, generation).
     */
    static final Set<String> SMALL_MATRIX_CORES = Set.of("skylakex", "cooperlake", "sapphirerapids");

    private final String description;
    private final long gemvMinElements;

    BlasGemm() {
        OpenBlasLibrary.Probe probe = OpenBlasLibrary.require();
        // Each call runs on its caller's thread; CpuKernels does the splitting (see Gemm).
        Cblas.openblas_set_num_threads(1);
        String core = coreName();
        this.description = "OpenBLAS " + core + " (" + probe.source() + ")";
        this.gemvMinElements = gemvMinElements(core);
    }

    /** The loaded OpenBLAS' name for the kernels it picked for this CPU ("Zen", "SkylakeX", ...). */
    static String coreName() {
        return Cblas.openblas_get_corename().reinterpret(64).getString(0);
    }

    /**
     * The size of matrix (elements) from which a single row or column of C goes to sgemv on this
     * OpenBLAS core: {@link #GEMV_MIN_ELEMENTS} where its sgemm has small-matrix kernels, every
     * size elsewhere.
     */
    static long gemvMinElements(String core) {
        return SMALL_MATRIX_CORES.contains(core.trim().toLowerCase(Locale.ROOT)) ? GEMV_MIN_ELEMENTS : 1;
    }

    @Override
    public String describe() {
        return description;
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k,
                      float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
                      float beta, MemorySegment c, int ldc) {
        if (m == 0 || n == 0) return;
        if ((m == 1 || n == 1) && k > 0 && (long) k * (m == 1 ? n : m) >= gemvMinElements) {
            gemv(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        Cblas.cblas_sgemm(Cblas.CblasRowMajor(),
                transA ? Cblas.CblasTrans() : Cblas.CblasNoTrans(),
                transB ? Cblas.CblasTrans() : Cblas.CblasNoTrans(),
                m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    /**
     * A product with one row or one column of C, as a matrix-vector product: sgemm packs the whole
     * matrix operand before it multiplies (a decoded token's LM head: all 50,257 × d weights copied
     * every token), where sgemv streams it once. With beta 0 C is zeroed here first, so that what
     * it held (NaN included) never reaches the result, whatever the library's scaling by 0 does.
     */
    private static void gemv(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, int lda,
                             MemorySegment b, int ldb, float beta, MemorySegment c, int ldc) {
        int len = m == 1 ? n : m, stride = m == 1 ? 1 : ldc;
        if (beta == 0f) {
            for (int i = 0; i < len; i++) c.setAtIndex(ValueLayout.JAVA_FLOAT, (long) i * stride, 0f);
        }
        if (m == 1) {   // cᵀ = op(A) op(B): op(A) is a row of k (stride lda down a transposed A), op(B) k × n
            Cblas.cblas_sgemv(Cblas.CblasRowMajor(), transB ? Cblas.CblasNoTrans() : Cblas.CblasTrans(), transB ? n : k, transB ? k : n,
                    alpha, b, ldb, a, transA ? lda : 1, beta, c, 1);
        } else {        // c = op(A) op(B): op(A) m × k, op(B) a column of k (stride ldb down an untransposed B)
            Cblas.cblas_sgemv(Cblas.CblasRowMajor(), transA ? Cblas.CblasTrans() : Cblas.CblasNoTrans(), transA ? k : m, transA ? m : k,
                    alpha, a, lda, b, transB ? 1 : ldb, beta, c, ldc);
        }
    }
}
