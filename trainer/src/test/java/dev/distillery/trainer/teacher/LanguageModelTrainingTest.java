package dev.distillery.trainer.teacher;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.trainer.cli.Main;
import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.tokenizer.CorpusTokenization;

/** teacher train, its resume, and the commands that read its checkpoints (eval, generate). */
class LanguageModelTrainingTest {

    static CpuKernels kernels;
    static CorpusTokenization.Result data;

    @BeforeAll
    static void tokenize(@TempDir Path dir) throws IOException {
        kernels = new CpuKernels(2, "auto");
        data = CorpusTokenization.run(new Corpus("slice", Corpus.bundled().text().substring(0, 40_000)), 300, 0.1, dir.resolve("data"));
    }

    @AfterAll
    static void close() {
        kernels.close();
    }

    static LanguageModelTraining.Options options(Path out, int steps) {
        return new LanguageModelTraining.Options(data.train(), data.val(), out, data.tokenizerFile(), new Gpt2Config(300, 16, 1, 32, 2),
                4, steps, 3e-3, 3e-4, 2, 0.1, 1.0, 0, 4, 5, 9, false);
    }

    static LanguageModelTraining.Result run(LanguageModelTraining.Options o, boolean resume, int stopAfter) throws IOException {
        PrintWriter quiet = new PrintWriter(new StringWriter());
        return LanguageModelTraining.run(o, kernels, resume, stopAfter, quiet, quiet);
    }

    @Test
    void trainingLowersHeldOutPerplexityAndResumesExactly(@TempDir Path dir) throws IOException {
        LanguageModelTraining.Result whole = run(options(dir.resolve("whole"), 12), false, 0);
        assertTrue(whole.validationPerplexity() < 300, "held-out perplexity " + whole.validationPerplexity() + " vs uniform 300");
        run(options(dir.resolve("split"), 12), false, 7);
        LanguageModelTraining.Result resumed = run(options(dir.resolve("split"), 12), true, 0);
        assertArrayEquals(Files.readAllBytes(whole.checkpoint().resolve("model.safetensors")),
                Files.readAllBytes(resumed.checkpoint().resolve("model.safetensors")), "resumed teacher differs");
        assertEquals(whole.validationPerplexity(), resumed.validationPerplexity());
        assertTrue(Files.isRegularFile(whole.checkpoint().resolve("tokenizer.json")));
    }

    /**
     * {@code teacher train --recompute-attention}: the checkpoint of a run that keeps attention's
     * probabilities, bit for bit, since 16 tokens are one band of rows.
     */
    @Test
    void recomputingAttentionTrainsTheSameTeacher(@TempDir Path dir) throws IOException {
        StringWriter out = new StringWriter(), err = new StringWriter();
        int status = Main.execute(new String[]{"teacher", "train", "--tokens", data.train().toString(), "--val", data.val().toString(),
                "--out", dir.resolve("again").toString(), "--vocab", "300", "--layers", "2", "--channels", "32", "--heads", "2", "--context",
                "16", "--batch", "4", "--steps", "4", "--recompute-attention", "--device", "cpu", "--threads", "2"},
                new PrintWriter(out, true), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        status = Main.execute(new String[]{"teacher", "train", "--tokens", data.train().toString(), "--val", data.val().toString(),
                "--out", dir.resolve("keep").toString(), "--vocab", "300", "--layers", "2", "--channels", "32", "--heads", "2", "--context",
                "16", "--batch", "4", "--steps", "4", "--device", "cpu", "--threads", "2"},
                new PrintWriter(out, true), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        Path again = dir.resolve("again/checkpoints"), keep = dir.resolve("keep/checkpoints");
        try (var a = Files.list(again); var k = Files.list(keep)) {
            Path lastAgain = a.sorted().reduce((x, y) -> y).orElseThrow(), lastKeep = k.sorted().reduce((x, y) -> y).orElseThrow();
            assertArrayEquals(Files.readAllBytes(lastKeep.resolve("model.safetensors")), Files.readAllBytes(lastAgain.resolve("model.safetensors")),
                    "the teachers trained keeping and making again attention's probabilities");
        }
    }

    @Test
    void evalAndGenerateReadTheCheckpoint(@TempDir Path dir) throws IOException {
        Path ckpt = run(options(dir.resolve("t"), 3), false, 0).checkpoint();
        StringWriter out = new StringWriter(), err = new StringWriter();
        int status = Main.execute(new String[]{"eval", "--model", ckpt.toString(), "--tokens", data.val().toString(), "--batch", "2",
                "--device", "cpu", "--threads", "2"}, new PrintWriter(out, true), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        assertTrue(out.toString().contains("perplexity"), out.toString());
        out.getBuffer().setLength(0);
        status = Main.execute(new String[]{"generate", "--model", ckpt.toString(), "--prompt", "Mr. Speaker", "--tokens", "12", "--device",
                "cpu"}, new PrintWriter(out, true), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        assertTrue(out.toString().startsWith("device: cpu") && out.toString().contains("Mr. Speaker") && out.toString().contains("tokens/s"), out.toString());
        String lone = out.toString().substring(out.toString().indexOf('\n') + 1, out.toString().lastIndexOf("\n\n("));
        // three samples, two decoded together and then one, or all three together: the same text, the first the lone run's
        String[] printed = {printedText(ckpt, 36, "--prompt", "Mr. Speaker", "--tokens", "12", "--samples", "3", "--batch", "2"),
                printedText(ckpt, 36, "--prompt", "Mr. Speaker", "--tokens", "12", "--samples", "3", "--batch", "3")};
        assertEquals(printed[0], printed[1], "--batch 2 and 3");
        String[] parts = printed[0].split("(\n\n)?── sample \\d of 3 ──\n");
        assertEquals(4, parts.length, printed[0]);
        assertEquals(lone, parts[1], "sample 1 draws from --seed, as a lone run does");
        assertTrue(parts[2].startsWith("Mr. Speaker") && parts[3].startsWith("Mr. Speaker"), printed[0]);
        assertTrue(!parts[2].equals(parts[1]) || !parts[3].equals(parts[1]), "the samples draw from generators of their own: " + printed[0]);
        // a file of prompts of two lengths, two of one: printed in the file's order, the same text decoded one at a time or
        // together (enough tokens that the lengths fall within one batch's spread)
        Path promptFile = dir.resolve("prompts.txt");
        java.nio.file.Files.writeString(promptFile, "Mr. Speaker\n\nWe\nMr. Speaker\n");
        int lengths;
        try (var tok = dev.distillery.trainer.tokenizer.TextTokenizer.open(ckpt.resolve("tokenizer.json").toString())) {
            lengths = tok.encode("Mr. Speaker").length - tok.encode("We").length;
        }
        int continued = 4 * Math.abs(lengths) + 8;
        assertTrue(lengths != 0 && dev.distillery.runtime.nn.TextGenerator.spread(continued) >= Math.abs(lengths), "prompts of two lengths in one batch");
        String[] fromFile = {printedText(ckpt, 3 * continued, "--prompt-file", promptFile.toString(), "--tokens", "" + continued, "--batch", "1"),
                printedText(ckpt, 3 * continued, "--prompt-file", promptFile.toString(), "--tokens", "" + continued, "--batch", "4")};
        assertEquals(fromFile[0], fromFile[1], "--batch 1 and 4");
        String[] byPrompt = fromFile[0].split("(\n\n)?── prompt \\d of 3 ──\n");
        assertEquals(4, byPrompt.length, fromFile[0]);
        assertTrue(byPrompt[1].startsWith("Mr. Speaker") && byPrompt[2].startsWith("We") && byPrompt[3].startsWith("Mr. Speaker"), fromFile[0]);
        // --samples 2: each prompt twice, side by side, its first sample the text of --samples 1
        String twice = printedText(ckpt, 6 * continued, "--prompt-file", promptFile.toString(), "--tokens", "" + continued, "--samples", "2");
        String[] bySample = twice.split("(\n\n)?── prompt \\d of 3, sample \\d of 2 ──\n");
        assertEquals(7, bySample.length, twice);
        for (int p = 0; p < 3; p++) {
            assertEquals(byPrompt[p + 1], bySample[2 * p + 1], "prompt " + (p + 1) + "'s first sample");
            assertTrue(bySample[2 * p + 2].startsWith(p == 1 ? "We" : "Mr. Speaker"), twice);
        }
        assertNotEquals(bySample[1], bySample[2], "a prompt's second sample draws from a generator of its own: " + twice);
        Path kdFromFile = dir.resolve("kd-prompts.bin");
        status = Main.execute(new String[]{"generate", "--model", ckpt.toString(), "--prompt-file", promptFile.toString(), "--tokens", "8",
                "--kd-out", kdFromFile.toString(), "--device", "cpu"}, new PrintWriter(out, true), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        try (var tok = dev.distillery.trainer.tokenizer.TextTokenizer.open(ckpt.resolve("tokenizer.json").toString());
             var f = dev.distillery.trainer.data.TokenFile.open(kdFromFile)) {
            int speaker = tok.encode("Mr. Speaker").length, we = tok.encode("We").length;
            assertEquals(2L * (speaker + 8) + we + 8, f.size(), "each prompt's tokens and 8 more, in the file's order");
            int[] head = new int[speaker];
            f.read(0, speaker, head);
            assertArrayEquals(tok.encode("Mr. Speaker"), head);
            int[] second = new int[we];
            f.read(speaker + 8, we, second);
            assertArrayEquals(tok.encode("We"), second);
        }
        Path kd = dir.resolve("kd.bin");
        status = Main.execute(new String[]{"generate", "--model", ckpt.toString(), "--tokens", "10", "--kd-out", kd.toString(), "--kd-samples",
                "3", "--device", "cpu"}, new PrintWriter(out, true), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        try (var f = dev.distillery.trainer.data.TokenFile.open(kd)) {
            assertEquals(3 * 11, f.size(), "3 generations of the end-of-text token + 10 tokens");
        }
        // from real text: each generation starts with 5 consecutive tokens of the held-out file
        Path real = dir.resolve("kd-real.bin");
        out.getBuffer().setLength(0);
        status = Main.execute(new String[]{"generate", "--model", ckpt.toString(), "--tokens", "10", "--kd-out", real.toString(), "--kd-samples",
                "4", "--kd-prompts", data.val().toString(), "--prompt-tokens", "5", "--device", "cpu"}, new PrintWriter(out, true), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        assertTrue(out.toString().contains("temperature 0.7, top-k 0, from 5-token prompts of"), out.toString());
        try (var f = dev.distillery.trainer.data.TokenFile.open(real); var val = dev.distillery.trainer.data.TokenFile.open(data.val())) {
            assertEquals(4 * 15, f.size());
            int[] all = new int[(int) val.size()], prompt = new int[5];
            val.read(0, all.length, all);
            String text = java.util.Arrays.toString(all);
            for (int s = 0; s < 4; s++) {
                f.read(s * 15L, 5, prompt);
                assertTrue(text.contains(java.util.Arrays.toString(prompt).replace("[", "").replace("]", "")), "sample " + s + " starts with real text");
            }
        }
        // the samples decoded one at a time and three at a time (a batch of three, then one): the same file
        for (String batch : new String[]{"1", "3"}) {
            Path again = dir.resolve("kd-real-" + batch + ".bin");
            status = Main.execute(new String[]{"generate", "--model", ckpt.toString(), "--tokens", "10", "--kd-out", again.toString(), "--kd-samples",
                    "4", "--kd-prompts", data.val().toString(), "--prompt-tokens", "5", "--batch", batch, "--device", "cpu"},
                    new PrintWriter(out, true), new PrintWriter(err, true));
            assertEquals(0, status, err.toString());
            assertArrayEquals(java.nio.file.Files.readAllBytes(real), java.nio.file.Files.readAllBytes(again), "--batch " + batch);
        }
    }

    /** What {@code generate} prints between its device line and its timing line, which must count {@code tokens}. */
    /**
     * {@code generate --stop-at-eos}: each generation is the one without the flag, cut after the
     * first end-of-sequence token it draws (the start token itself is one and does not count).
     */
    @Test
    void stopAtEosCutsEachGenerationAfterItsFirstEndOfSequenceToken(@TempDir Path dir) throws IOException {
        Path ckpt = run(options(dir.resolve("t"), 3), false, 0).checkpoint();
        int eos, samples = 64, tokens = 40;
        try (var tok = dev.distillery.trainer.tokenizer.TextTokenizer.open(ckpt.resolve("tokenizer.json").toString())) {
            eos = tok.eos().orElseThrow();
        }
        int[][] runs = new int[2][];
        for (int stop = 0; stop < 2; stop++) {
            Path kd = dir.resolve("kd-" + stop + ".bin");
            java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("generate", "--model", ckpt.toString(), "--kd-out", kd.toString(),
                    "--kd-samples", "" + samples, "--tokens", "" + tokens, "--temperature", "1", "--device", "cpu"));
            if (stop == 1) args.add("--stop-at-eos");
            StringWriter out = new StringWriter(), err = new StringWriter();
            assertEquals(0, Main.execute(args.toArray(String[]::new), new PrintWriter(out, true), new PrintWriter(err, true)), err.toString());
            try (var f = dev.distillery.trainer.data.TokenFile.open(kd)) {
                runs[stop] = new int[(int) f.size()];
                f.read(0, runs[stop].length, runs[stop]);
            }
        }
        java.util.List<Integer> expected = new java.util.ArrayList<>();
        int cut = 0;
        for (int g = 0; g < samples; g++) {
            int at = g * (1 + tokens);
            assertEquals(eos, runs[0][at], "generation " + g + " starts from the end-of-sequence token");
            expected.add(eos);
            for (int n = 1; n <= tokens; n++) {
                expected.add(runs[0][at + n]);
                if (runs[0][at + n] == eos) {
                    cut++;
                    break;
                }
            }
        }
        assertTrue(cut >= 2, cut + " generations drew the end-of-sequence token");
        assertArrayEquals(expected.stream().mapToInt(Integer::intValue).toArray(), runs[1]);
    }

    /**
     * {@code generate --kd-out} stopped by SIGTERM writes the generations done before the signal
     * (whole ones, each its prompt and --tokens more, in the file's order), says so, and exits
     * with {@link dev.distillery.trainer.loop.StopRequests#EXIT_STOPPED}.
     */
    @Test
    void aGenerationStoppedBySigtermWritesTheGenerationsDone(@TempDir Path dir) throws Exception {
        Path ckpt = run(options(dir.resolve("t"), 3), false, 0).checkpoint();
        Path prompts = dir.resolve("prompts.txt"), kd = dir.resolve("kd.bin");
        String[] words = Corpus.bundled().text().substring(0, 40_000).split("\\s+");
        StringBuilder lines = new StringBuilder();
        for (int i = 0; i < 4000; i++) lines.append(String.join(" ", java.util.Arrays.copyOfRange(words, i, i + 1 + i % 7))).append('\n');
        Files.writeString(prompts, lines);
        java.util.List<String> cmd = java.util.List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"),
                "dev.distillery.trainer.cli.Main", "generate", "--model", ckpt.toString(), "--prompt-file", prompts.toString(), "--tokens", "8",
                "--batch", "1", "--kd-out", kd.toString(), "--device", "cpu", "--threads", "2");
        Path log = dir.resolve("generate.log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        long deadline = System.nanoTime() + java.util.concurrent.TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline && p.isAlive() && !Files.readString(log).contains("samples |")) Thread.sleep(5);
        p.toHandle().destroy();
        assertTrue(p.waitFor(60, java.util.concurrent.TimeUnit.SECONDS), "the stopped generation did not end:\n" + Files.readString(log));
        String said = Files.readString(log);
        assertEquals(dev.distillery.trainer.loop.StopRequests.EXIT_STOPPED, p.exitValue(), said);
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("stopped by SIGTERM after (\\d+) of 4000 generations").matcher(said);
        assertTrue(m.find() && said.contains(kd + " holds those done, in their order"), said);
        int done = Integer.parseInt(m.group(1));
        assertTrue(done >= 1 && done < 4000, said);
        try (var tok = dev.distillery.trainer.tokenizer.TextTokenizer.open(ckpt.resolve("tokenizer.json").toString());
             var f = dev.distillery.trainer.data.TokenFile.open(kd)) {
            java.util.List<int[]> encoded = new java.util.ArrayList<>();
            for (String line : Files.readAllLines(prompts)) encoded.add(tok.encode(line));
            // the prompts go shortest first: those done are the shortest, each in the file's order
            java.util.List<Integer> order = new java.util.ArrayList<>();
            for (int i = 0; i < encoded.size(); i++) order.add(i);
            order.sort(java.util.Comparator.comparingInt((Integer i) -> encoded.get(i).length).thenComparingInt(i -> i));
            java.util.List<Integer> first = new java.util.ArrayList<>(order.subList(0, done));
            java.util.Collections.sort(first);
            long at = 0;
            for (int i : first) {
                int[] head = new int[encoded.get(i).length];
                f.read(at, head.length, head);
                assertArrayEquals(encoded.get(i), head, "generation of prompt " + i + " at token " + at);
                at += head.length + 8;
            }
            assertEquals(at, f.size(), "the " + done + " generations done, whole");
        }
    }

    private static String printedText(Path ckpt, int tokens, String... options) {
        StringWriter out = new StringWriter(), err = new StringWriter();
        String[] args = new String[options.length + 5];
        System.arraycopy(new String[]{"generate", "--model", ckpt.toString(), "--device", "cpu"}, 0, args, 0, 5);
        System.arraycopy(options, 0, args, 5, options.length);
        assertEquals(0, Main.execute(args, new PrintWriter(out, true), new PrintWriter(err, true)), err.toString());
        String text = out.toString();
        assertTrue(text.contains("(" + tokens + " tokens in"), text);
        return text.substring(text.indexOf('\n') + 1, text.lastIndexOf("\n\n("));
    }
}
