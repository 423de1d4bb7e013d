package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.distill.FusedDistillLoss.BLOCK;

import java.lang.foreign.MemorySegment;
import java.util.List;

import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;

/**
 * A row of a mixture of dense teachers ({@link TeacherTargets.Mixture}), made from the teachers'
 * rows into this thread's one-row buffer as the logits whose softmax at T is the mixture:
 * <pre>
 *   e_ij = exp((t_ij − max_i)/T),  Z_i = Σ_j e_ij,  m_j = T · log Σ_i (w_i / Z_i) e_ij
 * </pre>
 * One pass per teacher for its maximum (compares only), one that writes e_i and sums Z_i, one
 * that combines them: an exp per teacher and a log per element. The dense rows ({@link
 * DenseForwardKl}, {@link DenseReverseKl}, {@link DenseJsd}, Java or C) then read m like one
 * fp32 teacher's row, from L2. Memory: (teachers + 1) · 4V bytes per thread, never an (n, V)
 * buffer. Where every teacher's e_ij underflows (below 2^−126) m_j is −∞: the mixture's
 * probability there is below fp32's least normal, where reverse KL charges its floor anyway. CUDA
 * twin: {@code MixtureRow} in cuda/src/main/cuda/distill_loss.cu (computed where each pass reads
 * it); float64: {@code ReferenceDistillLoss.mixtureRow}. docs/KERNELS.md#teacher-mixtures.
 */
final class MixtureRows {

    private MixtureRows() {
    }

    /** Row r of the mixture at temperature T = 1/invT, as a one-row dense teacher over the thread's buffer. */
    static TeacherTargets.Dense row(int r, TeacherTargets.Mixture m, float invT, RowScratch sc) {
        List<TeacherTargets.Dense> teachers = m.teachers();
        int vt = m.vocab(), k = teachers.size();
        long to = (long) r * vt;
        sc.mixture(vt, k);
        float[][] e = sc.mixtureE;
        float[] c = sc.mixtureScale;
        float k2 = invT * VectorOps.LOG2E;
        for (int i = 0; i < k; i++) {
            TeacherTargets.Dense d = teachers.get(i);
            float max = TeacherBlocks.max(d, to, vt, sc.teacher);
            TeacherBlocks.checkMax(r, max);
            double z = 0;
            for (int j0 = 0; j0 < vt; j0 += BLOCK) {
                int len = Math.min(BLOCK, vt - j0);
                TeacherBlocks.load(d, to, j0, len, sc.teacher);
                z += expInto(sc.teacher, len, max, k2, e[i], j0);
            }
            TeacherBlocks.checkSum(r, z, d, to);
            c[i] = (float) (m.weight(i) / z);
        }
        combine(e, c, k, vt, 1f / invT, sc.mixtureRow);
        return sc.mixtureTeacher;
    }

    /** e[eo + j] = 2^((b[j] − max) k2) over a block; returns their sum. */
    private static float expInto(float[] b, int len, float max, float k2, float[] e, int eo) {
        FloatVector acc = FloatVector.zero(SPECIES);
        int j = 0;
        for (int bound = SPECIES.loopBound(len); j < bound; j += LANES) {
            FloatVector x = VectorOps.exp2(FloatVector.fromArray(SPECIES, b, j).sub(max), k2);
            x.intoArray(e, eo + j);
            acc = acc.add(x);
        }
        float sum = VectorOps.sumLanes(acc);
        for (; j < len; j++) {
            e[eo + j] = VectorOps.exp2(b[j] - max, k2);
            sum += e[eo + j];
        }
        return sum;
    }

    /** out[j] = T log Σ_i c_i e_i[j] over the row (log 0 = −∞). */
    private static void combine(float[][] e, float[] c, int k, int vt, float temperature, MemorySegment out) {
        int j = 0;
        for (int bound = SPECIES.loopBound(vt); j < bound; j += LANES) {
            FloatVector sum = FloatVector.fromArray(SPECIES, e[0], j).mul(c[0]);
            for (int i = 1; i < k; i++) sum = FloatVector.fromArray(SPECIES, e[i], j).fma(FloatVector.broadcast(SPECIES, c[i]), sum);
            VectorOps.log(sum).mul(temperature).intoMemorySegment(out, j * 4L, ORDER);
        }
        for (; j < vt; j++) {
            float sum = e[0][j] * c[0];
            for (int i = 1; i < k; i++) sum = Math.fma(e[i][j], c[i], sum);
            VectorOps.set(out, j, VectorOps.log(sum) * temperature);
        }
    }
}
