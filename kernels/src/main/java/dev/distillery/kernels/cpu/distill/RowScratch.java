package dev.distillery.kernels.cpu.distill;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * One pool thread's buffers for the fused loss, reused across rows and calls. Java arrays, not
 * segments: a Vector-API loop that stores to a segment keeps its bounds checks inside the loop
 * (docs/KERNELS.md#stores-constants-and-max). Extra memory: O(V) per thread.
 */
final class RowScratch {

    /** One block of teacher logits widened to fp32 ({@link TeacherBlocks#load}). */
    final float[] teacher = new float[FusedDistillLoss.BLOCK];
    /** Per-block q and softmax(s): filled by one-exp loops, combined by a loop with none. */
    final float[] qb = new float[FusedDistillLoss.BLOCK], sb = new float[FusedDistillLoss.BLOCK];
    /** One block of the gradient before it is copied to the caller's buffer. */
    final float[] gb = new float[FusedDistillLoss.BLOCK];
    /** Dense rows: e_s and e_t (or (t − m_t)/T) of the whole row; sparse rows: e in eS. */
    float[] eS = new float[0], eT = new float[0];
    /** The student maximum each block of a sparse row's pass A was shifted by (StudentPass with e kept). */
    float[] blockMax = new float[0];
    /** Student logits at a sparse row's listed ids, read before an in-place gradient overwrites them. */
    float[] listed = new float[0];
    /** A top-k row's listed entries: q, log q, p, log p. */
    float[] q = new float[0], lq = new float[0], p = new float[0], lp = new float[0];
    /** A top-k row's listed entries at the shard's temperature, in float64: log p and p. */
    double[] lpShard = new double[0], pShard = new double[0];
    /**
     * A top-k row's per-entry gradient weights and its divergence's per-entry term (reverse KL's
     * log q − log p, JSD's g): scratch, since an array allocated per row cost 5% of a top-64
     * row's time.
     */
    double[] wListed = new double[0], categoryTerm = new double[0];
    /** marks[j] == markRow ⇔ column j is listed in the current top-k row (no clearing between rows). */
    int[] marks = new int[0];
    int markRow;
    /**
     * The row this thread takes after the current one (its lines are fetched during the current
     * row's pass A; the current row itself when there is none), and what the fetches read.
     */
    int nextRow;
    /**
     * Element offsets of this row's dense teacher logits and of the next row's: r · V_t and
     * nextRow · V_t, or 0 and 0 for a mixture, whose row is {@link #mixtureRow}.
     */
    long teacherAt, nextTeacherAt;
    long fetched;
    /** Blocks of dense rows that raised the lazy maxima ({@link DenseRow}), and rows whose passes ran in C. */
    long raises, nativeRows;
    /** Which implementation runs this row's passes ({@link RowPasses}). */
    RowPasses passes = RowPasses.JAVA;
    /**
     * The C passes' e rows (e_t for a dense forward-KL row; e_s and (t − m_t)/T for a reverse-KL
     * one, e_s and e_t for a JSD one), block maxima and outputs; freed with this scratch.
     */
    MemorySegment nativeE = MemorySegment.NULL, nativeBlockMax = MemorySegment.NULL, nativeOut = MemorySegment.NULL;

    /** A mixture row ({@link MixtureRows}): its logits (fp32, native, so the C passes read it too), as a teacher. */
    MemorySegment mixtureRow = MemorySegment.NULL;
    TeacherTargets.Dense mixtureTeacher;
    /** Per teacher of the mixture: e_i, the exps of its row, and its w_i / Z_i. */
    float[][] mixtureE = new float[0][];
    float[] mixtureScale = new float[0];

    void mixture(int vt, int teachers) {
        if (mixtureTeacher == null || mixtureTeacher.vocab() != vt) {
            if (mixtureRow.byteSize() < 4L * vt) mixtureRow = Arena.ofAuto().allocate(4L * vt, 64);
            mixtureTeacher = new TeacherTargets.Dense(mixtureRow, DType.F32, vt);
        }
        if (mixtureE.length < teachers || mixtureE[0].length < vt) {
            mixtureE = new float[Math.max(teachers, mixtureE.length)][vt];
            mixtureScale = new float[mixtureE.length];
        }
    }

    void rows(int v) {
        if (eS.length < v) {
            eS = new float[v];
            eT = new float[v];
        }
    }

    /** Room for the C passes of a row of v columns, with rows e rows of v floats (none for a sparse row: its e goes over g). */
    void nativeRows(int v, int rows) {
        if (nativeE.byteSize() < 4L * v * rows) nativeE = Arena.ofAuto().allocate(4L * v * rows, 64);
        long blocks = (v + FusedDistillLoss.BLOCK - 1) / FusedDistillLoss.BLOCK;
        if (nativeBlockMax.byteSize() < 4L * blocks) nativeBlockMax = Arena.ofAuto().allocate(4L * blocks, 64);
        if (nativeOut.byteSize() == 0) nativeOut = Arena.ofAuto().allocate(4 * 8, 8);
    }

    /** Room for a sparse row of k entries (and marks over v columns for top-k). */
    void sparse(int k, int v, boolean marksToo) {
        if (q.length < k) {
            q = new float[k];
            lq = new float[k];
            p = new float[k];
            lp = new float[k];
            lpShard = new double[k];
            pShard = new double[k];
            wListed = new double[k];
            categoryTerm = new double[k];
        }
        if (marksToo && marks.length < v) {
            marks = new int[v];
            markRow = 0;
        }
    }
}
