package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.tokenizer.CorpusTokenization;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code tokenize}: train a byte-level BPE on a corpus and write train/val token files. */
@Command(name = "tokenize", mixinStandardHelpOptions = true,
        description = {"Trains a byte-level BPE tokenizer on a corpus (default: the bundled State of the Union slice)",
                "and writes <out>/tokenizer.json (Hugging Face format), <out>/train.bin and <out>/val.bin (llm.c format)."})
public final class TokenizeCommand implements Callable<Integer> {

    @Option(names = "--corpus", description = "A text file or a folder of *.txt (default: the bundled corpus).")
    Path corpus;
    @Option(names = "--vocab", defaultValue = "2048", description = "Vocabulary size, >= 257 (default: ${DEFAULT-VALUE}).")
    int vocab;
    @Option(names = "--val-fraction", defaultValue = "0.1", description = "Share of the text held out, taken from its end (default: ${DEFAULT-VALUE}).")
    double valFraction;
    @Option(names = "--out", required = true, description = "Output folder.")
    Path out;
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter o = spec.commandLine().getOut();
        if (!(valFraction > 0 && valFraction < 1)) throw new CommandLine.ParameterException(spec.commandLine(), "--val-fraction must be in (0, 1), got " + valFraction);
        Corpus c = corpus == null ? Corpus.bundled() : Corpus.load(corpus, spec.commandLine().getErr());
        CorpusTokenization.Result r = CorpusTokenization.run(c, vocab, valFraction, out);
        o.printf("corpus %s: %,d characters -> %,d train + %,d held-out tokens (vocab %d) in %s%n", c.name(), c.text().length(),
                r.trainTokens(), r.valTokens(), r.tokenizer().vocabSize(), out);
        return 0;
    }
}
