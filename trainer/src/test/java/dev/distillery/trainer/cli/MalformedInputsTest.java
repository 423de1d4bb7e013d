package dev.distillery.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Transformer;
import dev.distillery.runtime.nn.TransformerConfig;
import dev.distillery.trainer.data.TokenFile;

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

    @Test
    void absurdSizesAreRefusedNamingTheKeyAndTheLimit(@TempDir Path dir) throws IOException {
        refused(distill(dir, ", \"student\": {\"layers\": 1000000000}}"), "'student.layers' must be in [1, 1024], got 1000000000");
        refused(distill(dir, ", \"student\": {\"channels\": 2147483647, \"heads\": 1}}"), "'student.channels' must be in [1, 65536]");
        refused(distill(dir, ", \"student\": {\"vocab_size\": 1000000000}}"), "'student.vocab_size' must be in [1, 16777216]");
    }

    @Test
    void aModelConfigWithAFractionalSizeIsNamed(@TempDir Path dir) throws IOException {
        Path model = dir.resolve("model");
        Files.createDirectories(model);
        Files.writeString(model.resolve("config.json"), "{\"vocab_size\": 97, \"n_positions\": 16, \"n_layer\": 2, \"n_embd\": 96.7, \"n_head\": 4}");
        refused(run("inspect", model.toString()), "config.json", "'n_embd' must be an integer, got 96.7");
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
    void aCheckpointWithANonFiniteWeightIsNamedNotEvaluatedToNaN(@TempDir Path dir) throws IOException {
        Path model = dir.resolve("model");
        try (var kernels = new CpuKernels(1, "auto");
             var m = new Transformer(new TransformerConfig(16, 8, 1, 8, 2), kernels)) {
            m.initialize(1);
            m.parameters().get("h.0.mlp.c_fc.weight").setFloat(5, Float.NaN);
            ModelFiles.write(model, m);
        }
        Path tokens = dir.resolve("val.bin");
        TokenFile.write(tokens, new int[64]);
        refused(run("eval", "--model", model.toString(), "--tokens", tokens.toString(), "--device", "cpu", "--threads", "1"),
                "model.safetensors", "tensor 'h.0.mlp.c_fc.weight' element 5 is NaN");
    }

    @Test
    void tokenIdsOutsideTheVocabularyAreNamedBeforeAnythingIsWritten(@TempDir Path dir) throws IOException {
        Path model = dir.resolve("teacher");
        try (var kernels = new CpuKernels(1, "auto"); var m = new Transformer(new TransformerConfig(16, 8, 1, 8, 2), kernels)) {
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
}
