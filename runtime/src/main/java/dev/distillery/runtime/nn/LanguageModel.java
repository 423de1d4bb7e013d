package dev.distillery.runtime.nn;

import dev.distillery.runtime.ParameterStore;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;

/**
 * A causal language model of one of the families this code computes, its parameters in one
 * {@link ParameterStore}: what a training session trains, an evaluator scores, a generator samples
 * and a teacher runs forward. Parameter names are the family's Hugging Face names, so a checkpoint
 * is the model's safetensors as it is.
 */
public sealed interface LanguageModel extends AutoCloseable permits Gpt2, Llama {

    /** Bounds checked before anything is allocated: past them a size is a typo, not a model. */
    int MAX_VOCAB = 1 << 24, MAX_CONTEXT = 1 << 20, MAX_LAYERS = 1024, MAX_CHANNELS = 1 << 16;
    /** At most 2^31 parameters: with gradients and two AdamW moments, 32 GB. */
    long MAX_PARAMETERS = 1L << 31;

    int vocabSize();

    int contextLength();

    /** The width of the final hidden state: the LM head's input. */
    int width();

    int layers();

    /** Query heads of each layer's attention. */
    int heads();

    ParameterStore parameters();

    /** The family's own initialisation, from one seeded generator: a seed fixes the model bit for bit. */
    void initialize(long seed);

    /**
     * The final norm's output (b·t, width) for int32 tokens (b, t), t ≤ contextLength: the input of
     * the LM head ({@link #lmHeadWeight()}) and of the chunked LM head + distillation loss. Every op
     * is recorded on the tape of {@code ops} when it is enabled; when it is not, each block's
     * activations are freed as soon as the next block has read them.
     */
    default Tensor hidden(DifferentiableOps ops, Tensor tokens, int b, int t) {
        return hidden(ops, tokens, b, t, null);
    }

    /**
     * As {@link #hidden(DifferentiableOps, Tensor, int, int)}, showing {@code tap} (when not null)
     * every hidden state on the way, numbered as transformers' {@code output_hidden_states}
     * numbers them: 0 the embeddings' output, l the residual stream after block l (1 ≤ l &lt;
     * layers()), layers() the final norm's output. Not recording, a tapped tensor is overwritten
     * by the next block: the tap must copy what it keeps before it returns.
     */
    Tensor hidden(DifferentiableOps ops, Tensor tokens, int b, int t, LayerTap tap);

    /** Sees each hidden state (b·t, width) of a forward pass as it is computed. */
    @FunctionalInterface
    interface LayerTap {
        void observe(int index, Tensor hidden);
    }

    /** The LM head's weight (vocab, width), PyTorch's (out, in) layout: the token embedding when tied. */
    Tensor lmHeadWeight();

    /** Logits (b·t, vocab). */
    default Tensor forward(DifferentiableOps ops, Tensor tokens, int b, int t) {
        return ops.projection(hidden(ops, tokens, b, t), lmHeadWeight(), null);
    }

    /**
     * An empty cache of this model's keys and values for up to {@code batch} sequences of up to
     * {@code maxLen} tokens each (at most its context), decoded together.
     */
    KvCache newCache(int batch, int maxLen);

    /**
     * Generation with a KV cache: the logits (b, vocab) after {@code tokens} (int32 (b, 1), one
     * token for each of b ≤ the cache's batch sequences), which enter at position
     * {@code cache.length()}; their keys and values join the cache. Each token costs one row
     * through the blocks and attention over its sequence's cached rows, not the whole window, and
     * the b rows go through each GEMM together. Forward only: nothing is recorded.
     */
    Tensor decode(DifferentiableOps ops, KvCache cache, Tensor tokens);

    /**
     * Windows into an empty cache in one forward pass: the logits (b, vocab) after the last token
     * of each of the b windows in {@code tokens} (int32 (b, t)), at positions 0..t−1, every
     * block's keys and values of the t positions left in the cache for {@link #decode} to go on
     * from. The same logits and cache as t decodes, up to rounding, for the price of one forward
     * instead of t one-row passes (prompts, or windows that slid past the context). Forward only.
     */
    Tensor prefill(DifferentiableOps ops, KvCache cache, Tensor tokens, int t);

    /**
     * Row t − 1 of each of the b windows of x (b·t, width): a view of it when b is 1, else the b
     * rows gathered (by the kernels' head copy, one head of the whole width) into (b, width) of
     * the workspace of {@code ops}.
     */
    static Tensor lastRows(DifferentiableOps ops, Tensor x, int b, int t) {
        int width = (int) (x.numel() / ((long) b * t));
        if (b == 1) return x.slice((long) (t - 1) * width, 1, width);
        Tensor rows = ops.workspace().tensor(x.name() + ".last", b, width);
        ops.kernels().repeatHeadsForward(rows.data(), width, 0, x.data(), t * width, (t - 1) * width, b, 1, 1, width);
        return rows;
    }

    /** One line for logs: the family and its sizes. */
    String describe();

    @Override
    void close();
}
