package dev.distillery.runtime.nn;

import java.lang.foreign.MemorySegment;

/** A model's logits for batches of token windows, forward only: what a teacher gives. */
public interface LanguageModelForward extends AutoCloseable {

    int vocabSize();

    int contextLength();

    /**
     * The logits (b·t, vocab) of the windows {@code ids} (b·t int32, host memory), readable on the
     * host, valid until the next call.
     */
    MemorySegment logits(MemorySegment ids);

    /** Per row of the last {@link #logits}: {@code log Σ_j exp(logit_j / temperature)}. */
    float[] logsumexpOfLastLogits(double temperature);

    @Override
    void close();
}
