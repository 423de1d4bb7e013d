package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.tokenizer.CorpusEncoder;
import dev.distillery.trainer.tokenizer.CorpusTokenization;
import dev.distillery.trainer.tokenizer.HuggingFaceTokenizerFile;
import dev.distillery.trainer.tokenizer.TextTokenizer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code tokenize}: encode a corpus with an existing tokenizer, or train a byte-level BPE on it; write train/val token files. */
@Command(name = "tokenize", mixinStandardHelpOptions = true,
        header = "Encodes a corpus into token files with a teacher's tokenizer, or trains a byte-level BPE.",
        description = {"With --tokenizer: encodes a corpus with that tokenizer (a Hugging Face tokenizer.json, or a "
                + "tiktoken encoding: gpt2, r50k_base, p50k_base, cl100k_base, o200k_base) into <out>/train.bin and "
                + "<out>/val.bin (llm.c format, uint32 where ids pass 65,535), streaming, with progress. Each .txt "
                + "file is a document, each line of a .jsonl file ({\"text\": ...}) one; every document ends with the "
                + "tokenizer's EOS token (--delimiter eos, the default) or starts with its BOS token (--delimiter bos).",
                "Without --tokenizer: trains a byte-level BPE on the corpus (default: the bundled State of the Union "
                + "slice) and writes <out>/tokenizer.json (Hugging Face format), <out>/train.bin and <out>/val.bin."})
public final class TokenizeCommand implements Callable<Integer> {

    @Option(names = "--corpus", description = "A text file, a .jsonl file, or a folder of .txt and .jsonl files (default: the bundled corpus).")
    Path corpus;
    @Option(names = "--tokenizer", paramLabel = "PATH|ENCODING",
            description = "An existing tokenizer: tokenizer.json (or its folder), or gpt2, r50k_base, p50k_base, cl100k_base, o200k_base.")
    String tokenizer;
    @Option(names = "--delimiter", defaultValue = "eos", description = "With --tokenizer: eos ends every document with EOS, bos starts it with BOS (default: ${DEFAULT-VALUE}).")
    String delimiter;
    @Option(names = "--invalid-utf8", defaultValue = "error", description = "error (refuse the file, naming the byte offset) or replace (read as U+FFFD) (default: ${DEFAULT-VALUE}).")
    String invalidUtf8;
    @Option(names = "--threads", defaultValue = "0", description = "Encoding threads, 0 = all cores (default: ${DEFAULT-VALUE}).")
    int threads;
    @Option(names = "--vocab", defaultValue = "2048", description = "Without --tokenizer: the vocabulary to train, >= 257 (default: ${DEFAULT-VALUE}).")
    int vocab;
    @Option(names = "--val-fraction", defaultValue = "0.1", description = "Share of the text held out, taken from its end (default: ${DEFAULT-VALUE}).")
    double valFraction;
    @Option(names = "--out", required = true, description = "Output folder.")
    Path out;
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter o = spec.commandLine().getOut(), e = spec.commandLine().getErr();
        if (tokenizer != null) return encode(o, e);
        if (!(valFraction > 0 && valFraction < 1)) throw usage("--val-fraction must be in (0, 1), got " + valFraction);
        Corpus c = corpus == null ? Corpus.bundled() : Corpus.load(corpus, e);
        CorpusTokenization.Result r = CorpusTokenization.run(c, vocab, valFraction, out);
        o.printf("corpus %s: %,d characters -> %,d train + %,d held-out tokens (vocab %d) in %s%n", c.name(), c.text().length(),
                r.trainTokens(), r.valTokens(), r.tokenizer().vocabSize(), out);
        return 0;
    }

    private int encode(PrintWriter o, PrintWriter e) throws Exception {
        if (!(valFraction >= 0 && valFraction < 1)) throw usage("--val-fraction must be in [0, 1), got " + valFraction);
        if (corpus == null) throw usage("--corpus is required with --tokenizer");
        CorpusEncoder.Delimiter d = switch (delimiter) {
            case "eos" -> CorpusEncoder.Delimiter.EOS;
            case "bos" -> CorpusEncoder.Delimiter.BOS;
            default -> throw usage("--delimiter must be eos or bos, got '" + delimiter + "'");
        };
        boolean replace = switch (invalidUtf8) {
            case "error" -> false;
            case "replace" -> true;
            default -> throw usage("--invalid-utf8 must be error or replace, got '" + invalidUtf8 + "'");
        };
        int n = threads > 0 ? threads : Runtime.getRuntime().availableProcessors();
        try (TextTokenizer tok = TextTokenizer.open(tokenizer)) {
            CorpusEncoder.Result r = CorpusEncoder.run(tok, new CorpusEncoder.Options(List.of(corpus), out, valFraction, d, n, replace, 1 << 16), e);
            if (tok instanceof HuggingFaceTokenizerFile) {
                // beside the tokens, so a run's 'tokenizer' and dump-logits --tokenizer can name the very file
                HuggingFaceTokenizerFile.copyInto(Files.isDirectory(Path.of(tokenizer)) ? Path.of(tokenizer, "tokenizer.json") : Path.of(tokenizer), out);
            }
            o.printf("%s: %,d documents, %,.1f MB -> %,d train + %,d held-out tokens (%s, vocab %,d, %s-delimited) in %.1f s "
                            + "(%,.0f tokens/s on %d threads) in %s%n", corpus, r.documents(), r.bytes() / 1e6, r.trainTokens(), r.valTokens(),
                    tok.name(), tok.vocabSize(), delimiter, r.seconds(), (r.trainTokens() + r.valTokens()) / r.seconds(), n, out);
            if (r.val() != null && r.valTokens() == 0) {
                e.println("warning: val.bin is empty: the held-out share is cut at document or piece starts, and no piece starts in the last "
                        + valFraction + " of the input (one document that cannot be cut?)");
            }
        }
        return 0;
    }

    private CommandLine.ParameterException usage(String message) {
        return new CommandLine.ParameterException(spec.commandLine(), message);
    }
}
