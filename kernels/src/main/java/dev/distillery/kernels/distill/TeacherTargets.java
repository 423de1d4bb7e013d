package dev.distillery.kernels.distill;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

import dev.distillery.kernels.DType;

/**
 * What the teacher says about each of n token rows, as stored in a shard, or what several dense
 * teachers say together ({@link Mixture}). Buffers are positioned at row 0; {@link #rows(int, int)}
 * gives the targets of a sub-range (for chunked losses), and {@link #layout()} describes stored
 * targets without the memory.
 */
public sealed interface TeacherTargets {

    /** The kinds of teacher targets. */
    enum Kind { DENSE, TOP_K, SAMPLED }

    /** Teacher vocabulary size V_t; the student's may be larger (padding columns), never smaller. */
    int vocab();

    /** The kind, types and sizes of these targets; a {@link Mixture} is never stored and has none. */
    TeacherLayout layout();

    /** The buffers, in the order of {@link TeacherLayout#bufferTypes()}, each positioned at row 0. */
    List<MemorySegment> buffers();

    /** The same targets for rows [from, to). */
    default TeacherTargets rows(int from, int to) {
        TeacherLayout layout = layout();
        List<MemorySegment> buffers = buffers(), sliced = new ArrayList<>(buffers.size());
        for (int i = 0; i < buffers.size(); i++) sliced.add(buffers.get(i).asSlice(from * layout.bytesPerRow(i)));
        return layout.over(sliced);
    }

    /**
     * The teacher's most likely token in {@code row}: the largest logit (for sampled targets, the
     * largest summed weight). Ties: among dense logits and sampled weights, the smaller id (as the
     * student's {@code Kernels.argmaxRows} breaks them); among top-k logits, the one listed first,
     * because writers list the top-k in descending order of the unrounded logits, so a tie made by
     * rounding to bf16 is settled by the teacher's own ranking.
     */
    int top1(int row);

    /** Dense logits (n, vocab) in fp32, fp16 or bf16, read by the kernel with no conversion pass. */
    record Dense(MemorySegment logits, DType type, int vocab) implements TeacherTargets {
        public Dense {
            if (!type.isLogitType()) throw new IllegalArgumentException("dense teacher logits must be F32, F16 or BF16, got " + type);
        }

        @Override
        public TeacherLayout layout() {
            return TeacherLayout.dense(type, vocab);
        }

        @Override
        public List<MemorySegment> buffers() {
            return List.of(logits);
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
    record TopK(MemorySegment ids, MemorySegment logits, DType type, MemorySegment logsumexp,
                int k, int vocab, float shardTemperature) implements TeacherTargets {
        public TopK {
            if (k < 1 || k > vocab) throw new IllegalArgumentException("top-k k = " + k + " must be in [1, vocab = " + vocab + "]");
            if (!type.isLogitType()) throw new IllegalArgumentException("top-k teacher logits must be F32, F16 or BF16, got " + type);
            if (!(shardTemperature > 0)) throw new IllegalArgumentException("shard temperature must be > 0, got " + shardTemperature);
        }

        @Override
        public TeacherLayout layout() {
            return new TeacherLayout(Kind.TOP_K, type, vocab, k, shardTemperature);
        }

        @Override
        public List<MemorySegment> buffers() {
            return List.of(ids, logits, logsumexp);
        }

        @Override
        public int top1(int row) {
            return ids.getAtIndex(ValueLayout.JAVA_INT, (long) row * k + type.argmax(logits, (long) row * k, k));
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
        public TeacherLayout layout() {
            return new TeacherLayout(Kind.SAMPLED, DType.F32, vocab, samples, shardTemperature);
        }

        @Override
        public List<MemorySegment> buffers() {
            return List.of(ids, weights);
        }

        @Override
        public int top1(int row) {
            int best = -1;
            double max = Double.NEGATIVE_INFINITY;
            for (int i = 0; i < samples; i++) {
                int id = ids.getAtIndex(ValueLayout.JAVA_INT, (long) row * samples + i);
                double w = 0;
                for (int j = 0; j < samples; j++) {
                    if (ids.getAtIndex(ValueLayout.JAVA_INT, (long) row * samples + j) == id) {
                        w += weights.getAtIndex(ValueLayout.JAVA_FLOAT, (long) row * samples + j);
                    }
                }
                if (w > max || (w == max && id < best)) {
                    max = w;
                    best = id;
                }
            }
            return best;
        }
    }

    /**
     * Several dense teachers of one vocabulary on the same rows, read as their weighted mixture
     * {@code p = Σ_i w_i softmax(t_i/T)} at the loss's temperature T (weights positive, summing to
     * 1; at most {@link #MAX_TEACHERS}). The fused loss reads every teacher's row itself: the
     * mixture never exists as an (n, vocab) matrix (docs/KERNELS.md#teacher-mixtures).
     */
    record Mixture(List<Dense> teachers, float[] weights) implements TeacherTargets {

        /** Teachers one mixture takes: the CUDA kernel gets their rows as separate arguments. */
        public static final int MAX_TEACHERS = 8;

        public Mixture {
            teachers = List.copyOf(teachers);
            if (teachers.isEmpty() || teachers.size() > MAX_TEACHERS || teachers.size() != weights.length) {
                throw new IllegalArgumentException("a mixture takes 1 to " + MAX_TEACHERS + " teachers with one weight each, got "
                        + teachers.size() + " teachers and " + weights.length + " weights");
            }
            double sum = 0;
            for (int i = 0; i < weights.length; i++) {
                if (!(weights[i] > 0)) throw new IllegalArgumentException("teacher " + (i + 1) + "'s weight must be positive, got " + weights[i]);
                if (teachers.get(i).vocab() != teachers.getFirst().vocab()) {
                    throw new IllegalArgumentException("teacher " + (i + 1) + " has vocabulary " + teachers.get(i).vocab()
                            + ", teacher 1 has " + teachers.getFirst().vocab());
                }
                sum += weights[i];
            }
            if (Math.abs(sum - 1) > 1e-5) throw new IllegalArgumentException("teacher weights must sum to 1, got " + sum);
            weights = weights.clone();
        }

        @Override
        public float[] weights() {
            return weights.clone();
        }

        /** Teacher i's weight, without the copy {@link #weights()} makes (read per row by the kernels). */
        public float weight(int i) {
            return weights[i];
        }

        @Override
        public int vocab() {
            return teachers.getFirst().vocab();
        }

        @Override
        public TeacherLayout layout() {
            throw new UnsupportedOperationException("a mixture of teachers is made in memory, never stored: it has no layout");
        }

        @Override
        public List<MemorySegment> buffers() {
            return teachers.stream().map(Dense::logits).toList();
        }

        @Override
        public TeacherTargets rows(int from, int to) {
            return new Mixture(teachers.stream().map(d -> (Dense) d.rows(from, to)).toList(), weights);
        }

        /** The largest Σ_i w_i softmax(t_i)_j (at temperature 1), the smaller id on ties. */
        @Override
        public int top1(int row) {
            int v = vocab();
            double[] p = new double[v];
            for (int i = 0; i < teachers.size(); i++) {
                Dense d = teachers.get(i);
                long o = (long) row * v;
                double mx = Double.NEGATIVE_INFINITY, sum = 0;
                for (int j = 0; j < v; j++) mx = Math.max(mx, d.type().read(d.logits(), o + j));
                for (int j = 0; j < v; j++) sum += Math.exp(d.type().read(d.logits(), o + j) - mx);
                for (int j = 0; j < v; j++) p[j] += weights[i] * Math.exp(d.type().read(d.logits(), o + j) - mx) / sum;
            }
            int best = 0;
            for (int j = 1; j < v; j++) if (p[j] > p[best]) best = j;
            return best;
        }
    }
}
