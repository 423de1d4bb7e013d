package dev.distillery.runtime.optim;

import java.lang.foreign.MemorySegment;
import java.util.List;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.runtime.ParameterStore;

/**
 * AdamW (decoupled weight decay, bias correction) over a {@link ParameterStore}. The moments live
 * in two persistent blocks with the store's layout. Weight decay applies to matrices (rank ≥ 2:
 * embeddings and linear weights) and not to biases or layernorm parameters, as in GPT-2 training.
 */
public final class AdamW {

    public record Config(double beta1, double beta2, double eps, double weightDecay) {
        public Config {
            if (beta1 < 0 || beta1 >= 1) throw new IllegalArgumentException("beta1 must be in [0, 1), got " + beta1);
            if (beta2 < 0 || beta2 >= 1) throw new IllegalArgumentException("beta2 must be in [0, 1), got " + beta2);
            if (!(eps > 0)) throw new IllegalArgumentException("eps must be positive, got " + eps);
            if (weightDecay < 0) throw new IllegalArgumentException("weightDecay must be >= 0, got " + weightDecay);
        }

        /** GPT-2 / llm.c defaults: β = (0.9, 0.95), eps 1e-8, decay 0.1. */
        public static Config defaults() {
            return new Config(0.9, 0.95, 1e-8, 0.1);
        }
    }

    private final ParameterStore store;
    private final Kernels kernels;
    private final Config config;
    private final MemorySegment m;
    private final MemorySegment v;
    private final ParameterSpans spans;
    private int step;

    public AdamW(ParameterStore store, Kernels kernels, Config config) {
        this.store = store;
        this.kernels = kernels;
        this.config = config;
        this.m = store.allocateLikeBlock();
        this.v = store.allocateLikeBlock();
        this.spans = spans(store, config);
    }

    public int step() {
        return step;
    }

    /** For resuming from a checkpoint. */
    public void setStep(int step) {
        this.step = step;
    }

    /** The kernels whose memory holds the moments. */
    public Kernels kernels() {
        return kernels;
    }

    /** m, in the kernels' memory (read it through {@link Kernels#hostView}). */
    public MemorySegment firstMoments() {
        return m;
    }

    /** v, in the kernels' memory. */
    public MemorySegment secondMoments() {
        return v;
    }

    /** Σ g² over every gradient of the store, in float64. */
    public double gradSumOfSquares() {
        return kernels.sumOfSquares(store.gradBlock(), store.blockElements());
    }

    /** The parameters this optimizer updates. */
    public ParameterStore store() {
        return store;
    }

    /** One update of every parameter at learning rate lr, the whole block at once ({@link Kernels#adamWSpans}). */
    public void update(double lr) {
        update(lr, 1f);
    }

    /**
     * {@link #update(double)} on the gradients times {@code gradScale}, gradient clipping's factor
     * (several stores clipped as one vector each pass theirs), folded into the update's pass over
     * the gradients; they may be left scaled or as they were ({@link Kernels#adamWSpans}).
     */
    public void update(double lr, float gradScale) {
        step++;
        kernels.adamWSpans(store.paramBlock(), store.gradBlock(), m, v, spans, gradScale, (float) lr, (float) config.beta1(),
                (float) config.beta2(), (float) config.eps(), step);
    }

    /** The store's tensors as spans of its block, matrices (rank ≥ 2) with the weight decay, the rest without. */
    private static ParameterSpans spans(ParameterStore store, Config config) {
        var slots = List.copyOf(store.layout().values());
        long[] offsets = new long[slots.size()], lengths = new long[slots.size()];
        float[] decays = new float[slots.size()];
        for (int i = 0; i < slots.size(); i++) {
            var slot = slots.get(i);
            offsets[i] = slot.offset();
            lengths[i] = slot.numel();
            decays[i] = store.get(slot.name()).rank() >= 2 ? (float) config.weightDecay() : 0f;
        }
        return new ParameterSpans(offsets, lengths, decays);
    }
}
