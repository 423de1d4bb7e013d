package dev.distillery.kernels.distill;

/**
 * Options of the fused distillation loss.
 *
 * @param temperature           T &gt; 0 for both softmaxes of the divergence
 * @param alpha                 weight of the hard-label cross-entropy (at T = 1), in [0, 1];
 *                              the divergence gets 1 − alpha
 * @param divergence            forward KL, reverse KL or JSD(β)
 * @param scaleByTemperatureSquared multiply the divergence by T² (Hinton; DistillKit and ModelOpt
 *                              do, Liger and TRL do not). Default on.
 * @param topKMode              how a top-k teacher's missing mass is treated
 * @param sparseTemperature     what to do when T differs from the temperature a sparse shard was
 *                              written at
 * @param ignoreIndex           a label equal to this masks its whole row out (default −100)
 */
public record DistillOptions(float temperature, float alpha, Divergence divergence, boolean scaleByTemperatureSquared,
                             TopKMode topKMode, SparseTemperature sparseTemperature, int ignoreIndex) {

    /** Top-k teachers: keep the mass outside the top-k as one tail bucket, or renormalize over the top-k (DistillKit). */
    public enum TopKMode { TAIL_BUCKET, RENORMALIZE }

    /**
     * Sparse teachers at another temperature than the shard's. REQUIRE_MATCH (default) makes it an
     * error. RESCALE_TOPK (top-k only) keeps the tail mass the shard implies at its own temperature
     * and redistributes the rest over the top-k as softmax(t/T): an approximation, chosen explicitly.
     */
    public enum SparseTemperature { REQUIRE_MATCH, RESCALE_TOPK }

    public DistillOptions {
        if (!(temperature > 0) || Float.isInfinite(temperature)) {
            throw new IllegalArgumentException("temperature must be a positive number, got " + temperature);
        }
        if (!(alpha >= 0 && alpha <= 1)) throw new IllegalArgumentException("alpha must be in [0, 1], got " + alpha);
        if (divergence == null) throw new IllegalArgumentException("divergence is required");
        if (topKMode == null || sparseTemperature == null) throw new IllegalArgumentException("topKMode and sparseTemperature are required");
    }

    /** Forward KL at temperature T, mixed with the hard-label CE by alpha, T² scaling on, tail bucket, ignore −100. */
    public static DistillOptions of(float temperature, float alpha) {
        return new DistillOptions(temperature, alpha, Divergence.forwardKl(), true, TopKMode.TAIL_BUCKET,
                SparseTemperature.REQUIRE_MATCH, -100);
    }

    public DistillOptions withAlpha(float a) {
        return new DistillOptions(temperature, a, divergence, scaleByTemperatureSquared, topKMode, sparseTemperature, ignoreIndex);
    }

    public DistillOptions withDivergence(Divergence d) {
        return new DistillOptions(temperature, alpha, d, scaleByTemperatureSquared, topKMode, sparseTemperature, ignoreIndex);
    }

    public DistillOptions withTemperatureSquared(boolean on) {
        return new DistillOptions(temperature, alpha, divergence, on, topKMode, sparseTemperature, ignoreIndex);
    }

    public DistillOptions withTopKMode(TopKMode mode) {
        return new DistillOptions(temperature, alpha, divergence, scaleByTemperatureSquared, mode, sparseTemperature, ignoreIndex);
    }

    public DistillOptions withSparseTemperature(SparseTemperature policy) {
        return new DistillOptions(temperature, alpha, divergence, scaleByTemperatureSquared, topKMode, policy, ignoreIndex);
    }

    /**
     * Checks hard labels (n of them) against a student vocabulary: each in [0, v) or the ignore
     * index, else a {@link BadRowException} naming the row. Every backend's loss checks its labels
     * so; a caller of {@code Kernels.distillLossRows} checks them once for all its calls.
     */
    public void checkLabels(int[] labels, int n, int v) {
        for (int r = 0; r < n; r++) checkLabel(r, labels[r], v);
    }

    /** Row r's hard label: in [0, v) or the ignore index, else a {@link BadRowException} naming the row. */
    public void checkLabel(int r, int label, int v) {
        if (label != ignoreIndex && (label < 0 || label >= v)) {
            throw new BadRowException(r, "label " + label + " is outside [0, " + v + ") and is not the ignore index " + ignoreIndex);
        }
    }

    /**
     * Checks these options against a teacher and a student vocabulary (every backend calls this
     * before its kernel): sizes, labels for alpha &gt; 0, and what sparse targets support.
     */
    public void check(TeacherTargets teacher, boolean hasLabels, int v) {
        if (v < teacher.vocab()) {
            throw new IllegalArgumentException("student vocabulary " + v + " is smaller than the teacher's " + teacher.vocab()
                    + " (a larger student vocabulary is allowed: its extra columns get zero teacher mass)");
        }
        if (!hasLabels && alpha > 0) {
            throw new IllegalArgumentException("alpha = " + alpha + " weights a hard-label loss, but no labels were given");
        }
        switch (teacher) {
            case TeacherTargets.Sampled sm -> {
                if (!(divergence instanceof Divergence.ForwardKl)) {
                    throw new IllegalArgumentException("sampled teacher targets support forward KL only (they estimate p, "
                            + "which reverse KL and JSD need everywhere); got " + divergence);
                }
                if (sm.shardTemperature() != temperature) {
                    throw new IllegalArgumentException("sampled targets were drawn at temperature " + sm.shardTemperature()
                            + " and cannot be reweighted to temperature " + temperature);
                }
            }
            case TeacherTargets.TopK k -> {
                if (k.shardTemperature() != temperature && topKMode == DistillOptions.TopKMode.TAIL_BUCKET
                        && sparseTemperature == DistillOptions.SparseTemperature.REQUIRE_MATCH) {
                    throw new IllegalArgumentException("top-k shard logsumexp is at temperature " + k.shardTemperature()
                            + " but the loss runs at " + temperature + "; choose sparseTemperature=RESCALE_TOPK "
                            + "(keeps the shard's tail mass) or topKMode=RENORMALIZE explicitly");
                }
            }
            case TeacherTargets.Dense d -> {
            }
            case TeacherTargets.Mixture m -> {
            }
        }
    }

    /** The factor on (q − target) in dL/ds: T with T² scaling (T² · 1/T), else 1/T. */
    public float gradientTemperatureFactor() {
        return scaleByTemperatureSquared ? temperature : 1f / temperature;
    }

    /** The factor on the divergence value: T² or 1. */
    public float divergenceScale() {
        return scaleByTemperatureSquared ? temperature * temperature : 1f;
    }
}
