package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;

import dev.distillery.bindings.OpenBlasLibrary;
import dev.distillery.bindings.cblas.Cblas;

/**
 * SGEMM through the jextract-generated CBLAS bindings. Constructed only after
 * {@link OpenBlasLibrary#probe()} loaded a library, so {@code Cblas}' symbol lookup succeeds.
 */
final class BlasGemm implements Gemm {

    private final String description;

    BlasGemm() {
        OpenBlasLibrary.Probe probe = OpenBlasLibrary.require();
        // Each call runs on its caller's thread; CpuKernels does the splitting (see Gemm).
        Cblas.openblas_set_num_threads(1);
        String core = Cblas.openblas_get_corename().reinterpret(64).getString(0);
        this.description = "OpenBLAS " + core + " (" + probe.source() + ")";
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
        Cblas.cblas_sgemm(Cblas.CblasRowMajor(),
                transA ? Cblas.CblasTrans() : Cblas.CblasNoTrans(),
                transB ? Cblas.CblasTrans() : Cblas.CblasNoTrans(),
                m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
}
