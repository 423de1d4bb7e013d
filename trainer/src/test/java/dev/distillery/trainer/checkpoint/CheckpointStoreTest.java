package dev.distillery.trainer.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.LanguageModel;

class CheckpointStoreTest {

    private static void writeDummy(Path dir, int step) throws IOException {
        for (String f : CheckpointStore.REQUIRED) Files.writeString(dir.resolve(f), "step " + step);
    }

    @Test
    void latestPruneAndLeftoverPartialFolders(@TempDir Path root) throws IOException {
        CheckpointStore store = CheckpointStore.open(root);
        assertTrue(store.latest().isEmpty());
        for (int step : new int[]{10, 20, 30, 40}) store.save(step, dir -> writeDummy(dir, step));
        assertEquals(40, store.latest().orElseThrow().step());
        store.prune(2);
        assertEquals(List.of(30, 40), store.list().stream().map(CheckpointStore.Checkpoint::step).toList());
        // A crash mid-write leaves a partial folder: invisible to latest(), removed on open.
        Path partial = root.resolve(".step-00000050.partial");
        Files.createDirectories(partial);
        Files.writeString(partial.resolve("model.safetensors"), "torn");
        assertEquals(40, CheckpointStore.open(root).latest().orElseThrow().step());
        assertFalse(Files.exists(partial));
        // A 'latest' naming a folder that is gone falls back to the newest complete one.
        Files.writeString(root.resolve("latest"), "step-00000099\n");
        assertEquals(40, store.latest().orElseThrow().step());
        // A writer that fails leaves nothing behind.
        try {
            store.save(60, dir -> {
                throw new IOException("disk full");
            });
        } catch (IOException expected) {
            assertEquals("disk full", expected.getMessage());
        }
        assertEquals(40, store.latest().orElseThrow().step());
        assertFalse(Files.exists(root.resolve(".step-00000060.partial")));
    }

    /** kill -9 a process that writes checkpoints in a loop, again and again: never a torn checkpoint. */
    @Test
    void killDashNineAtAnyMomentNeverLeavesATornCheckpoint(@TempDir Path root) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Random random = new Random(42);
        int lastSeen = 0;
        for (int round = 0; round < 5; round++) {
            List<String> cmd = new ArrayList<>(List.of(java, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                    "-cp", System.getProperty("java.class.path"), CheckpointWriterChild.class.getName(), root.toString()));
            Path log = root.resolveSibling(root.getFileName() + "-child.log");
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            // Wait until the child has written past where it started, then kill it at a random moment.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (CheckpointStore.readOnly(root).latest().map(CheckpointStore.Checkpoint::step).orElse(0) <= lastSeen) {
                if (!p.isAlive()) throw new AssertionError("the checkpoint writer died on its own:\n" + Files.readString(log));
                assertTrue(System.nanoTime() < deadline, "no checkpoint within 60 s");
                Thread.sleep(5);
            }
            Thread.sleep(random.nextInt(150));
            p.destroyForcibly(); // SIGKILL on Linux: no shutdown hooks, no finally blocks
            assertTrue(p.waitFor(30, TimeUnit.SECONDS));

            CheckpointStore store = CheckpointStore.open(root);
            CheckpointStore.Checkpoint latest = store.latest().orElseThrow();
            assertTrue(latest.step() > lastSeen);
            for (CheckpointStore.Checkpoint c : store.list()) {
                try (var k = new dev.distillery.kernels.cpu.CpuKernels(1, "vector"); LanguageModel m = ModelFiles.read(c.dir(), k)) {
                    for (Tensor t : m.parameters().parameters()) {
                        for (long i = 0; i < t.numel(); i++) {
                            if (t.getFloat(i) != c.step()) {
                                throw new AssertionError(c.dir() + ": " + t.name() + "[" + i + "] = " + t.getFloat(i) + ", torn checkpoint");
                            }
                        }
                    }
                }
            }
            lastSeen = latest.step();
        }
    }
}
