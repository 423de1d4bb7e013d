package dev.distillery.runtime.distill;

import dev.distillery.kernels.distill.TeacherTargets;

/**
 * A batch's teacher targets, asked for one range of rows at a time by the chunked LM head + loss:
 * slices of a stored batch, or the logits an {@link InProcessTeacher} computes for just those rows.
 * What {@link #rows} returns is valid until the next call.
 */
public interface TeacherRows {

    /** The targets of rows [from, to), where the kernels read them. */
    TeacherTargets rows(int from, int to);

    /** The teacher's most likely token in {@code row}, a row of the last {@link #rows} range (for top-1 agreement). */
    int top1(int row);

    /** Stored targets, already where the kernels read them, with their top-1 tokens from the host. */
    static TeacherRows stored(TeacherTargets staged, int[] top1) {
        return new TeacherRows() {
            @Override
            public TeacherTargets rows(int from, int to) {
                return staged.rows(from, to);
            }

            @Override
            public int top1(int row) {
                return top1[row];
            }
        };
    }
}
