package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.Callable;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.TextGenerator;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.loop.StopRequests;
import dev.distillery.trainer.loop.TrainingLoop;
import dev.distillery.trainer.report.Progress;
import dev.distillery.trainer.tokenizer.TextTokenizer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code generate}: sample text from a checkpoint, or write a sequence-level KD dataset. */
@Command(name = "generate", mixinStandardHelpOptions = true,
        header = "Samples text from a checkpoint, or writes its generations as a sequence-level KD dataset.",
        description = {"Samples text from a checkpoint (temperature, top-k) and reports tokens/s. The first second or so of a run goes "
                + "to the JVM compiling the decoding, so a run of a few hundred tokens reports far less than the warm rate.",
                "With --kd-out, writes the model's generations as a token file: a sequence-level KD dataset (train a "
                + "student on it with 'teacher train --tokens' to use the teacher's generations as hard labels).",
                "SIGTERM or Ctrl-C stops it between batches: the generations done are printed or written, and it exits with status 4."})
public final class GenerateCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, description = "Checkpoint folder (config.json, model.safetensors, tokenizer.json).")
    Path model;
    @Option(names = "--prompt", defaultValue = "", description = "Text to continue (default: start from the end-of-text token).")
    String prompt;
    @Option(names = "--tokens", defaultValue = "100", description = "Tokens to generate per sample (default: ${DEFAULT-VALUE}).")
    int count;
    @Option(names = "--temperature", description = "Sampling temperature, 0 = greedy (default: 0.8; with --kd-out 0.7 over the whole vocabulary, the "
            + "best of 1.0 and 0.7 for sequence-level KD on the demo corpus: docs/PERFORMANCE.md).")
    Double temperature;
    @Option(names = "--top-k", description = "Sample among the k most likely tokens, 0 = all (default: 40; with --kd-out 0).")
    Integer topK;
    @Option(names = "--seed", defaultValue = "1234", description = "Sampling seed (default: ${DEFAULT-VALUE}).")
    long seed;
    @Option(names = "--kd-out", description = "Write this many --kd-samples generations to this token file instead of printing.")
    Path kdOut;
    @Option(names = "--kd-samples", defaultValue = "64", description = "Generations in the KD dataset (default: ${DEFAULT-VALUE}).")
    int kdSamples;
    @Option(names = "--kd-prompts", description = "With --kd-out: start each generation from --prompt-tokens consecutive tokens at a seeded random "
            + "place of this token file (real text, such as the training data) instead of the start token.")
    Path kdPrompts;
    @Option(names = "--prompt-tokens", defaultValue = "16", description = "Tokens of each --kd-prompts prompt (default: ${DEFAULT-VALUE}).")
    int promptTokens;
    @Option(names = "--prompt-file", description = "A UTF-8 text file of prompts, one a line (blank lines skipped): each is continued "
            + "--tokens tokens, printed in the file's order (or written with --kd-out). Prompts decode --batch at a time in order of "
            + "token length, a batch's lengths within a quarter of --tokens of each other.")
    Path promptFile;
    @Option(names = "--samples", defaultValue = "1", description = "Continuations of the prompt to print, or of each --prompt-file prompt to "
            + "print or write (default: ${DEFAULT-VALUE}), decoded together. The first of each draws as a run with --samples 1 does, "
            + "each other from its own generator.")
    int samples;
    @Option(names = "--stop-at-eos", description = "End a continuation at the tokenizer's end-of-sequence token, as Hugging Face's "
            + "generate does (printed without it; with --kd-out kept as the generation's last token). Without it each goes on for --tokens.")
    boolean stopAtEos;
    @Option(names = {"--batch", "--kd-batch"}, defaultValue = "32", description = "Samples decoded together (--samples' or --kd-out's), "
            + "each step's rows through every GEMM at once (default: ${DEFAULT-VALUE}). Each sample draws from its own generator: the "
            + "batch changes a sample only where a GEMM's last bits tip a draw.")
    int batch;
    @Mixin
    DeviceOptions device;
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;
    /** The lines of --prompt-file, each continued --samples times. */
    private int filePrompts;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        checkOptions();
        Path tokFile = model.resolve("tokenizer.json");
        if (!Files.isDirectory(model)) throw new java.nio.file.NoSuchFileException(model.toString());
        if (!Files.isRegularFile(tokFile)) throw new java.io.IOException(model + ": no tokenizer.json (generate needs the checkpoint's tokenizer)");
        boolean llama = ModelFiles.isLlama(model);
        try (TextTokenizer tok = TextTokenizer.open(tokFile.toString()); Kernels kernels = device.open(0, out);
             LanguageModel m = ModelFiles.readTeacher(model, kernels)) {
            int modelVocab = m.vocabSize();
            // larger: a prompt can hold ids the model lacks; smaller: sampled ids past the tokenizer's decode to nothing, which
            // the Llama family allows (its vocabularies are padded to a multiple of 64 or more), GPT-2 checkpoints here do not
            if (tok.vocabSize() > modelVocab || (!llama && tok.vocabSize() != modelVocab)) {
                throw new java.io.IOException(tokFile + " holds " + tok.vocabSize() + " tokens but the model's vocabulary is "
                        + modelVocab + " (" + model.resolve("config.json") + "): generate needs the tokenizer the model was trained with");
            }
            List<int[]> prompts = prompts(tok, llama, modelVocab);
            int stop = TextGenerator.NO_STOP;
            if (stopAtEos) {
                stop = tok.eos().orElseThrow(() -> new java.io.IOException(tokFile + " names no end-of-sequence token (--stop-at-eos)"));
                if (stop >= modelVocab) throw new java.io.IOException(tokFile + ": its end-of-sequence token " + stop + " is outside the model's vocabulary of " + modelVocab);
            }
            try (TextGenerator gen = new TextGenerator(m, kernels, Math.min(batch, prompts.size()))) {
                return generate(out, tok, gen, prompts, stop);
            }
        }
    }

    /** The options' ranges, before a model is loaded: a mistyped option fails in the time it takes to read it. */
    private void checkOptions() {
        CommandLine cl = spec.commandLine();
        if (count < 1) throw new CommandLine.ParameterException(cl, "--tokens must be >= 1, got " + count);
        if (temperature != null && !(temperature >= 0 && Double.isFinite(temperature))) {
            throw new CommandLine.ParameterException(cl, "--temperature must be a finite number >= 0 (0 = greedy), got " + temperature);
        }
        if (topK != null && topK < 0) throw new CommandLine.ParameterException(cl, "--top-k must be >= 0 (0 = all), got " + topK);
        if (kdOut != null && kdSamples < 1) throw new CommandLine.ParameterException(cl, "--kd-samples must be >= 1, got " + kdSamples);
        if (batch < 1) throw new CommandLine.ParameterException(cl, "--batch must be >= 1, got " + batch);
        if (samples < 1) throw new CommandLine.ParameterException(cl, "--samples must be >= 1, got " + samples);
        if (samples > 1 && kdOut != null && promptFile == null) {
            throw new CommandLine.ParameterException(cl, "--samples is for printed text or --prompt-file; with --kd-out, give --kd-samples");
        }
        if (kdPrompts != null && kdOut == null) throw new CommandLine.ParameterException(cl, "--kd-prompts needs --kd-out");
        if (promptFile != null && (!prompt.isEmpty() || kdPrompts != null || cl.getParseResult().hasMatchedOption("--kd-samples"))) {
            throw new CommandLine.ParameterException(cl, "--prompt-file gives the prompts: leave out --prompt, --kd-prompts and --kd-samples "
                    + "(--samples N continues each N times)");
        }
        if (promptFile != null && !Files.isRegularFile(promptFile)) throw new CommandLine.ParameterException(cl, promptFile + ": no such file (--prompt-file)");
    }

    /**
     * What to continue: each line of --prompt-file --samples times (a line's samples side by side);
     * with --kd-out, --kd-samples starts (the start token, or windows of --kd-prompts at places drawn
     * from --seed); else --samples copies of the prompt.
     */
    private List<int[]> prompts(TextTokenizer tok, boolean llama, int vocab) throws java.io.IOException {
        if (promptFile != null) {
            List<int[]> lines = readPrompts(tok), each = new ArrayList<>();
            filePrompts = lines.size();
            for (int[] line : lines) each.addAll(Collections.nCopies(samples, line));
            return each;
        }
        if (kdOut == null || kdPrompts == null) return Collections.nCopies(kdOut == null ? samples : kdSamples, start(tok, llama));
        try (TokenFile file = TokenFile.open(kdPrompts, vocab, "the model's")) {
            if (promptTokens < 1 || file.size() < promptTokens) {
                throw new CommandLine.ParameterException(spec.commandLine(), "--prompt-tokens " + promptTokens + " must be in [1, "
                        + file.size() + "] (the tokens of " + kdPrompts + ")");
            }
            Rng places = new Rng(seed);
            List<int[]> prompts = new ArrayList<>();
            for (int i = 0; i < kdSamples; i++) {
                int[] window = new int[promptTokens];
                file.read((long) (places.nextDouble() * (file.size() - promptTokens + 1)), promptTokens, window);
                prompts.add(window);
            }
            return prompts;
        }
    }

    /** --prompt, or from nothing: GPT-2 starts after its end-of-text token, the Llama family after its BOS. */
    private int[] start(TextTokenizer tok, boolean llama) throws java.io.IOException {
        if (!prompt.isEmpty()) return tok.encode(prompt);
        var first = llama && tok.bos().isPresent() ? tok.bos() : tok.eos();
        return new int[]{first.orElseThrow(() -> new java.io.IOException(model.resolve("tokenizer.json")
                + " names no token to start from; give a --prompt"))};
    }

    /**
     * Prompt i's own generator: --samples' first draws from --seed as a lone run does, and every
     * other sample, KD sample or prompt of the file from --seed mixed with a number of its own, so
     * that no text depends on --batch. A file's line p is numbered p in its first sample, as with
     * --samples 1, and past the file's lines in its others.
     */
    private Rng generator(int i) {
        if (promptFile == null && kdOut == null) return new Rng(i == 0 ? seed : seed ^ (0x9E3779B97F4A7C15L * i));
        int number = i;
        if (promptFile != null) {
            int line = i / samples, sample = i % samples;
            number = sample == 0 ? line : filePrompts + line * (samples - 1) + sample - 1;
        }
        return new Rng(seed ^ (0x9E3779B97F4A7C15L * (number + 1)));
    }

    /** Every prompt continued --tokens tokens, then printed in order or written to --kd-out. */
    private int generate(PrintWriter out, TextTokenizer tok, TextGenerator gen, List<int[]> prompts, int stop) throws java.io.IOException {
        double t = temperature != null ? temperature : kdOut != null ? 0.7 : 0.8;
        int k = topK != null ? topK : kdOut != null ? 0 : 40;
        long t0 = System.nanoTime();
        int[][] continued = continueAll(gen, prompts, t, k, stop);
        double seconds = (System.nanoTime() - t0) / 1e9;
        int finished = 0;
        long tokens = 0;   // generated, the prompts not counted
        for (int i = 0; i < continued.length; i++) {
            if (continued[i] == null) continue;
            finished++;
            tokens += continued[i].length - prompts.get(i).length;
        }
        String stopped = finished == continued.length ? null : "stopped by " + StopRequests.requested() + " after " + finished + " of "
                + continued.length + " generations" + (promptFile != null ? " (the prompts go shortest first)" : "");
        if (kdOut != null) {
            int[] all = Arrays.stream(continued).filter(java.util.Objects::nonNull).flatMapToInt(Arrays::stream).toArray();
            TokenFile.write(kdOut, all);
            String from = promptFile != null ? ", from the prompts of " + promptFile
                    : kdPrompts != null ? ", from " + promptTokens + "-token prompts of " + kdPrompts : ", from the start token";
            out.printf("wrote %d generations (%,d tokens; temperature %s, top-k %d%s) to %s%n", finished, all.length, t, k, from, kdOut);
            if (stopped != null) throw new TrainingLoop.StoppedBySignalException(stopped + ": " + kdOut + " holds those done, in their order");
            return 0;
        }
        boolean first = true;
        for (int i = 0; i < continued.length; i++) {
            if (continued[i] == null) continue;
            if (continued.length > 1) out.printf("%s── %s ──%n", first ? "" : "\n", promptFile == null ? "sample " + (i + 1) + " of " + continued.length
                    : "prompt " + (i / samples + 1) + " of " + filePrompts + (samples > 1 ? ", sample " + (i % samples + 1) + " of " + samples : ""));
            boolean fromStart = promptFile == null && prompt.isEmpty();   // the start token is not text
            int[] seq = continued[i];
            boolean ended = stop != TextGenerator.NO_STOP && seq.length > prompts.get(i).length && seq[seq.length - 1] == stop;
            out.println(tok.decode(Arrays.copyOfRange(seq, fromStart ? 1 : 0, seq.length - (ended ? 1 : 0))));
            first = false;
        }
        out.printf("%n(%d tokens in %.2f s: %.1f tokens/s)%n", tokens, seconds, tokens / seconds);
        if (stopped != null) throw new TrainingLoop.StoppedBySignalException(stopped + ": those done are printed above");
        return 0;
    }

    /** The non-blank lines of --prompt-file, encoded. */
    private List<int[]> readPrompts(TextTokenizer tok) throws java.io.IOException {
        List<int[]> prompts = new ArrayList<>();
        List<String> lines;
        try {
            lines = Files.readAllLines(promptFile, java.nio.charset.StandardCharsets.UTF_8);
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new java.io.IOException(promptFile + ": not UTF-8 text", e);
        }
        for (String line : lines) {
            if (line.isBlank()) continue;
            int[] ids = tok.encode(line);
            if (ids.length > 0) prompts.add(ids);
        }
        if (prompts.isEmpty()) throw new java.io.IOException(promptFile + ": no prompt (every line is blank)");
        return prompts;
    }

    /**
     * Each prompt continued by --tokens tokens, each from its own {@link #generator}: --batch at a
     * time in order of token length, a batch's lengths within {@link TextGenerator#spread} of each other.
     */
    private int[][] continueAll(TextGenerator gen, List<int[]> prompts, double t, int k, int stop) {
        Progress progress = new Progress(spec.commandLine().getErr(), "generate", 0, prompts.size(), 5000);
        long t0 = System.nanoTime();
        StopRequests.loopRunning(true);   // a signal stops the generation between batches, what is done kept
        try {
            return gen.generateAll(prompts, count, t, k, stop, TextGenerator.spread(count), this::generator, done -> {
                if (prompts.size() > 1) progress.update(done, String.format("samples | %,.0f samples/s", done / ((System.nanoTime() - t0) / 1e9)));
                return StopRequests.requested() == null;
            });
        } finally {
            StopRequests.loopRunning(false);
        }
    }
}
