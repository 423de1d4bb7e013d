package dev.distillery.kernels.distill;

import java.lang.foreign.MemorySegment;
import java.util.List;

import dev.distillery.kernels.DType;

/**
 * The shape of a teacher's targets per token row, without the memory: which kind, the type of its
 * logits, the teacher's vocabulary, k (top-k entries or samples per row) and the temperature
 * sparse targets were taken at. It knows the buffers a kind has, their element types and bytes
 * per row, so the code that stores, copies or stages targets needs no switch on the kind:
 * <pre>
 *   DENSE    logits (vocab, logitType)
 *   TOP_K    ids (k, I32), logits (k, logitType), logsumexp (1, F32)
 *   SAMPLED  ids (k, I32), weights (k, F32)
 * </pre>
 *
 * @param logitType        F32, F16 or BF16 (dense and top-k; F32 for sampled)
 * @param k                top-k entries or samples per row; 0 for dense
 * @param shardTemperature the temperature of a top-k logsumexp or of the samples; 0 for dense
 */
public record TeacherLayout(TeacherTargets.Kind kind, DType logitType, int vocab, int k, float shardTemperature) {

    public TeacherLayout {
        if (kind == null || logitType == null) throw new IllegalArgumentException("kind and logit type are required");
        if (!logitType.isLogitType()) throw new IllegalArgumentException("teacher logits must be F32, F16 or BF16, got " + logitType);
        if (vocab < 1) throw new IllegalArgumentException("teacher vocabulary must be >= 1, got " + vocab);
        if (kind != TeacherTargets.Kind.DENSE && (k < 1 || !(shardTemperature > 0))) {
            throw new IllegalArgumentException(kind + " targets need k >= 1 and a positive shard temperature, got k = " + k
                    + ", temperature " + shardTemperature);
        }
    }

    public static TeacherLayout dense(DType logitType, int vocab) {
        return new TeacherLayout(TeacherTargets.Kind.DENSE, logitType, vocab, 0, 0f);
    }

    /** The element type of each buffer, in order. */
    public List<DType> bufferTypes() {
        return switch (kind) {
            case DENSE -> List.of(logitType);
            case TOP_K -> List.of(DType.I32, logitType, DType.F32);
            case SAMPLED -> List.of(DType.I32, DType.F32);
        };
    }

    /** Elements per row of buffer i. */
    public int elementsPerRow(int i) {
        return switch (kind) {
            case DENSE -> vocab;
            case TOP_K -> i == 2 ? 1 : k;
            case SAMPLED -> k;
        };
    }

    /** Bytes per row of buffer i. */
    public long bytesPerRow(int i) {
        return (long) elementsPerRow(i) * bufferTypes().get(i).bytes();
    }

    /** Bytes per row over all buffers. */
    public long bytesPerRow() {
        long sum = 0;
        for (int i = 0; i < bufferTypes().size(); i++) sum += bytesPerRow(i);
        return sum;
    }

    /** Targets of this layout over {@code buffers} (one per buffer type, each positioned at row 0). */
    public TeacherTargets over(List<MemorySegment> buffers) {
        if (buffers.size() != bufferTypes().size()) {
            throw new IllegalArgumentException(kind + " targets have " + bufferTypes().size() + " buffers, got " + buffers.size());
        }
        return switch (kind) {
            case DENSE -> new TeacherTargets.Dense(buffers.get(0), logitType, vocab);
            case TOP_K -> new TeacherTargets.TopK(buffers.get(0), buffers.get(1), logitType, buffers.get(2), k, vocab, shardTemperature);
            case SAMPLED -> new TeacherTargets.Sampled(buffers.get(0), buffers.get(1), k, vocab, shardTemperature);
        };
    }
}
