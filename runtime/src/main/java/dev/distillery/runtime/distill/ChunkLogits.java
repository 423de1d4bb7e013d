package dev.distillery.runtime.distill;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * Teacher rows made as fp32 logits one chunk at a time into one buffer (an in-process teacher's
 * LM head): {@link #fill} makes a chunk, and the top-1 tokens of the last
 * chunk are ranked where the logits are, once, when first asked for.
 */
abstract class ChunkLogits implements TeacherRows {

    private final Kernels kernels;
    private final MemorySegment logits, top1Scratch;
    private int from = -1, to = -1, vocab;
    private int[] top1;

    /** @param logits the (chunk, vocab) fp32 buffer {@link #fill} writes; top1Scratch (chunk) int32 */
    ChunkLogits(Kernels kernels, MemorySegment logits, MemorySegment top1Scratch) {
        this.kernels = kernels;
        this.logits = logits;
        this.top1Scratch = top1Scratch;
    }

    /** Writes the logits of rows [r0, r1) into {@code logits}; returns their vocabulary. */
    abstract int fill(int r0, int r1, MemorySegment logits);

    @Override
    public final TeacherTargets rows(int r0, int r1) {
        vocab = fill(r0, r1, logits);
        from = r0;
        to = r1;
        top1 = null;
        return new TeacherTargets.Dense(logits, DType.F32, vocab);
    }

    @Override
    public final int top1(int row) {
        if (row < from || row >= to) throw new IllegalArgumentException("row " + row + " is not in the last chunk [" + from + ", " + to + ")");
        if (top1 == null) {
            kernels.argmaxRows(top1Scratch, logits, to - from, vocab);
            try (Arena host = Arena.ofConfined()) {
                top1 = kernels.hostView(top1Scratch, 4L * (to - from), host).toArray(ValueLayout.JAVA_INT);
            }
        }
        return top1[row - from];
    }
}
