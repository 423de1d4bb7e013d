package dev.distillery.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.trainer.checkpoint.CheckpointStore;
import dev.distillery.trainer.cli.ChildJvm;
import dev.distillery.trainer.loop.StopRequests;

/**
 * Preemption: a {@code distill} process that gets SIGTERM, or whose launcher ends, finishes its
 * step, writes a checkpoint, says where, and exits with {@link StopRequests#EXIT_STOPPED}; the run
 * then resumes to the same bits as an uninterrupted one.
 */
class DistillSignalTest {

    private static final int STEPS = 400;

    @BeforeAll
    static void shards(@TempDir Path tmp) throws IOException {
        DistillRunTest.writeTeacherShards(tmp);
    }

    @AfterAll
    static void close() {
        DistillRunTest.close();
    }

    private record Stopped(int status, String stderr, int step) {
    }

    /** Runs distill in a child JVM until metrics.jsonl has a few steps, then {@code stop} it; returns how it ended. */
    private static Stopped runAndStop(Path out, List<String> jvmOptions, Consumer<Process> stop) throws Exception {
        Path config = out.resolveSibling(out.getFileName() + ".json");
        Files.writeString(config, DistillRunTest.config(out, "topk", STEPS, 0, 0.5).toJson());
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"));
        cmd.addAll(jvmOptions);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), "dev.distillery.trainer.cli.Main", "distill", "--config",
                config.toString(), "--device", "cpu", "--threads", "2"));
        Path log = out.resolveSibling(out.getFileName() + ".log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        Path metrics = out.resolve("metrics.jsonl");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline && p.isAlive()
                && (!Files.isRegularFile(metrics) || Files.readAllLines(metrics).size() < 10)) {
            Thread.sleep(10);
        }
        stop.accept(p);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the stopped run did not end:\n" + Files.readString(log));
        int step = CheckpointStore.open(out.resolve("checkpoints")).latest().orElseThrow().step();
        return new Stopped(p.exitValue(), Files.readString(log), step);
    }

    private static byte[] model(DistillRun.Result r) throws IOException {
        return Files.readAllBytes(r.lastCheckpoint().resolve("model.safetensors"));
    }

    @Test
    void sigtermCheckpointsAndTheResumedRunEndsBitIdentical(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("run");
        Stopped s = runAndStop(out, List.of(), Process::destroy);   // SIGTERM
        assertEquals(StopRequests.EXIT_STOPPED, s.status(), s.stderr());
        assertTrue(s.step() > 0 && s.step() < STEPS, "stopped at step " + s.step());
        assertTrue(s.stderr().contains("stopped by SIGTERM after step " + s.step() + " of " + STEPS) && s.stderr().contains("--resume"),
                s.stderr());
        long trainLines = Files.readAllLines(out.resolve("metrics.jsonl")).stream().filter(l -> l.contains("\"train\"")).count();
        assertEquals(s.step(), trainLines, "metrics.jsonl ends at the checkpoint");

        DistillRun.Result resumed = DistillRunTest.run(DistillRunTest.config(out, "topk", STEPS, 0, 0.5), true);
        DistillRun.Result whole = DistillRunTest.run(DistillRunTest.config(dir.resolve("whole"), "topk", STEPS, 0, 0.5), false);
        assertEquals(STEPS, resumed.step());
        assertArrayEquals(model(whole), model(resumed), "the run stopped by SIGTERM and resumed differs from an uninterrupted one");
    }

    @Test
    void aRunWhoseLauncherEndsStopsWithACheckpoint(@TempDir Path dir) throws Exception {
        Process launcher = new ProcessBuilder("sleep", "120").start();   // stands in for the launching JVM
        try {
            Stopped s = runAndStop(dir.resolve("run"), List.of("-D" + ChildJvm.LAUNCHER_PID + "=" + launcher.pid()),
                    child -> launcher.destroyForcibly());
            assertEquals(StopRequests.EXIT_STOPPED, s.status(), s.stderr());
            assertTrue(s.stderr().contains("stopped by the end of the launching process after step " + s.step()), s.stderr());
        } finally {
            launcher.destroyForcibly();
        }
    }
}
