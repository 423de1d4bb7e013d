package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;

import dev.distillery.bindings.DistilleryCpu;

/**
 * The GEMM of bf16 mixed precision: both operands rounded to bf16, products summed in fp32, on AMX
 * tiles or AVX512-BF16 dot products ({@code cpu/src/main/c/bf16_gemm.c}, docs/KERNELS.md#bf16-gemm).
 * Built only where {@link #unavailableReason} is null. {@code -Ddistillery.bf16Gemm=avx512} takes
 * the AVX512-BF16 path on an AMX CPU (to test it, or to compare the two).
 */
final class Bf16Gemm implements Gemm {

    private final int kind;

    Bf16Gemm() {
        String why = unavailableReason();
        if (why != null) throw new IllegalStateException("bf16 GEMM: " + why);
        int best = DistilleryCpu.bf16GemmKind();
        String asked = System.getProperty("distillery.bf16Gemm", "auto").trim();
        this.kind = switch (asked) {
            case "auto" -> best;
            case "avx512" -> DistilleryCpu.BF16_AVX512;
            default -> throw new IllegalArgumentException("-Ddistillery.bf16Gemm must be auto or avx512, got '" + asked + "'");
        };
    }

    /** Why this machine has no bf16 GEMM, or null when it has one. */
    static String unavailableReason() {
        if (!DistilleryCpu.available()) return "the native CPU library is " + DistilleryCpu.status();
        if (DistilleryCpu.bf16GemmKind() == DistilleryCpu.BF16_NONE) return "this CPU has neither AMX-BF16 nor AVX512-BF16";
        return null;
    }

    @Override
    public String describe() {
        return "bf16 GEMM (" + (kind == DistilleryCpu.BF16_AMX ? "AMX" : "AVX512-BF16") + ", fp32 sums)";
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k,
                      float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
                      float beta, MemorySegment c, int ldc) {
        if (m == 0 || n == 0) return;
        if (DistilleryCpu.bf16Gemm(kind, transA, transB, m, n, k, alpha, a.address(), lda, b.address(), ldb,
                beta, c.address(), ldc) != 0) {
            throw new OutOfMemoryError("bf16 GEMM " + m + "x" + n + "x" + k + ": no memory for its packed operands");
        }
    }
}
