package dev.distillery.trainer.tokenizer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.data.TokenFile;

/**
 * A corpus to a tokenizer and two token files: the BPE is trained on the training part only
 * (the first 1 − valFraction of the text, cut at a paragraph break), so held-out text is unseen
 * in every sense.
 */
public final class CorpusTokenization {

    public record Result(BytePairTokenizer tokenizer, Path tokenizerFile, Path train, Path val, int trainTokens, int valTokens) {
    }

    private CorpusTokenization() {
    }

    public static Result run(Corpus corpus, int vocab, double valFraction, Path out) throws IOException {
        String text = corpus.text();
        int cut = (int) (text.length() * (1 - valFraction));
        int para = text.indexOf("\n", cut);
        if (para > 0 && para < text.length() - 1) cut = para + 1;
        String trainText = text.substring(0, cut), valText = text.substring(cut);
        if (trainText.isBlank() || valText.isBlank()) throw new IOException("corpus " + corpus.name() + " is too small to split");
        BytePairTokenizer tok = BytePairTokenizer.train(trainText, vocab);
        Files.createDirectories(out);
        Path tokFile = out.resolve("tokenizer.json"), train = out.resolve("train.bin"), val = out.resolve("val.bin");
        tok.save(tokFile);
        int[] trainIds = tok.encode(trainText), valIds = tok.encode(valText);
        TokenFile.write(train, trainIds);
        TokenFile.write(val, valIds);
        return new Result(tok, tokFile, train, val, trainIds.length, valIds.length);
    }
}
