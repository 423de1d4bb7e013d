package dev.distillery.runtime.nn;

/**
 * The architecture of a Llama-family model (Llama 2/3, Qwen2, Mistral without sliding windows):
 * RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, no biases except Qwen2's q/k/v.
 *
 * @param heads        query heads; {@code kvHeads} key/value heads divide them
 * @param headSize     per head (hidden / heads unless the config says otherwise)
 * @param intermediate the SwiGLU width
 * @param invFreq      the rotary frequency of each of the headSize/2 pairs, rope_scaling applied
 * @param qkvBias      q/k/v projections with biases (Qwen2)
 * @param tied         the LM head is the token embedding
 */
public record LlamaConfig(int vocabSize, int contextLength, int layers, int hidden, int heads, int kvHeads, int headSize,
                          int intermediate, float rmsEps, double[] invFreq, boolean qkvBias, boolean tied) {

    public LlamaConfig {
        require(vocabSize > 0 && vocabSize <= TransformerConfig.MAX_VOCAB, "vocab_size", vocabSize);
        require(contextLength > 0 && contextLength <= TransformerConfig.MAX_CONTEXT, "max_position_embeddings", contextLength);
        require(layers > 0 && layers <= TransformerConfig.MAX_LAYERS, "num_hidden_layers", layers);
        require(hidden > 0 && hidden <= TransformerConfig.MAX_CHANNELS, "hidden_size", hidden);
        require(intermediate > 0 && intermediate <= 4 * TransformerConfig.MAX_CHANNELS, "intermediate_size", intermediate);
        require(heads > 0 && kvHeads > 0 && heads % kvHeads == 0, "num_key_value_heads (must divide num_attention_heads " + heads + ")", kvHeads);
        require(headSize > 0 && headSize % 2 == 0 && (long) heads * headSize <= TransformerConfig.MAX_CHANNELS, "head_dim (even)", headSize);
        require(invFreq.length == headSize / 2, "rotary frequencies", invFreq.length);
    }

    private static void require(boolean ok, String key, long value) {
        if (!ok) throw new IllegalArgumentException("'" + key + "' is out of range: " + value);
    }

    /** Query heads per key/value head. */
    public int group() {
        return heads / kvHeads;
    }

    /** The width of the attention: heads × headSize. */
    public int attention() {
        return heads * headSize;
    }
}
