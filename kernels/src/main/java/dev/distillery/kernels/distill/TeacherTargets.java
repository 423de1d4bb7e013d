package dev.distillery.kernels.distill;

import java.lang.foreign.MemorySegment;

/**
 * What the teacher says about each of n token rows, as stored in a shard. Buffers are positioned
 * at row 0; {@link #rows(int, int)} gives the targets of a sub-range (for chunked losses).
 */
public sealed interface TeacherTargets {

    /** Teacher vocabulary size V_t; the student's may be larger (padding columns), never smaller. */
    int vocab();

    /** The same targets for rows [from, to). */
    TeacherTargets rows(int from, int to);

    /**
     * The teacher's most likely token in {@code row} (ties: the smaller id among dense logits, the
     * first listed among sparse ones). For sampled targets, the id with the largest summed weight.
     */
    int top1(int row);

    /** Dense logits (n, vocab) in fp32, fp16 or bf16, read by the kernel with no conversion pass. */
    record Dense(MemorySegment logits, LogitType type, int vocab) implements TeacherTargets {
        @Override
        public TeacherTargets rows(int from, int to) {
            return new Dense(logits.asSlice((long) from * vocab * type.bytes()), type, vocab);
        }

        @Override
        public int top1(int row) {
            return type.argmax(logits, (long) row * vocab, vocab);
        }
    }

    /**
     * Top-k: int32 ids (n, k), their logits (n, k) and the teacher's full-vocabulary
     * logsumexp (n, fp32) of logits / {@code shardTemperature}. Ids in a row must be distinct.
     */
    record TopK(MemorySegment ids, MemorySegment logits, LogitType type, MemorySegment logsumexp,
                int k, int vocab, float shardTemperature) implements TeacherTargets {
        public TopK {
            if (k < 1 || k > vocab) throw new IllegalArgumentException("top-k k = " + k + " must be in [1, vocab = " + vocab + "]");
            if (!(shardTemperature > 0)) throw new IllegalArgumentException("shard temperature must be > 0, got " + shardTemperature);
        }

        @Override
        public TeacherTargets rows(int from, int to) {
            return new TopK(ids.asSlice(4L * from * k), logits.asSlice((long) from * k * type.bytes()),
                    type, logsumexp.asSlice(4L * from), k, vocab, shardTemperature);
        }

        @Override
        public int top1(int row) {
            return ids.getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, (long) row * k + type.argmax(logits, (long) row * k, k));
        }
    }

    /**
     * Sampled targets (Anshumann et al., "Sparse Logit Sampling", ACL 2025): per row, int32 ids
     * (n, samples) drawn from the teacher at {@code shardTemperature} and fp32 importance weights
     * (n, samples) such that Σ_s w_s [id_s = j] is an unbiased estimate of p_j. Ids may repeat.
     */
    record Sampled(MemorySegment ids, MemorySegment weights, int samples, int vocab, float shardTemperature)
            implements TeacherTargets {
        public Sampled {
            if (samples < 1) throw new IllegalArgumentException("samples must be >= 1, got " + samples);
            if (!(shardTemperature > 0)) throw new IllegalArgumentException("shard temperature must be > 0, got " + shardTemperature);
        }

        @Override
        public TeacherTargets rows(int from, int to) {
            return new Sampled(ids.asSlice(4L * from * samples), weights.asSlice(4L * from * samples),
                    samples, vocab, shardTemperature);
        }

        @Override
        public int top1(int row) {
            int best = -1;
            double max = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < samples; i++) {
                int id = ids.getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, (long) row * samples + i);
                double w = 0;
                for (int j = 0; j < samples; j++) {
                    if (ids.getAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, (long) row * samples + j) == id) {
                        w += weights.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, (long) row * samples + j);
                    }
                }
                if (w > max) {
                    max = w;
                    best = id;
                }
            }
            return best;
        }
    }
}
