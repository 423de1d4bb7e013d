package dev.distillery.trainer.data;

import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * Training sequences of one length, addressed by index: teacher shards (ids with the teacher's
 * stored targets) or windows of a token file (ids alone, for a teacher run in the process).
 * What {@link TeacherBatchStream} batches.
 */
public interface Sequences {

    int sequences();

    int seqLen();

    /** The layout of the targets each sequence carries; null when it carries none. */
    TeacherLayout layout();

    /** Copies sequence {@code index}'s seqLen int32 ids into {@code dst} at byte {@code offset}. */
    void copyInputIds(int index, MemorySegment dst, long offset);

    /** Sequence {@code index}'s teacher targets; only when {@link #layout()} is not null. */
    TeacherTargets targets(int index);

    /** The teacher's hidden states each sequence carries (feature distillation); empty when none. */
    default int[] hiddenLayers() {
        return new int[0];
    }

    /** The width of those hidden states; 0 when none. */
    default int hiddenSize() {
        return 0;
    }

    /** Sequence {@code index}'s hidden state {@code layer}: (seqLen, hiddenSize) bf16. */
    default MemorySegment hiddenState(int index, int layer) {
        throw new IllegalArgumentException("these sequences carry no hidden states");
    }

    /** Where sequence {@code index}, position {@code position} is, in the user's terms. */
    String where(int index, int position);

    /** The error for a read of sequence {@code index} that faulted: its file changed after it was opened. */
    RuntimeException unreadable(int index, Throwable fault);
}
