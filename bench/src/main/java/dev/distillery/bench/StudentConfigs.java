package dev.distillery.bench;

import dev.distillery.runtime.nn.TransformerConfig;

/** The benchmark configurations named in the README's performance table. */
public enum StudentConfigs {
    /** vocab 4096, ctx 128, 4 layers, d 256, 4 heads, batch 8. */
    A(new TransformerConfig(4096, 128, 4, 256, 4), 8),
    /** vocab 32000, ctx 256, 6 layers, d 384, 6 heads, batch 8. */
    B(new TransformerConfig(32000, 256, 6, 384, 6), 8),
    /** A small shape for smoke runs of the benchmark harness itself. */
    TINY(new TransformerConfig(97, 16, 2, 32, 4), 2);

    public final TransformerConfig model;
    public final int batch;

    StudentConfigs(TransformerConfig model, int batch) {
        this.model = model;
        this.batch = batch;
    }

    public int tokensPerStep() {
        return batch * model.contextLength();
    }
}
