package dev.distillery.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import dev.distillery.kernels.Backends;

/** The trainer's commands at the command line: help, one-line errors, exit codes. */
class TrainerCommandsTest {

    private record Run(int status, String out, String err) {
    }

    private static Run run(String... args) {
        StringWriter out = new StringWriter(), err = new StringWriter();
        int status = Main.execute(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(status, out.toString(), err.toString());
    }

    @ParameterizedTest
    @ValueSource(strings = {"demo", "distill", "teacher", "teacher train", "teacher dump-logits", "tokenize", "generate", "eval", "export", "inspect"})
    void everyCommandHasHelp(String command) {
        String[] args = (command + " --help").split(" ");
        Run r = run(args);
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("Usage:") && r.out().length() > 200, r.out());
    }

    /**
     * A bf16 export holds every weight rounded to nearest even (read back widened, equal to
     * DType.BF16's rounding of the fp32 checkpoint), in half the bytes, says so in its config,
     * keeps the tokenizer and leaves the trainer state behind; an f32 export is the checkpoint's
     * weights bit for bit; a folder in the way is refused.
     */
    @Test
    void exportWritesTheModelInBf16ForInference(@TempDir Path dir) throws IOException {
        Path ckpt = dir.resolve("ckpt");
        dev.distillery.runtime.nn.Gpt2Config cfg = new dev.distillery.runtime.nn.Gpt2Config(67, 16, 2, 24, 3);
        float[] original;
        try (var kernels = Backends.open(Backends.Request.cpu(1, "auto")); var m = new dev.distillery.runtime.nn.Gpt2(cfg, kernels)) {
            m.initialize(5);
            dev.distillery.runtime.io.ModelFiles.write(ckpt, m);
            original = weights(m);
        }
        Files.writeString(ckpt.resolve("tokenizer.json"), "{}");
        Files.writeString(ckpt.resolve("trainer_state.safetensors"), "not copied");

        Run r = run("export", ckpt.toString(), "--out", dir.resolve("bf16").toString());
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("weights in bf16"), r.out());
        assertTrue(Files.exists(dir.resolve("bf16/tokenizer.json")));
        assertFalse(Files.exists(dir.resolve("bf16/trainer_state.safetensors")));
        assertTrue(Files.readString(dir.resolve("bf16/config.json")).contains("\"torch_dtype\" : \"bfloat16\""));
        long f32Bytes = Files.size(ckpt.resolve("model.safetensors")), bf16Bytes = Files.size(dir.resolve("bf16/model.safetensors"));
        assertTrue(bf16Bytes < 0.52 * f32Bytes, bf16Bytes + " bytes against " + f32Bytes);
        try (var kernels = Backends.open(Backends.Request.cpu(1, "auto"));
             var m = dev.distillery.runtime.io.ModelFiles.read(dir.resolve("bf16"), kernels);
             var arena = java.lang.foreign.Arena.ofConfined()) {
            float[] exported = weights(m);
            var one = arena.allocate(2);
            int changed = 0;
            for (int i = 0; i < original.length; i++) {
                dev.distillery.kernels.DType.BF16.write(one, 0, original[i]);
                assertEquals(dev.distillery.kernels.DType.BF16.read(one, 0), exported[i], "weight " + i);
                if (exported[i] != original[i]) changed++;
            }
            assertTrue(changed > original.length / 2, "the weights were rounded: " + changed + " of " + original.length + " changed");
        }

        assertEquals(0, run("export", ckpt.toString(), "--out", dir.resolve("f32").toString(), "--dtype", "f32").status());
        try (var kernels = Backends.open(Backends.Request.cpu(1, "auto")); var m = dev.distillery.runtime.io.ModelFiles.read(dir.resolve("f32"), kernels)) {
            org.junit.jupiter.api.Assertions.assertArrayEquals(original, weights(m));
        }

        Run again = run("export", ckpt.toString(), "--out", dir.resolve("bf16").toString());
        assertEquals(Main.EXIT_USAGE, again.status());
        assertTrue(again.err().contains("exists and is not an empty folder"), again.err());
        Run missing = run("export", dir.resolve("nothing").toString(), "--out", dir.resolve("x").toString());
        assertEquals(Main.EXIT_FAILED, missing.status());
        assertTrue(missing.err().contains("no config.json"), missing.err());
    }

    /** Every weight of m, in the store's order. */
    private static float[] weights(dev.distillery.runtime.nn.LanguageModel m) {
        var p = m.parameters();
        float[] out = new float[Math.toIntExact(p.parameterCount())];
        int at = 0;
        for (var t : p.parameters()) {
            float[] values = p.read(t);
            System.arraycopy(values, 0, out, at, values.length);
            at += values.length;
        }
        return out;
    }

    @Test
    void distillWithoutConfigIsAUsageError() {
        Run r = run("distill");
        assertEquals(Main.EXIT_USAGE, r.status());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().contains("--config"), r.err());
    }

    @Test
    void configProblemsAreOneLineNamingFileAndKey(@TempDir Path dir) throws IOException {
        Run missing = run("distill", "--config", dir.resolve("nope.json").toString());
        assertEquals(Main.EXIT_FAILED, missing.status());
        assertTrue(missing.err().contains("nope.json") && missing.err().contains("no such config file"), missing.err());
        Path cfg = dir.resolve("run.json");
        Files.writeString(cfg, "{\"teacher\": \"x\", \"batch\": 3}");
        Run unknown = run("distill", "--config", cfg.toString());
        assertEquals(Main.EXIT_FAILED, unknown.status());
        assertEquals(1, unknown.err().strip().lines().count(), unknown.err());
        assertTrue(unknown.err().contains("unknown key 'batch'") && unknown.err().contains("batch_size"), unknown.err());
        Files.writeString(cfg, "{\"teacher\": \"" + dir.resolve("no-shards") + "\", \"out\": \"" + dir.resolve("out") + "\"}");
        Run noShards = run("distill", "--config", cfg.toString(), "--device", "cpu", "--threads", "1");
        assertEquals(Main.EXIT_FAILED, noShards.status());
        assertTrue(noShards.err().contains("'teacher' " + dir.resolve("no-shards") + ": no such file or folder"), noShards.err());
        assertFalse(Files.exists(dir.resolve("out")), "bad input makes no run folder");
    }

    @Test
    void cudaWithoutADeviceIsRefusedWithTheNoDeviceCodeAndTheReason(@TempDir Path dir) throws IOException {
        String why = Backends.cudaUnavailableReason();
        org.junit.jupiter.api.Assumptions.assumeTrue(why != null, "this machine can run CUDA");
        Path cfg = dir.resolve("run.json");
        Files.writeString(cfg, "{\"teacher\": \"x\"}");
        Run r = run("distill", "--config", cfg.toString(), "--device", "cuda");
        assertEquals(Main.EXIT_NO_DEVICE, r.status());
        assertTrue(r.err().contains("--device cuda") && r.err().contains(why) && r.err().contains("use --device cpu"), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
    }

    @Test
    void demoRefusesToClearAFolderItDidNotMake(@TempDir Path dir) throws IOException {
        Files.writeString(dir.resolve("precious.txt"), "keep me");
        Run r = run("demo", "--quick", "--work", dir.toString(), "--device", "cpu", "--threads", "1");
        assertEquals(Main.EXIT_FAILED, r.status());
        assertTrue(r.err().contains("not a demo folder"), r.err());
        assertTrue(Files.exists(dir.resolve("precious.txt")));
    }

    @Test
    void tokenizeWritesTokenizerAndTokenFiles(@TempDir Path dir) throws IOException {
        Path corpus = dir.resolve("corpus.txt");
        Files.writeString(corpus, "We the People of the United States, in Order to form a more perfect Union.\n".repeat(40));
        Run r = run("tokenize", "--corpus", corpus.toString(), "--vocab", "300", "--out", dir.resolve("tok").toString());
        assertEquals(0, r.status(), r.err());
        for (String f : new String[]{"tokenizer.json", "train.bin", "val.bin"}) assertTrue(Files.isRegularFile(dir.resolve("tok").resolve(f)), f);
        Run bad = run("tokenize", "--corpus", corpus.toString(), "--vocab", "300", "--val-fraction", "2", "--out", dir.toString());
        assertEquals(Main.EXIT_USAGE, bad.status());
    }

    @Test
    void tokenizeWithAnExistingTokenizerWritesItsIdsAndNamesBadInput(@TempDir Path dir) throws IOException {
        Path corpus = dir.resolve("corpus.txt");
        Files.writeString(corpus, "We the People of the United States,\nin Order to form a more perfect Union.\n".repeat(40));
        Run r = run("tokenize", "--tokenizer", "gpt2", "--corpus", corpus.toString(), "--out", dir.resolve("gpt2").toString(), "--threads", "1");
        assertEquals(0, r.status(), r.err());
        assertTrue(r.out().contains("1 documents") && r.out().contains("gpt2, vocab 50,257, eos-delimited"), r.out());
        // the tokens, read back, decode to the corpus and its closing end-of-text
        int[] train, val;
        try (var t = dev.distillery.trainer.data.TokenFile.open(dir.resolve("gpt2/train.bin"));
             var v = dev.distillery.trainer.data.TokenFile.open(dir.resolve("gpt2/val.bin"))) {
            train = new int[(int) t.size()];
            t.read(0, train.length, train);
            val = new int[(int) v.size()];
            v.read(0, val.length, val);
        }
        int[] all = java.util.stream.IntStream.concat(java.util.Arrays.stream(train), java.util.Arrays.stream(val)).toArray();
        try (var gpt2 = dev.distillery.trainer.tokenizer.TextTokenizer.open("gpt2")) {
            assertEquals(Files.readString(corpus) + "<|endoftext|>", gpt2.decode(all));
        }
        Run unknown = run("tokenize", "--tokenizer", "cl200k_base", "--corpus", corpus.toString(), "--out", dir.resolve("x").toString());
        assertEquals(Main.EXIT_FAILED, unknown.status());
        assertTrue(unknown.err().startsWith("error: cl200k_base: neither a tokenizer.json"), unknown.err());
        Run delimiter = run("tokenize", "--tokenizer", "gpt2", "--corpus", corpus.toString(), "--out", dir.resolve("x").toString(), "--delimiter", "nl");
        assertEquals(Main.EXIT_USAGE, delimiter.status());
        assertFalse(Files.exists(dir.resolve("x")), "nothing was written");
    }
}
