package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.I32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.distill.FusedDistillLoss.BLOCK;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;

import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.cpu.distill.StudentPass.Student;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;

/**
 * What top-k and sampled rows share: the student logits at the listed ids, read (and the ids
 * checked) before an in-place gradient overwrites them; pass A over the student ({@link
 * StudentPass}, or its C twin); and the gradient every unlisted column shares,
 * dL/ds_j = c1 softmax(s)_j + cq q_j w, which {@link TopKRows} then overwrites at its listed
 * columns and {@link SampledRows} corrects at its (an id may be drawn more than once). CUDA twin: the shared-gradient loop of {@code topk_row} and
 * {@code sampled_row}.
 */
final class SparseRows {

    private SparseRows() {
    }

    /**
     * The start of a sparse row: reads the listed ids' student logits, chooses where the row's
     * passes run, and runs pass A over the student. With a gradient, pass A leaves
     * e = exp((s − block max)/T) in a per-thread row, so the gradient pass needs no exp for q.
     */
    static Student begin(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets teacher, int v, float invT,
                         float c1, RowScratch sc) {
        boolean storeE = g != null;
        readListed(r, s, so, teacher, sc);
        if (storeE) sc.rows(v);
        int power = StudentPass.integerTemperature(invT);
        sc.passes = storeE && (power == 2 || power == 1 && c1 == 0f) ? RowPasses.forSparse(s, g) : RowPasses.JAVA;
        return storeE ? sc.passes.studentPass(s, so, g, v, invT, power, sc) : StudentPass.run(s, so, v, invT, null, sc);
    }

    /** Copies the student logits at a sparse row's listed ids into sc.listed, checking each id. */
    private static void readListed(int r, MemorySegment s, long so, TeacherTargets teacher, RowScratch sc) {
        MemorySegment ids;
        int k, vocab;
        String what;
        switch (teacher) {
            case TeacherTargets.TopK t -> { ids = t.ids(); k = t.k(); vocab = t.vocab(); what = "top-k id "; }
            case TeacherTargets.Sampled t -> { ids = t.ids(); k = t.samples(); vocab = t.vocab(); what = "sampled id "; }
            case TeacherTargets.Dense d -> { return; }
            case TeacherTargets.Mixture m -> { return; }
        }
        if (sc.listed.length < k) sc.listed = new float[k];
        long base = (long) r * k;
        for (int i = 0; i < k; i++) {
            int id = ids.getAtIndex(I32, base + i);
            if (id < 0 || id >= vocab) {
                throw new BadRowException(r, what + id + " (entry " + i + ") is outside the teacher vocabulary [0, " + vocab + ")");
            }
            sc.listed[i] = get(s, so + id);
        }
    }

    /**
     * Writes dL/ds_j = c1 · softmax(s)_j + cq · q_j · w for every column (the gradient of a column
     * no sparse entry lists); the caller writes or corrects the listed columns.
     */
    static void sharedGradient(MemorySegment s, long so, MemorySegment g, int v, Student st, float invT,
                               float c1, float cqw, boolean storedE, RowScratch sc) {
        if (storedE && (c1 == 0f || StudentPass.integerTemperature(invT) == 2)) {
            sc.passes.squaredGradient(so, g, v, st, invT, c1, cqw, sc);
            return;
        }
        float[] gb = sc.gb;
        if (c1 == 0f) Arrays.fill(sc.sb, 0f);
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            long o = so + j0;
            if (storedE) {
                // q = e · exp((m_b − m)/T − log Z_T), e left in sc.eS by pass A
                float f = (float) Math.exp((sc.blockMax[j0 / BLOCK] - st.max()) * (double) invT - st.logZt());
                System.arraycopy(sc.eS, j0, sc.qb, 0, len);
                VectorOps.scaleArray(sc.qb, len, f);
            } else {
                VectorOps.expAffine(s, o, len, st.max(), invT, st.logZt(), sc.qb);
            }
            if (c1 != 0f) StudentPass.hardLabelSoftmax(s, o, len, st.max(), invT, st.logZt(), st.logZ1(), sc);
            int i = 0;
            for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                FloatVector gv = FloatVector.fromArray(SPECIES, sc.qb, i).mul(cqw);
                FloatVector.fromArray(SPECIES, sc.sb, i).mul(c1).add(gv).intoArray(gb, i);
            }
            for (; i < len; i++) gb[i] = sc.sb[i] * c1 + sc.qb[i] * cqw;
            MemorySegment.copy(gb, 0, g, F32, o * 4L, len);
        }
    }

    /**
     * sharedGradient when pass A left e in sc.eS and the CE term is e-squared (T = 2) or absent:
     * one loop, g = q cqw + c2 q² = e (a_b + b_b e) with q = e f_b, f_b = exp((m_b − m)/T − log Z_T),
     * a_b = cqw f_b, b_b = c1 exp(2 (m_b − m)/T − log Z_1) (softmax(s) = (q Z_T)² / Z_1 at T = 2;
     * 0 without a hard label), block by block through sc.gb, last block first (pass A ended on
     * it). C twin: {@code squared_gradient}.
     */
    static void squaredGradient(long so, MemorySegment g, int v, Student st, float invT, float c1, float cqw, RowScratch sc) {
        float[] e = sc.eS, gb = sc.gb;
        for (int j0 = (v - 1) / BLOCK * BLOCK; j0 >= 0; j0 -= BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            double d = (sc.blockMax[j0 / BLOCK] - st.max()) * (double) invT;
            float a = (float) (cqw * Math.exp(d - st.logZt())), b = c1 == 0f ? 0f : (float) (c1 * Math.exp(2.0 * d - st.logZ1()));
            int i = 0;
            for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                FloatVector x = FloatVector.fromArray(SPECIES, e, j0 + i);
                x.mul(x.fma(b, a)).intoArray(gb, i);
            }
            for (; i < len; i++) {
                float x = e[j0 + i];
                gb[i] = x * Math.fma(x, b, a);
            }
            MemorySegment.copy(gb, 0, g, F32, (so + j0) * 4L, len);
        }
    }
}
