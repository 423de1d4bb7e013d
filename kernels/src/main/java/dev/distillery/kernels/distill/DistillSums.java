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

    /**
     * The sums of n rows from their CE and divergence (as the loss writes them to rowCe and
     * rowDivergence): total = alpha · CE + (1 − alpha) · divergence over the rows whose label is
     * not the ignore index (every row when labels is null), added in row order in double.
     */
    public static DistillSums ofRows(float[] ce, float[] divergence, int[] labels, int n, DistillOptions options) {
        double total = 0, ceSum = 0, divSum = 0;
        int counted = 0;
        for (int r = 0; r < n; r++) {
            if (labels != null && labels[r] == options.ignoreIndex()) continue;
            total += options.alpha() * ce[r] + (1 - options.alpha()) * (double) divergence[r];
            ceSum += ce[r];
            divSum += divergence[r];
            counted++;
        }
        return new DistillSums(total, ceSum, divSum, counted);
    }
}
