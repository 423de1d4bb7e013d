package dev.distillery.trainer.teacher;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.trainer.data.TeacherManifest;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.loop.StopRequests;

/**
 * A teacher dump that stops (SIGTERM, a crash) keeps its whole shards, and {@code --resume}
 * writes the rest: the same shards, byte for byte, as a dump that never stopped; a resume with
 * other options is refused naming the option.
 */
class DumpResumeTest {

    private static final int SEQ = 16, SEQUENCES = 12_000, PER_SHARD = 300;
    private static Kernels kernels;
    private static Path data;

    @BeforeAll
    static void teacherAndTokens(@TempDir Path tmp) throws IOException {
        kernels = new CpuKernels(2, "auto");
        data = tmp;
        try (Gpt2 teacher = new Gpt2(new Gpt2Config(97, SEQ, 1, 16, 2), kernels)) {
            teacher.initialize(3);
            ModelFiles.write(tmp.resolve("teacher"), teacher);
        }
        Rng rng = new Rng(5);
        int[] tokens = new int[SEQUENCES * SEQ];
        for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(97);
        TokenFile.write(tmp.resolve("tokens.bin"), tokens);
    }

    @AfterAll
    static void close() {
        kernels.close();
    }

    private static LogitDump.Options options(Path out, TeacherTargets.Kind kind, double temperature, boolean overwrite, boolean resume) {
        return new LogitDump.Options(data.resolve("teacher"), data.resolve("tokens.bin"), out, kind, 5, DType.BF16, temperature, SEQ,
                PER_SHARD, 4, 0, 7, "test", null, overwrite, null, resume);
    }

    private static TeacherManifest dump(LogitDump.Options o) throws IOException {
        PrintWriter quiet = new PrintWriter(new StringWriter());
        return LogitDump.run(o, kernels, quiet, quiet);
    }

    @Test
    void aDumpStoppedBySigtermResumesToTheShardsOfOneThatNeverStopped(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("stopped");
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"),
                "dev.distillery.trainer.cli.Main", "teacher", "dump-logits", "--teacher", data.resolve("teacher").toString(),
                "--tokens", data.resolve("tokens.bin").toString(), "--out", out.toString(), "--targets", "sampled", "--k", "5",
                "--seq-len", "" + SEQ, "--shard-sequences", "" + PER_SHARD, "--batch", "4", "--seed", "7", "--tokenizer-id", "test",
                "--device", "cpu", "--threads", "2"));
        Path log = dir.resolve("stopped.log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline && p.isAlive() && !Files.exists(out.resolve("shard-00001.safetensors"))) Thread.sleep(5);
        // twice, as a signal to the whole process group reaches a child JVM directly and, a moment
        // later, through its launcher (at once, the second would merge into the pending first)
        p.toHandle().destroy();
        Thread.sleep(5);
        p.toHandle().destroy();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the stopped dump did not end:\n" + Files.readString(log));
        String said = Files.readString(log);
        assertEquals(StopRequests.EXIT_STOPPED, p.exitValue(), said);
        assertTrue(said.contains("stopped by SIGTERM during shard") && said.contains("--resume"), said);
        assertFalse(Files.exists(out.resolve("manifest.json")), "a stopped dump has no manifest");
        long whole;
        try (var files = Files.list(out)) {
            whole = files.filter(f -> f.getFileName().toString().matches("shard-\\d+\\.safetensors")).count();
        }
        assertTrue(whole >= 2 && whole < SEQUENCES / PER_SHARD, whole + " whole shards when it stopped");
        Files.writeString(out.resolve(".shard-00099.safetensors.1.x.tmp"), "what a halted process leaves");

        TeacherManifest resumed = dump(options(out, TeacherTargets.Kind.SAMPLED, 1.0, false, true));
        TeacherManifest never = dump(options(dir.resolve("whole"), TeacherTargets.Kind.SAMPLED, 1.0, false, false));
        assertEquals(never.shards(), resumed.shards(), "every shard's sequences and SHA-256");
        try (var files = Files.list(out)) {
            assertTrue(files.noneMatch(f -> f.getFileName().toString().endsWith(".tmp")), "the halted write's temporary file is gone");
        }
    }

    @Test
    void aResumeContinuesTheSameDumpOrIsRefused(@TempDir Path dir) throws IOException {
        Path out = dir.resolve("shards");
        dump(options(out, TeacherTargets.Kind.TOP_K, 1.0, false, false));
        IOException finished = assertThrows(IOException.class, () -> dump(options(out, TeacherTargets.Kind.TOP_K, 1.0, false, true)));
        assertTrue(finished.getMessage().contains("finished dump"), finished.getMessage());

        Files.delete(out.resolve("manifest.json"));   // as if it stopped after its last shard
        IOException other = assertThrows(IOException.class, () -> dump(options(out, TeacherTargets.Kind.TOP_K, 2.0, false, true)));
        assertTrue(other.getMessage().contains("'temperature' was 1.0") && other.getMessage().contains("now 2.0"), other.getMessage());
        other = assertThrows(IOException.class, () -> dump(options(out, TeacherTargets.Kind.SAMPLED, 1.0, false, true)));
        assertTrue(other.getMessage().contains("'targets' was topk"), other.getMessage());
        assertThrows(IllegalArgumentException.class, () -> dump(options(out, TeacherTargets.Kind.TOP_K, 1.0, true, true)));
        assertEquals(SEQUENCES, dump(options(out, TeacherTargets.Kind.TOP_K, 1.0, false, true)).shards().stream()
                .mapToInt(TeacherManifest.Shard::sequences).sum());

        Path fresh = dir.resolve("other");
        Files.createDirectories(fresh);
        Files.writeString(fresh.resolve("notes.txt"), "not a dump");
        IOException none = assertThrows(IOException.class, () -> dump(options(fresh, TeacherTargets.Kind.TOP_K, 1.0, false, true)));
        assertTrue(none.getMessage().contains("no dump.json"), none.getMessage());
    }
}
