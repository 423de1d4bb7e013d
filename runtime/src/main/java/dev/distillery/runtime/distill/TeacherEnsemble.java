package dev.distillery.runtime.distill;

import java.lang.foreign.MemorySegment;
import java.util.List;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * Several teachers of one vocabulary on the same rows, with weights w_i (Σ w_i = 1), combined one
 * of two ways (docs/CONFIG.md, "Several teachers"):
 * <pre>
 *   MEAN_OF_LOSSES  total = Σ_i w_i [alpha CE + (1 − alpha) D(p_i ‖ q)] = alpha CE + (1 − alpha) Σ_i w_i D(p_i ‖ q)
 *   MIXTURE         total = alpha CE + (1 − alpha) D(Σ_i w_i p_i ‖ q)
 * </pre>
 * The two agree for forward KL's gradient and differ in value (the mixture's entropy is larger);
 * for reverse KL and JSD they differ in both. The mixture needs every teacher's whole
 * distribution (dense shards or a model run in the process); the mean of losses takes any kind.
 */
public record TeacherEnsemble(List<TeacherRows> teachers, float[] weights, Combination combination) {

    /** How the teachers' targets combine. */
    public enum Combination { MEAN_OF_LOSSES, MIXTURE }

    public TeacherEnsemble {
        teachers = List.copyOf(teachers);
        if (teachers.isEmpty() || teachers.size() != weights.length) {
            throw new IllegalArgumentException(teachers.size() + " teachers and " + weights.length + " weights");
        }
        double sum = 0;
        for (float w : weights) {
            if (!(w > 0)) throw new IllegalArgumentException("teacher weights must be positive, got " + w);
            sum += w;
        }
        if (Math.abs(sum - 1) > 1e-5) throw new IllegalArgumentException("teacher weights must sum to 1, got " + sum);
        weights = weights.clone();
    }

    /** Weights w_i / Σ w. */
    public static float[] normalized(double[] weights) {
        double sum = 0;
        for (double w : weights) sum += w;
        float[] out = new float[weights.length];
        for (int i = 0; i < out.length; i++) out[i] = (float) (weights[i] / sum);
        return out;
    }

    /**
     * The mixture as one teacher's rows: for each chunk, every teacher's dense logits go into
     * {@code scratch} ((chunk, vocab) fp32) by {@link Kernels#addToMixture}, which then holds T ·
     * log Σ_i w_i softmax(t_i/T): a dense teacher whose softmax at {@code temperature} is the
     * mixture. Only one chunk of it exists at a time.
     */
    public TeacherRows mixture(Kernels kernels, float temperature, MemorySegment scratch, MemorySegment top1Scratch) {
        return new ChunkLogits(kernels, scratch, top1Scratch) {
            @Override
            int fill(int r0, int r1, MemorySegment mix) {
                int n = r1 - r0, vocab = -1;
                for (int i = 0; i < teachers.size(); i++) {
                    TeacherTargets t = teachers.get(i).rows(r0, r1);
                    if (!(t instanceof TeacherTargets.Dense d)) {
                        throw new IllegalArgumentException("a mixture of teachers needs each teacher's whole distribution; teacher " + (i + 1)
                                + " gives " + t.layout().kind() + " targets");
                    }
                    if (i == 0) {
                        vocab = d.vocab();
                        if (mix.byteSize() < 4L * n * vocab) throw new IllegalArgumentException("mixture scratch too small for " + n + " rows");
                        kernels.fill(mix, Float.NEGATIVE_INFINITY, (long) n * vocab);
                    } else if (d.vocab() != vocab) {
                        throw new IllegalArgumentException("teacher " + (i + 1) + " has vocabulary " + d.vocab() + ", teacher 1 has " + vocab);
                    }
                    kernels.addToMixture(mix, d.logits(), d.type(), n, vocab, temperature, weights[i]);
                }
                kernels.scale(mix, temperature, (long) n * vocab);
                return vocab;
            }
        };
    }
}
