package dev.distillery.runtime.nn;

/**
 * Shape of a GPT-2 style model.
 *
 * @param vocabSize  token ids are in [0, vocabSize)
 * @param contextLength longest sequence (rows of the position embedding)
 * @param layers     transformer blocks
 * @param channels   model width d
 * @param heads      attention heads; must divide channels
 */
public record TransformerConfig(int vocabSize, int contextLength, int layers, int channels, int heads) {

    /** Bounds checked before anything is allocated: past them a size is a typo, not a model. */
    public static final int MAX_VOCAB = 1 << 24, MAX_CONTEXT = 1 << 20, MAX_LAYERS = 1024, MAX_CHANNELS = 1 << 16;
    /** At most 2^31 parameters: with gradients and two AdamW moments, 32 GB. */
    public static final long MAX_PARAMETERS = 1L << 31;

    public TransformerConfig {
        require(vocabSize > 0 && vocabSize <= MAX_VOCAB, "vocabulary size must be in [1, " + MAX_VOCAB + "], got " + vocabSize);
        require(contextLength > 0 && contextLength <= MAX_CONTEXT, "context length must be in [1, " + MAX_CONTEXT + "], got " + contextLength);
        require(layers > 0 && layers <= MAX_LAYERS, "layers must be in [1, " + MAX_LAYERS + "], got " + layers);
        require(channels > 0 && channels <= MAX_CHANNELS, "channels must be in [1, " + MAX_CHANNELS + "], got " + channels);
        require(heads > 0 && channels % heads == 0, "heads (" + heads + ") must divide channels (" + channels + ")");
        long parameters = parameterCount(vocabSize, contextLength, layers, channels);
        require(parameters <= MAX_PARAMETERS, "the model would have " + parameters + " parameters, more than the " + MAX_PARAMETERS
                + " allowed (vocabulary " + vocabSize + ", context " + contextLength + ", " + layers + " layers of " + channels + " channels)");
    }

    private static void require(boolean ok, String message) {
        if (!ok) throw new IllegalArgumentException(message);
    }

    public int headSize() {
        return channels / heads;
    }

    /** Parameters of the model with the LM head tied to the token embedding. */
    public long parameterCount() {
        return parameterCount(vocabSize, contextLength, layers, channels);
    }

    private static long parameterCount(int vocabSize, int contextLength, int layers, int channels) {
        long c = channels;
        long perLayer = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c);
        return (long) vocabSize * c + (long) contextLength * c + layers * perLayer + 2 * c;
    }
}
