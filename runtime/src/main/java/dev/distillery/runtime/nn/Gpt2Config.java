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
public record Gpt2Config(int vocabSize, int contextLength, int layers, int channels, int heads) {

    public Gpt2Config {
        require(vocabSize > 0 && vocabSize <= LanguageModel.MAX_VOCAB, "vocabulary size must be in [1, " + LanguageModel.MAX_VOCAB + "], got " + vocabSize);
        require(contextLength > 0 && contextLength <= LanguageModel.MAX_CONTEXT, "context length must be in [1, " + LanguageModel.MAX_CONTEXT + "], got " + contextLength);
        require(layers > 0 && layers <= LanguageModel.MAX_LAYERS, "layers must be in [1, " + LanguageModel.MAX_LAYERS + "], got " + layers);
        require(channels > 0 && channels <= LanguageModel.MAX_CHANNELS, "channels must be in [1, " + LanguageModel.MAX_CHANNELS + "], got " + channels);
        require(heads > 0 && channels % heads == 0, "heads (" + heads + ") must divide channels (" + channels + ")");
        long parameters = parameterCount(vocabSize, contextLength, layers, channels);
        require(parameters <= LanguageModel.MAX_PARAMETERS, "the model would have " + parameters + " parameters, more than the " + LanguageModel.MAX_PARAMETERS
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
