package dev.distillery.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.File;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.runtime.Rng;
import dev.distillery.trainer.cli.Main;
import dev.distillery.trainer.data.TokenFile;

/**
 * {@code mpirun -np 2}: two CPU ranks, each with half of every global batch, end with parameters
 * bit-identical to one process that adds the same two halves as two micro-batches in the same
 * order (batch_size / 2, grad_accum 2), every 3 steps and after a stop and a resume, and with two
 * micro-batches each the process of four; a resume with
 * another world size is refused; a rank killed mid-run ends the job with the rank named, and
 * the last checkpoint stays whole. Skipped where Open MPI's mpirun is not installed.
 */
class DataParallelTest {

    private static final int SEQ = 16, WINDOWS = 24, VOCAB = 97;

    private static Path mpirun() {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(File.pathSeparator)) {
            Path p = Path.of(dir, "mpirun");
            if (Files.isExecutable(p)) return p;
        }
        return null;
    }

    /**
     * The trainer under mpirun, through sh: Open MPI 4's mpirun rewrites a {@code java} command
     * line (it takes any argument containing "cp" for a class path), so the ranks start a shell
     * that execs java.
     */
    private static Process ranks(int n, Path log, String... args) throws Exception {
        return ranks(n, log, List.of(), args);
    }

    /** {@link #ranks(int, Path, String...)} with JVM options ({@code -D...}) for every rank. */
    private static Process ranks(int n, Path log, List<String> jvm, String... args) throws Exception {
        List<String> java = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"));
        java.addAll(jvm);
        java.addAll(List.of("-cp", System.getProperty("java.class.path"), "dev.distillery.trainer.cli.Main"));
        java.addAll(List.of(args));
        StringBuilder line = new StringBuilder("exec");
        for (String a : java) line.append(" '").append(a.replace("'", "'\\''")).append('\'');
        List<String> cmd = new ArrayList<>(List.of(mpirun().toString(), "--oversubscribe", "-np", Integer.toString(n)));
        if ("root".equals(System.getProperty("user.name"))) cmd.add(1, "--allow-run-as-root");
        cmd.addAll(List.of("sh", "-c", line.toString()));
        return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }

    private static int await(Process p, Path log) throws Exception {
        assertTrue(p.waitFor(180, TimeUnit.SECONDS), "mpirun did not end: " + Files.readString(log));
        return p.exitValue();
    }

    @Test
    void twoRanksMatchOneProcessOfTwoMicroBatchesBitForBit(@TempDir Path dir) throws Exception {
        assumeTrue(mpirun() != null, "Open MPI's mpirun is not installed");
        Path teacher = Path.of(DataParallelTest.class.getResource("/dev/distillery/trainer/hf/llama-tiny").toURI());
        Rng rng = new Rng(3);
        int[] tokens = new int[WINDOWS * SEQ];
        for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(VOCAB);
        TokenFile.write(dir.resolve("train.bin"), tokens);
        String common = "\"teacher_model\": {\"path\": \"" + teacher + "\", \"tokens\": \"" + dir.resolve("train.bin") + "\", \"seq_len\": " + SEQ
                + "}, \"steps\": 6, \"lr\": 0.01, \"seed\": 5, \"threads\": 1, \"checkpoint_every\": 3, "
                + "\"student\": {\"architecture\": \"llama\", \"layers\": 1, \"channels\": 16, \"heads\": 2}, \"loss\": {\"alpha\": 0.3}, ";
        Path one = write(dir, "one", common + "\"batch_size\": 4, \"grad_accum\": 2"), two = write(dir, "two", common + "\"batch_size\": 8"),
                split = write(dir, "split", common + "\"batch_size\": 8");
        assertEquals(0, Main.execute(new String[]{"distill", "--config", one.toString()}, new PrintWriter(new StringWriter()),
                new PrintWriter(new StringWriter())));
        Path log = dir.resolve("two.log");
        assertEquals(0, await(ranks(2, log, "distill", "--config", two.toString()), log), Files.readString(log));
        assertTrue(Files.readString(log).contains("data parallel: rank 0 of 2 (Open MPI"), Files.readString(log));
        for (String step : List.of("step-00000003", "step-00000006")) {
            assertEquals(-1, Files.mismatch(dir.resolve("one/checkpoints/" + step + "/model.safetensors"),
                    dir.resolve("two/checkpoints/" + step + "/model.safetensors")), step + ": two ranks against one process");
        }
        assertEquals(Files.readAllLines(dir.resolve("one/metrics.jsonl")).stream().map(DataParallelTest::lossOf).toList(),
                Files.readAllLines(dir.resolve("two/metrics.jsonl")).stream().map(DataParallelTest::lossOf).toList());
        // two ranks of two micro-batches each: the bits of one process of four (rank r's micro-batch a is its a·2 + r)
        Path four = write(dir, "four", common + "\"batch_size\": 4, \"grad_accum\": 4"),
                twoByTwo = write(dir, "two-by-two", common + "\"batch_size\": 8, \"grad_accum\": 2");
        assertEquals(0, Main.execute(new String[]{"distill", "--config", four.toString()}, new PrintWriter(new StringWriter()),
                new PrintWriter(new StringWriter())));
        assertEquals(0, await(ranks(2, log, "distill", "--config", twoByTwo.toString()), log), Files.readString(log));
        for (String step : List.of("step-00000003", "step-00000006")) {
            assertEquals(-1, Files.mismatch(dir.resolve("four/checkpoints/" + step + "/model.safetensors"),
                    dir.resolve("two-by-two/checkpoints/" + step + "/model.safetensors")), step + ": two ranks of two micro-batches against one process of four");
        }
        // stopped after step 3 and resumed by two ranks: the same bits
        assertEquals(0, await(ranks(2, log, "distill", "--config", split.toString(), "--stop-after", "3"), log), Files.readString(log));
        assertEquals(0, await(ranks(2, log, "distill", "--config", split.toString(), "--resume"), log), Files.readString(log));
        assertEquals(-1, Files.mismatch(dir.resolve("one/checkpoints/step-00000006/model.safetensors"),
                dir.resolve("split/checkpoints/step-00000006/model.safetensors")), "two ranks, stopped and resumed");
        // another world size cannot continue it
        Path more = write(dir, "more", common + "\"batch_size\": 8, \"steps\": 9");
        Files.move(dir.resolve("split"), dir.resolve("more"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        assertTrue(await(ranks(1, log, "distill", "--config", more.toString(), "--resume"), log) != 0);
        assertTrue(Files.readString(log).contains("was written by a run of 2 ranks; this one has 1"), Files.readString(log));
    }

    @Test
    void aKilledRankEndsTheJobNamingItAndLeavesTheLastCheckpointWhole(@TempDir Path dir) throws Exception {
        assumeTrue(mpirun() != null, "Open MPI's mpirun is not installed");
        Started run = startLongRun(dir, List.of());
        long t0 = System.nanoTime();
        run.victim().destroyForcibly();
        assertTrue(run.job().waitFor(60, TimeUnit.SECONDS), "the job outlived its killed rank by a minute: " + Files.readString(run.log()));
        double seconds = (System.nanoTime() - t0) / 1e9;
        String out = Files.readString(run.log());
        assertTrue(run.job().exitValue() != 0 && out.contains("process rank 1") && out.contains("exited on signal 9"),
                "exit " + run.job().exitValue() + " after killing " + run.victim().info().commandLine().orElse("?") + ":\n" + out);
        assertTrue(seconds < 30, "the job took " + seconds + " s to end after a rank died");
        assertLastCheckpointWhole(dir);
    }

    /**
     * A rank that hangs (stopped with SIGSTOP: alive, never joining the next collective) ends the
     * job within the collective timeout: the rank left waiting says where it waited, and exits.
     */
    @Test
    void aHungRankEndsTheJobWithinTheCollectiveTimeout(@TempDir Path dir) throws Exception {
        assumeTrue(mpirun() != null, "Open MPI's mpirun is not installed");
        Started run = startLongRun(dir, List.of("-Ddistillery.collectiveTimeout=5"));
        long t0 = System.nanoTime();
        new ProcessBuilder("kill", "-STOP", Long.toString(run.victim().pid())).start().waitFor();
        try {
            assertTrue(run.job().waitFor(60, TimeUnit.SECONDS), "the job outlived its hung rank by a minute: " + Files.readString(run.log()));
        } finally {
            run.victim().destroyForcibly();
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        String out = Files.readString(run.log());
        // SIGSTOP lands between collectives (a barrier is arrival notes only), where rank 0 finds the victim's note missing and
        // names it; in the microseconds an allgather's transfer takes it could land inside one, where no rank can be named
        String named = "rank 0 of 2: rank 1 has not reached MPI_", inside = "a rank has died or hangs inside it";
        assertTrue(run.job().exitValue() != 0 && (out.contains(named) && out.contains("it has died or hangs") || out.contains(inside)),
                "exit " + run.job().exitValue() + ":\n" + out);
        assertTrue(seconds >= 5 && seconds < 35, "the job took " + seconds + " s to end after a rank hung (timeout 5 s)");
        assertLastCheckpointWhole(dir);
    }

    private record Started(Process job, ProcessHandle victim, Path log) {
    }

    /** Two ranks of a run of many steps with a checkpoint every 5, once the first checkpoint exists; the victim is rank 1. */
    private static Started startLongRun(Path dir, List<String> jvm) throws Exception {
        Path teacher = Path.of(DataParallelTest.class.getResource("/dev/distillery/trainer/hf/llama-tiny").toURI());
        Rng rng = new Rng(4);
        int[] tokens = new int[WINDOWS * SEQ];
        for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(VOCAB);
        TokenFile.write(dir.resolve("train.bin"), tokens);
        Path cfg = write(dir, "run", "\"teacher_model\": {\"path\": \"" + teacher + "\", \"tokens\": \"" + dir.resolve("train.bin")
                + "\", \"seq_len\": " + SEQ + "}, \"steps\": 100000, \"batch_size\": 4, \"threads\": 1, \"checkpoint_every\": 5, "
                + "\"student\": {\"architecture\": \"llama\", \"layers\": 1, \"channels\": 16, \"heads\": 2}");
        Path log = dir.resolve("run.log");
        Process job = ranks(2, log, jvm, "distill", "--config", cfg.toString());
        Path latest = dir.resolve("run/checkpoints/latest");
        for (int i = 0; i < 600 && !Files.exists(latest); i++) Thread.sleep(100);
        assertTrue(Files.exists(latest), "no checkpoint within a minute: " + Files.readString(log));
        ProcessHandle victim = job.descendants().filter(h -> h.info().commandLine().orElse("").contains("cli.Main distill"))
                .filter(h -> worldRank(h) == 1).findFirst().orElseThrow(() -> new AssertionError("no process of rank 1 under mpirun"));
        return new Started(job, victim, log);
    }

    /** The Open MPI rank a process was started as (its OMPI_COMM_WORLD_RANK), or -1. */
    private static int worldRank(ProcessHandle h) {
        try {
            for (String entry : Files.readString(Path.of("/proc", Long.toString(h.pid()), "environ")).split("\0")) {
                if (entry.startsWith("OMPI_COMM_WORLD_RANK=")) return Integer.parseInt(entry.substring("OMPI_COMM_WORLD_RANK=".length()));
            }
        } catch (IOException | RuntimeException e) {
            // gone, or not ours to read
        }
        return -1;
    }

    private static void assertLastCheckpointWhole(Path dir) throws IOException {
        Path latest = dir.resolve("run/checkpoints/latest");
        Path last = dir.resolve("run/checkpoints").resolve(Files.readString(latest).strip());
        StringWriter inspect = new StringWriter();
        assertEquals(0, Main.execute(new String[]{"inspect", last.toString()}, new PrintWriter(inspect), new PrintWriter(new StringWriter())),
                "the last checkpoint reads whole: " + inspect);
    }

    private static String lossOf(String line) {
        int at = line.indexOf("\"loss\":");
        return at < 0 ? line.substring(0, Math.min(20, line.length())) : line.substring(at, line.indexOf(',', at));
    }

    private static Path write(Path dir, String name, String body) throws Exception {
        Path file = dir.resolve(name + ".json");
        Files.writeString(file, "{\"out\": \"" + dir.resolve(name) + "\", " + body + "}");
        return file;
    }
}
