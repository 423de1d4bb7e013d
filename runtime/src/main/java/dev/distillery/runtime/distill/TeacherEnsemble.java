package dev.distillery.runtime.distill;

import java.util.ArrayList;
import java.util.List;

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
     * The mixture as one teacher's rows: for each chunk, every teacher's dense rows as one
     * {@link TeacherTargets.Mixture}, which the fused loss reads at its temperature; the mixture
     * itself is never stored. Top-1 is the mixture's at temperature 1.
     */
    public TeacherRows mixture() {
        return new TeacherRows() {
            private TeacherTargets.Mixture last;
            private int from;

            @Override
            public TeacherTargets rows(int r0, int r1) {
                List<TeacherTargets.Dense> rows = new ArrayList<>(teachers.size());
                for (int i = 0; i < teachers.size(); i++) {
                    TeacherTargets t = teachers.get(i).rows(r0, r1);
                    if (!(t instanceof TeacherTargets.Dense d)) {
                        throw new IllegalArgumentException("a mixture of teachers needs each teacher's whole distribution; teacher " + (i + 1)
                                + " gives " + t.layout().kind() + " targets");
                    }
                    rows.add(d);
                }
                last = new TeacherTargets.Mixture(rows, weights);
                from = r0;
                return last;
            }

            @Override
            public int top1(int row) {
                return last.top1(row - from);
            }
        };
    }
}
