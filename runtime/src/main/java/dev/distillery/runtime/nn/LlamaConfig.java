package dev.distillery.runtime.nn;

/**
 * The architecture of a Llama-family model (Llama 2/3, Qwen2, Mistral without sliding windows):
 * RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, no biases except Qwen2's q/k/v.
 *
 * @param family       which Hugging Face architecture it is read from and written as
 * @param heads        query heads; {@code kvHeads} key/value heads divide them
 * @param headSize     per head (hidden / heads unless the config says otherwise)
 * @param intermediate the SwiGLU width
 * @param rope         the rotary embedding's base and scaling
 * @param tied         the LM head is the token embedding
 */
public record LlamaConfig(Family family, int vocabSize, int contextLength, int layers, int hidden, int heads, int kvHeads,
                          int headSize, int intermediate, float rmsEps, Rope rope, boolean tied) {

    /** The Hugging Face architectures of the family: their {@code model_type} and class. */
    public enum Family {
        LLAMA("llama", "LlamaForCausalLM"), QWEN2("qwen2", "Qwen2ForCausalLM"), MISTRAL("mistral", "MistralForCausalLM");

        public final String modelType, architecture;

        Family(String modelType, String architecture) {
            this.modelType = modelType;
            this.architecture = architecture;
        }

        /** Qwen2 alone has biases on the q, k and v projections. */
        public boolean qkvBias() {
            return this == QWEN2;
        }

        /** The family of a config's {@code model_type}, or null. */
        public static Family of(String modelType) {
            for (Family f : values()) if (f.modelType.equals(modelType)) return f;
            return null;
        }
    }

    /**
     * Rotary positions: {@code theta} (rope_theta) and, for Llama 3's long context, its rescaling
     * of the frequencies (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
     */
    public record Rope(double theta, Llama3Scaling llama3) {
        public record Llama3Scaling(double factor, double lowFreqFactor, double highFreqFactor, double originalContext) {
        }

        public static Rope plain(double theta) {
            return new Rope(theta, null);
        }

        /**
         * The frequency of each of the headSize/2 pairs, in float as transformers keeps them
         * ({@code _compute_default_rope_parameters}, {@code _compute_llama3_parameters}).
         */
        public double[] inverseFrequencies(int headSize) {
            double[] f = new double[headSize / 2];
            for (int j = 0; j < f.length; j++) f[j] = (float) (1.0 / Math.pow(theta, 2.0 * j / headSize));
            if (llama3 == null) return f;
            double lowWavelen = llama3.originalContext / llama3.lowFreqFactor, highWavelen = llama3.originalContext / llama3.highFreqFactor;
            for (int j = 0; j < f.length; j++) {
                double wavelen = 2 * Math.PI / f[j];
                double scaled = wavelen > lowWavelen ? f[j] / llama3.factor : f[j];
                if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
                    double smooth = (llama3.originalContext / wavelen - llama3.lowFreqFactor) / (llama3.highFreqFactor - llama3.lowFreqFactor);
                    scaled = (1 - smooth) * scaled / llama3.factor + smooth * scaled;
                }
                f[j] = (float) scaled;
            }
            return f;
        }
    }

    public LlamaConfig {
        require(vocabSize > 0 && vocabSize <= LanguageModel.MAX_VOCAB, "vocab_size", vocabSize);
        require(contextLength > 0 && contextLength <= LanguageModel.MAX_CONTEXT, "max_position_embeddings", contextLength);
        require(layers > 0 && layers <= LanguageModel.MAX_LAYERS, "num_hidden_layers", layers);
        require(hidden > 0 && hidden <= LanguageModel.MAX_CHANNELS, "hidden_size", hidden);
        require(intermediate > 0 && intermediate <= 4 * LanguageModel.MAX_CHANNELS, "intermediate_size", intermediate);
        require(heads > 0 && kvHeads > 0 && heads % kvHeads == 0, "num_key_value_heads (must divide num_attention_heads " + heads + ")", kvHeads);
        require(headSize > 0 && headSize % 2 == 0 && (long) heads * headSize <= LanguageModel.MAX_CHANNELS, "head_dim (even)", headSize);
        if (!(rmsEps > 0)) throw new IllegalArgumentException("'rms_norm_eps' must be positive: " + rmsEps);
        if (!(rope.theta() > 1)) throw new IllegalArgumentException("'rope_theta' must be above 1: " + rope.theta());
        long parameters = parameterCount(family, vocabSize, layers, hidden, heads * headSize, kvHeads * headSize, intermediate, tied);
        if (parameters > LanguageModel.MAX_PARAMETERS) {
            throw new IllegalArgumentException("the model would have " + parameters + " parameters, more than the " + LanguageModel.MAX_PARAMETERS + " allowed");
        }
    }

    private static void require(boolean ok, String key, long value) {
        if (!ok) throw new IllegalArgumentException("'" + key + "' is out of range: " + value);
    }

    private static long parameterCount(Family family, long vocab, long layers, long hidden, long attention, long kv, long inter, boolean tied) {
        long perLayer = 2 * hidden + hidden * attention + 2 * hidden * kv + attention * hidden + 3 * hidden * inter
                + (family.qkvBias() ? attention + 2 * kv : 0);
        return vocab * hidden * (tied ? 1 : 2) + layers * perLayer + hidden;
    }

    /** Query heads per key/value head. */
    public int group() {
        return heads / kvHeads;
    }

    /** The width of the attention: heads × headSize. */
    public int attention() {
        return heads * headSize;
    }

    /** The width of the keys and of the values: kvHeads × headSize. */
    public int keyValue() {
        return kvHeads * headSize;
    }

    public boolean qkvBias() {
        return family.qkvBias();
    }

    /** The same model with {@code n} blocks (a student taken from chosen blocks of a teacher). */
    public LlamaConfig withLayers(int n) {
        return new LlamaConfig(family, vocabSize, contextLength, n, hidden, heads, kvHeads, headSize, intermediate, rmsEps, rope, tied);
    }
}
