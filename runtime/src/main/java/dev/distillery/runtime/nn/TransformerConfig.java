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

    public TransformerConfig {
        require(vocabSize > 0, "vocabSize must be positive, got " + vocabSize);
        require(contextLength > 0, "contextLength must be positive, got " + contextLength);
        require(layers > 0, "layers must be positive, got " + layers);
        require(channels > 0, "channels must be positive, got " + channels);
        require(heads > 0 && channels % heads == 0, "heads (" + heads + ") must divide channels (" + channels + ")");
    }

    private static void require(boolean ok, String message) {
        if (!ok) throw new IllegalArgumentException(message);
    }

    public int headSize() {
        return channels / heads;
    }

    /** Parameters of the model with the LM head tied to the token embedding. */
    public long parameterCount() {
        long c = channels;
        long perLayer = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c);
        return (long) vocabSize * c + (long) contextLength * c + layers * perLayer + 2 * c;
    }
}
