package dev.distillery.kernels.distill;

/**
 * What one call of the fused loss adds up over its rows.
 *
 * @param total      Σ_rows alpha·CE + (1−alpha)·divergence (divergence already T²-scaled when on)
 * @param ce         Σ_rows hard-label cross-entropy (0 when there are no labels)
 * @param divergence Σ_rows divergence
 * @param rows       rows that counted (not masked by the ignore index)
 */
public record DistillSums(double total, double ce, double divergence, int rows) {

    public DistillSums plus(DistillSums o) {
        return new DistillSums(total + o.total, ce + o.ce, divergence + o.divergence, rows + o.rows);
    }

    public static DistillSums zero() {
        return new DistillSums(0, 0, 0, 0);
    }
}
