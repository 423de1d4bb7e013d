package dev.distillery.bench;

import dev.distillery.runtime.nn.Gpt2Config;

/** The benchmark configurations named in the README's performance table. */
public enum StudentConfigs {
    /** vocab 4096, ctx 128, 4 layers, d 256, 4 heads, batch 8. */
    A(new Gpt2Config(4096, 128, 4, 256, 4), 8),
    /** vocab 32000, ctx 256, 6 layers, d 384, 6 heads, batch 8. */
    B(new Gpt2Config(32000, 256, 6, 384, 6), 8),
    /** B's model over a long context: vocab 32000, ctx 2048, 6 layers, d 384, 6 heads, batch 1. */
    L(new Gpt2Config(32000, 2048, 6, 384, 6), 1),
    /** A small shape for smoke runs of the benchmark harness itself. */
    TINY(new Gpt2Config(97, 16, 2, 32, 4), 2);

    public final Gpt2Config model;
    public final int batch;

    StudentConfigs(Gpt2Config model, int batch) {
        this.model = model;
        this.batch = batch;
    }

    public int tokensPerStep() {
        return batch * model.contextLength();
    }
}
