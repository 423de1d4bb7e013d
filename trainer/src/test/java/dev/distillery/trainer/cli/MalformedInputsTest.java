package dev.distillery.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.trainer.data.ShardFixtures;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.tokenizer.BytePairTokenizer;

/**
 * Malformed input, as a user writes it by mistake: each case ends with a non-zero status and one
 * line naming the file and the key or tensor, with no stack trace, no hang and no allocation of
 * the absurd sizes asked for.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class MalformedInputsTest {

    private record Run(int status, String err) {
    }

    private static Run run(String... args) {
        StringWriter err = new StringWriter();
        int status = Main.execute(args, new PrintWriter(new StringWriter()), new PrintWriter(err, true));
        return new Run(status, err.toString());
    }

    /** A distill config with {@code body} after a teacher key; runs distill on it. */
    private static Run distill(Path dir, String body) throws IOException {
        Path cfg = dir.resolve("run.json");
        Files.writeString(cfg, "{\"teacher\": \"" + dir.resolve("shards") + "\", \"out\": \"" + dir.resolve("out") + "\"" + body);
        return run("distill", "--config", cfg.toString(), "--device", "cpu");
    }

    private static void refused(Run r, String... expected) {
        assertEquals(Main.EXIT_FAILED, r.status(), r.err());
        assertEquals(1, r.err().strip().lines().count(), "one line: " + r.err());
        assertFalse(r.err().contains("\tat ") || r.err().contains("Exception"), "no stack trace or class name: " + r.err());
        for (String e : expected) assertTrue(r.err().contains(e), "'" + e + "' in: " + r.err());
    }

    @Test
    void numbersAreNumbersAndNothingFollowsTheJson(@TempDir Path dir) throws IOException {
        refused(distill(dir, ", \"steps\": 2.7}"), "run.json", "'steps' must be an integer");
        refused(distill(dir, ", \"lr\": \"0.003\"}"), "run.json", "'lr' must be a number");
        refused(distill(dir, ", \"loss\": {\"temperature\": \"2\"}}"), "run.json", "'loss.temperature' must be a number");
        refused(distill(dir, ", \"student\": {\"channels\": 96.7}}"), "run.json", "'student.channels' must be an integer");
        refused(distill(dir, "}\n{\"steps\": 3}"), "run.json", "the JSON ends, but more text follows it", "line 2");
        refused(distill(dir, "} trailing"), "run.json", "Unrecognized token 'trailing'");
    }

    @Test
    void emptyPathsAndMissingFilesAreNamedBeforeAnythingRuns(@TempDir Path dir) throws IOException {
        Path cfg = dir.resolve("run.json");
        Files.writeString(cfg, "{\"teacher\": \"" + dir.resolve("shards") + "\", \"out\": \"\"}");
        refused(run("distill", "--config", cfg.toString(), "--device", "cpu"), "'out' must name a folder");
        refused(distill(dir, ", \"tokenizer\": \"" + dir.resolve("missing/tokenizer.json") + "\"}"), "'tokenizer'", "missing/tokenizer.json");
        assertFalse(Files.exists(dir.resolve("out")), "nothing was written");
    }

    /** A one-block GPT-2 checkpoint in dir/model; element 5 of the tensor named poisoned (or none) set to NaN. */
    private static Path tinyModel(Path dir, String poisoned) throws IOException {
        Path model = dir.resolve("model");
        try (var kernels = new CpuKernels(1, "auto");
             var m = new Gpt2(new Gpt2Config(16, 8, 1, 8, 2), kernels)) {
            m.initialize(1);
            if (poisoned != null) m.parameters().get(poisoned).setFloat(5, Float.NaN);
            ModelFiles.write(model, m);
        }
        return model;
    }

    @Test
    void aMissingFileIsNamedWithWhatIsWrongWithIt(@TempDir Path dir) throws IOException {
        Path model = tinyModel(dir, null);
        String missing = dir.resolve("val.bin").toString();
        refused(run("eval", "--model", model.toString(), "--tokens", missing, "--device", "cpu", "--threads", "1"),
                missing + ": no such file or directory");
        refused(run("eval", "--compare", model.toString(), "--tokens", missing, "--device", "cpu", "--threads", "1"),
                missing + ": no such file or directory");
        refused(run("eval", "--model", dir.resolve("no-model").toString(), "--tokens", missing, "--device", "cpu"),
                "no-model/config.json", "No such file or directory");
        refused(run("generate", "--model", dir.resolve("no-model").toString(), "--device", "cpu"), "no-model: no such file or directory");
        refused(run("eval", "--model", model.toString(), "--teacher-shards", dir.toString(), "--device", "cpu", "--threads", "1"),
                dir + ": no manifest.json, so not a teacher shard folder");
        refused(distill(dir, "}"), "'teacher' " + dir.resolve("shards") + ": no such file or folder");
        refused(run("distill", "--config", dir.toString(), "--device", "cpu"), dir + ": a folder, not a JSON file");
        assertEquals(dir.resolve("a") + ": permission denied", Main.describe(new AccessDeniedException(dir.resolve("a").toString())));
        assertEquals("a -> b: already exists", Main.describe(new UncheckedIOException(new FileAlreadyExistsException("a", "b", null))));
        assertEquals("a: quota exceeded", Main.describe(new FileSystemException("a", null, "quota exceeded")));
    }

    @Test
    void generateRefusesOptionsOutOfRangeBeforeLoadingAModel(@TempDir Path dir) {
        String missing = dir.resolve("no-model").toString();   // never opened: the options are checked first
        String[][] cases = {{"--temperature", "-1", "--temperature must be a finite number >= 0 (0 = greedy), got -1.0"},
                {"--temperature", "Infinity", "--temperature must be a finite number >= 0 (0 = greedy), got Infinity"},
                {"--top-k", "-5", "--top-k must be >= 0 (0 = all), got -5"},
                {"--kd-samples", "0", "--kd-out", dir.resolve("kd.bin").toString(), "--kd-samples must be >= 1, got 0"},
                {"--batch", "0", "--kd-out", dir.resolve("kd.bin").toString(), "--batch must be >= 1, got 0"},
                {"--samples", "0", "--samples must be >= 1, got 0"},
                {"--samples", "2", "--kd-out", dir.resolve("kd.bin").toString(), "--samples is for printed text or --prompt-file; with --kd-out, give --kd-samples"},
                {"--kd-prompts", dir.resolve("train.bin").toString(), "--kd-prompts needs --kd-out"},
                {"--prompt-file", dir.resolve("prompts.txt").toString(), "--prompt", "We", "--prompt-file gives the prompts: leave out --prompt, --kd-prompts and --kd-samples (--samples N continues each N times)"},
                {"--prompt-file", dir.resolve("prompts.txt").toString(), "--kd-out", dir.resolve("kd.bin").toString(), "--kd-samples", "8",
                        "--prompt-file gives the prompts: leave out --prompt, --kd-prompts and --kd-samples (--samples N continues each N times)"},
                {"--prompt-file", dir.resolve("prompts.txt").toString(), dir.resolve("prompts.txt") + ": no such file (--prompt-file)"}};
        for (String[] c : cases) {
            String[] args = new String[c.length - 1 + 4];
            System.arraycopy(new String[]{"generate", "--model", missing, "--device=cpu"}, 0, args, 0, 4);
            System.arraycopy(c, 0, args, 4, c.length - 1);
            Run r = run(args);
            assertEquals(Main.EXIT_USAGE, r.status(), r.err());
            assertTrue(r.err().contains(c[c.length - 1]), r.err());
            assertFalse(r.err().contains("no-model"), "the model is not read: " + r.err());
        }
    }

    @Test
    void absurdSizesAreRefusedNamingTheKeyAndTheLimit(@TempDir Path dir) throws IOException {
        refused(distill(dir, ", \"student\": {\"layers\": 1000000000}}"), "'student.layers' must be in [1, 1024], got 1000000000");
        refused(distill(dir, ", \"student\": {\"channels\": 2147483647, \"heads\": 1}}"), "'student.channels' must be in [1, 65536]");
        refused(distill(dir, ", \"student\": {\"vocab_size\": 1000000000}}"), "'student.vocab_size' must be in [1, 16777216]");
    }

    /** A model folder holding only a GPT-2 config.json with these n_layer and n_embd, as written. */
    private static Path modelConfig(Path dir, String layers, String channels) throws IOException {
        Path model = dir.resolve("model");
        Files.createDirectories(model);
        Files.writeString(model.resolve("config.json"), "{\"vocab_size\": 97, \"n_positions\": 16, \"n_layer\": " + layers + ", \"n_embd\": "
                + channels + ", \"n_head\": 4}");
        return model;
    }

    @Test
    void aModelConfigWithAFractionalSizeIsNamed(@TempDir Path dir) throws IOException {
        refused(run("inspect", modelConfig(dir, "2", "96.7").toString()), "config.json", "'n_embd' must be an integer, got 96.7");
    }

    /** A safetensors file whose header is {@code header}, with no data. */
    private static Path safetensors(Path dir, byte[] header) throws IOException {
        Path file = dir.resolve("bad.safetensors");
        ByteBuffer b = ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(header.length).put(header);
        Files.write(file, b.array());
        return file;
    }

    @Test
    void safetensorsShapesThatOverflowAndNamesThatAreNotUtf8AreRefused(@TempDir Path dir) throws IOException {
        Path overflow = safetensors(dir, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2147483647, 2147483647, 4], \"data_offsets\": [0, 0]}}"
                .getBytes(StandardCharsets.UTF_8));
        refused(run("inspect", overflow.toString()), "bad.safetensors", "tensor 'w'", "more than 2^63 bytes");
        byte[] header = "{\"w\u00ff\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]}}".getBytes(StandardCharsets.ISO_8859_1);
        refused(run("inspect", safetensors(dir, header).toString()), "bad.safetensors", "not valid UTF-8");
    }

    @Test
    void inspectOnAFileOfAnotherKindSaysWhatItReads(@TempDir Path dir) throws IOException {
        Path json = Files.writeString(dir.resolve("run.json"), "{\"steps\": 3}");
        refused(run("inspect", json.toString()), "run.json: not a .safetensors file", "token files", "checkpoint folders");
    }

    @Test
    void aCheckpointWithANonFiniteWeightIsNamedNotEvaluatedToNaN(@TempDir Path dir) throws IOException {
        Path model = tinyModel(dir, "h.0.mlp.c_fc.weight");
        Path tokens = dir.resolve("val.bin");
        TokenFile.write(tokens, new int[64]);
        refused(run("eval", "--model", model.toString(), "--tokens", tokens.toString(), "--device", "cpu", "--threads", "1"),
                "model.safetensors", "tensor 'h.0.mlp.c_fc.weight' element 5 is NaN");
    }

    @Test
    void tokenIdsOutsideTheVocabularyAreNamedBeforeAnythingIsWritten(@TempDir Path dir) throws IOException {
        Path model = dir.resolve("teacher");
        try (var kernels = new CpuKernels(1, "auto"); var m = new Gpt2(new Gpt2Config(16, 8, 1, 8, 2), kernels)) {
            m.initialize(1);
            ModelFiles.write(model, m);
        }
        int[] ids = new int[40];
        ids[33] = 70_000;   // a uint32 file, as a tokenizer with a larger vocabulary writes
        Path tokens = dir.resolve("tokens.bin");
        TokenFile.write(tokens, ids);
        refused(run("teacher", "dump-logits", "--teacher", model.toString(), "--tokens", tokens.toString(), "--out",
                dir.resolve("shards").toString(), "--device", "cpu", "--threads", "1"),
                "tokens.bin: token 33 (byte offset 1156) is id 70000, outside the teacher's vocabulary of 16");
        assertFalse(Files.exists(dir.resolve("shards")), "nothing was written");
        refused(run("eval", "--model", model.toString(), "--tokens", tokens.toString(), "--device", "cpu", "--threads", "1"),
                "token 33", "outside the model's vocabulary of 16");
    }

    // ------------------------------------------------------------------ teacher shards written wrong

    /** Sequence 1, position 2 of a shard: the row of a value a test spoils. */
    private static final int ROW = ShardFixtures.T + 2;

    private static void spoil(Map<String, MemorySegment> t, String tensor, long index, float value) {
        t.get(tensor).setAtIndex(ValueLayout.JAVA_FLOAT, index, value);
    }

    /** The fixtures' shards are at temperature 2; a loss at another one is refused before their values are read. */
    private static final String AT_T2 = ", \"loss\": {\"temperature\": 2.0}";

    /** distill over {@code shards} with a tiny student and {@code extra} keys; the out folder is dir/out. */
    private static Run distillOn(Path dir, Path shards, String extra) throws IOException {
        Path cfg = dir.resolve("run-" + System.nanoTime() + ".json");
        Files.writeString(cfg, "{\"teacher\": \"" + shards + "\", \"out\": \"" + dir.resolve("out") + "\", \"steps\": 2, \"batch_size\": 2, "
                + "\"student\": {\"layers\": 1, \"channels\": 8, \"heads\": 2}" + extra + "}");
        return run("distill", "--config", cfg.toString(), "--device", "cpu", "--threads", "1");
    }

    private static Path tinyModel(Path dir, int vocab) throws IOException {
        Path model = dir.resolve("model-" + vocab);
        try (var kernels = new CpuKernels(1, "auto"); var m = new Gpt2(new Gpt2Config(vocab, ShardFixtures.T, 1, 8, 2), kernels)) {
            m.initialize(1);
            ModelFiles.write(model, m);
        }
        return model;
    }

    @Test
    void aNonFiniteTeacherValueIsNamedByShardSequenceAndPositionBeforeStepOne(@TempDir Path dir) throws IOException {
        Path shards = ShardFixtures.write(dir, "dense", DType.F32, t -> spoil(t, "logits", (long) ROW * ShardFixtures.V + 5, Float.NaN));
        String where = "shard-1.safetensors, sequence 1, position 2: logits";
        refused(distillOn(dir, shards, ""), where);
        assertFalse(Files.exists(dir.resolve("out")), "nothing was written");
        refused(run("eval", "--model", tinyModel(dir, ShardFixtures.V).toString(), "--teacher-shards", shards.toString(), "--device", "cpu",
                "--threads", "1"), where);
        refused(run("inspect", "--verify", shards.toString()), where);
    }

    @Test
    void topKWriterMistakesAreNamedBeforeStepOne(@TempDir Path dir) throws IOException {
        // a logsumexp at temperature 1 where the manifest says 2: the top-k alone holds more than all the mass
        Path hot = ShardFixtures.write(dir, "topk", DType.F32, t -> spoil(t, "logsumexp", ROW, 5f));
        refused(distillOn(dir, hot, AT_T2), "shard-1.safetensors, sequence 1, position 2: ", "temperature");
        Path twice = ShardFixtures.write(dir, "topk", DType.F32,
                t -> t.get("topk_ids").setAtIndex(ValueLayout.JAVA_INT, (long) ROW * ShardFixtures.K + 1, t.get("topk_ids").getAtIndex(ValueLayout.JAVA_INT, (long) ROW * ShardFixtures.K)));
        refused(run("inspect", "--verify", twice.toString()), "shard-1.safetensors, sequence 1, position 2: topk_ids");
        refused(distillOn(dir, twice, AT_T2), "shard-1.safetensors, sequence 1, position 2: topk_ids");
        Path weights = ShardFixtures.write(dir, "sampled", DType.F32, t -> spoil(t, "sampled_weights", (long) ROW * ShardFixtures.K, 0.5f));
        refused(distillOn(dir, weights, AT_T2), "shard-1.safetensors, sequence 1, position 2: sampled_weights", "sum to 1.25");
        assertFalse(Files.exists(dir.resolve("out")), "nothing was written");
    }

    @Test
    void aBadValueFoundDuringAStepIsNamedByShardSequenceAndPositionNotBatchRow(@TempDir Path dir) throws IOException {
        // with the up-front check switched off, the kernel finds the NaN; its row is mapped back to the shard
        Path shards = ShardFixtures.write(dir, "dense", DType.F32, t -> spoil(t, "logits", (long) ROW * ShardFixtures.V + 5, Float.NaN));
        Run r = distillOn(dir, shards, ", \"check_values\": false, \"steps\": 3");
        assertEquals(Main.EXIT_FAILED, r.status(), r.err());
        String last = r.err().strip().lines().reduce((a, b) -> b).orElse("");
        assertTrue(last.contains("shard-1.safetensors, sequence 1, position 2: the teacher's logit at column 5 is NaN"), r.err());
        assertFalse(r.err().contains("\tat ") || r.err().contains("Exception"), r.err());
    }

    @Test
    void aRunTokenizerOtherThanTheShardsIsRefused(@TempDir Path dir) throws IOException {
        Path made = dir.resolve("made-with.json"), other = dir.resolve("tokenizer.json");
        Files.writeString(made, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}");
        Files.writeString(other, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"b\": 0}}}");
        Path shards = ShardFixtures.write(dir, "dense", DType.F32, t -> { }, false, TeacherShards.sha256(made));
        refused(distillOn(dir, shards, ", \"tokenizer\": \"" + other + "\""), "'tokenizer' " + other, "is not the tokenizer the teacher's ids were made with",
                "manifest.json records 'tokenizer_sha256' " + TeacherShards.sha256(made));
        assertFalse(Files.exists(dir.resolve("out")), "nothing was written");
        Files.writeString(shards.resolve("manifest.json"), Files.readString(shards.resolve("manifest.json"))
                .replace(TeacherShards.sha256(made), "not-a-hash"));
        refused(distillOn(dir, shards, ""), "manifest.json", "'tokenizer_sha256' must be 64 lower-case hex digits");
    }

    @Test
    void generateRefusesATokenizerThatIsNotTheModels(@TempDir Path dir) throws IOException {
        Path model = tinyModel(dir, 300);
        BytePairTokenizer.train("a small text, a small text, and more of it", 257).save(model.resolve("tokenizer.json"));
        refused(run("generate", "--model", model.toString(), "--tokens", "5", "--device", "cpu", "--threads", "1"),
                "tokenizer.json holds 257 tokens but the model's vocabulary is 300");
    }

    @Test
    void aModelConfigOfAbsurdDepthIsRefusedAtOnce(@TempDir Path dir) throws IOException {
        refused(run("inspect", modelConfig(dir, "1000000000", "96").toString()), "config.json", "'n_layer' must be in [1, 1024], got 1000000000");
    }
}
