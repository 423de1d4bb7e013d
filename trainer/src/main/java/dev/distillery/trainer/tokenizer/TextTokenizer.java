package dev.distillery.trainer.tokenizer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.OptionalInt;

/**
 * An existing tokenizer, run exactly as its own library runs it: a Hugging Face {@code tokenizer.json}
 * through the Rust {@code tokenizers} (DJL's binding), or a tiktoken encoding through jtokkit. Our
 * {@link BytePairTokenizer} only trains new tokenizers (and writes them as {@code tokenizer.json}).
 */
public sealed interface TextTokenizer extends AutoCloseable permits HuggingFaceTokenizerFile, TiktokenEncoding {

    /** What a manifest calls it: the tiktoken encoding's name, or the tokenizer.json path. */
    String name();

    /** Every id is in [0, vocabSize): the model's embedding needs at least this many rows. */
    int vocabSize();

    /**
     * The ids of {@code text}, with no tokens added; a special token written in the text is its id
     * (as {@code tokenizers}' {@code encode(text, add_special_tokens=False)} does).
     */
    int[] encode(String text);

    /**
     * The ids of each text, as {@link #encode(String)}; {@code threads} encode them at once, on the
     * library's own pool where it has one.
     */
    int[][] encodeAll(java.util.List<String> texts, java.util.concurrent.ExecutorService threads) throws java.io.IOException;

    String decode(int[] ids);

    /** The end-of-sequence (end-of-text) token, if the tokenizer has one. */
    OptionalInt eos();

    /** The beginning-of-sequence token, if the tokenizer has one. */
    OptionalInt bos();

    /**
     * Whether encoding a text in pieces cut where {@code CorpusEncoder} cuts (after a lone '\n',
     * before a space that starts a word) gives
     * the ids of encoding it whole: true for the byte-level BPEs (GPT-2, tiktoken, Llama 3, Qwen2),
     * whose pre-tokenizer always splits there; false where a normalizer or a Metaspace prefix (the
     * SentencePiece style) would see each piece as the start of a text.
     */
    boolean cutsAfterNewlines();

    @Override
    void close();

    /**
     * {@code spec} is a tiktoken encoding's name ({@code gpt2}/{@code r50k_base}, {@code p50k_base},
     * {@code cl100k_base}, {@code o200k_base}), a {@code tokenizer.json}, or a folder that holds one.
     */
    static TextTokenizer open(String spec) throws IOException {
        if (TiktokenEncoding.NAMES.contains(spec)) return TiktokenEncoding.of(spec);
        Path path = Path.of(spec);
        if (Files.isDirectory(path)) path = path.resolve("tokenizer.json");
        if (!Files.isRegularFile(path)) {
            throw new IOException(spec + ": neither a tokenizer.json (or a folder holding one) nor a tiktoken encoding ("
                    + String.join(", ", TiktokenEncoding.NAMES) + ")");
        }
        return HuggingFaceTokenizerFile.open(path);
    }
}
