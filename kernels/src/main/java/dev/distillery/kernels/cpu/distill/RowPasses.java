package dev.distillery.kernels.cpu.distill;

import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.distill.StudentPass.Student;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * Where the passes of the commonest rows run: the Java rows of this package, or their C twins
 * ({@link NativeRowPasses}), the same plan and arithmetic with prefetches
 * (docs/KERNELS.md#the-native-row). A row asks {@link #forDense} or {@link #forSparse} once;
 * every other case, the sparse entries and every error message stay in Java.
 */
sealed interface RowPasses permits RowPasses.Java, NativeRowPasses {

    RowPasses JAVA = new Java();

    /** The passes for a dense row: forward KL with the gradient formed over e_s, reverse KL or JSD at T = 2 or 1. */
    static RowPasses forDense(MemorySegment s, MemorySegment g, TeacherTargets.Dense d, int v) {
        return NativeRowPasses.active() && d.vocab() == v && d.type() != DType.F16 && s.isNative() && g.isNative()
                && d.logits().isNative() ? NativeRowPasses.INSTANCE : JAVA;
    }

    /** The passes for a sparse row whose gradient is e-squared (T = 2) or has no hard-label term at T = 1. */
    static RowPasses forSparse(MemorySegment s, MemorySegment g) {
        return NativeRowPasses.active() && s.isNative() && g.isNative() ? NativeRowPasses.INSTANCE : JAVA;
    }

    /**
     * Dense forward KL with the gradient over e_s (T = 2, or T = 1 without a hard label), passes
     * A and B: {m_s + log Z_1, KL}, or null (nothing written) when these passes leave the row to
     * the Java ones.
     */
    float[] denseForwardKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                           int power, float c1, float cq, RowScratch sc);

    /**
     * Dense reverse KL at T = 2 or T = 1 (Z_1 from e_s), passes A, B and C: {m_s + log Z_1, RKL},
     * or null (nothing written) when these passes leave the row to the Java ones.
     */
    float[] denseReverseKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                           int power, float c1, float cq, RowScratch sc);

    /**
     * Dense JSD(beta) at T = 2 or T = 1, passes A, B and C: {m_s + log Z_1, JSD}, or null (nothing
     * written) when these passes leave the row to the Java ones.
     */
    float[] denseJsd(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT, int power,
                     float beta, float c1, float cq, RowScratch sc);

    /** A sparse row's pass A with e kept, where {@link #squaredGradient} reads it (in a per-thread row, or over g). */
    Student studentPass(MemorySegment s, long so, MemorySegment g, int v, float invT, int power, RowScratch sc);

    /** A sparse row's gradient of every column from the e of {@link #studentPass}: g = q cqw + c2 q². */
    void squaredGradient(long so, MemorySegment g, int v, Student st, float invT, float c1, float cqw, RowScratch sc);

    /** The Java rows. */
    final class Java implements RowPasses {

        private Java() {
        }

        @Override
        public float[] denseForwardKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                                      int power, float c1, float cq, RowScratch sc) {
            return DenseForwardKl.javaRow(r, s, so, g, d, v, invT, power, c1, cq, sc);
        }

        @Override
        public float[] denseReverseKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                                      int power, float c1, float cq, RowScratch sc) {
            return DenseReverseKl.javaRow(r, s, so, g, d, v, invT, power, c1, cq, sc);
        }

        @Override
        public float[] denseJsd(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                                int power, float beta, float c1, float cq, RowScratch sc) {
            return DenseJsd.javaRow(r, s, so, g, d, v, invT, power, beta, c1, cq, sc);
        }

        @Override
        public Student studentPass(MemorySegment s, long so, MemorySegment g, int v, float invT, int power, RowScratch sc) {
            return StudentPass.run(s, so, v, invT, sc.eS, sc);
        }

        @Override
        public void squaredGradient(long so, MemorySegment g, int v, Student st, float invT, float c1, float cqw, RowScratch sc) {
            SparseRows.squaredGradient(so, g, v, st, invT, c1, cqw, sc);
        }
    }
}
