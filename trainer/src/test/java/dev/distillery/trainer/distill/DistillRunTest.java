package dev.distillery.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.io.SafetensorsWriter;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.trainer.data.TeacherManifest;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.teacher.LogitDump;

/**
 * The distillation loop end to end on tiny shards written by {@link LogitDump} from a seeded
 * random teacher: KL to the teacher falls, resume is bit-identical, a non-finite loss stops the
 * run with the last checkpoint intact.
 */
class DistillRunTest {

    static final int VOCAB = 61, SEQ = 12;
    static Kernels kernels;
    static Path data;

    @BeforeAll
    static void writeTeacherShards(@TempDir Path tmp) throws IOException {
        kernels = new CpuKernels(2, "auto");
        data = tmp;
        // Token stream with structure a teacher can express: mostly a fixed successor per token.
        Rng rng = new Rng(7);
        int[] tokens = new int[SEQ * 96];
        tokens[0] = 1;
        for (int i = 1; i < tokens.length; i++) tokens[i] = rng.nextDouble() < 0.8 ? (tokens[i - 1] * 7 + 3) % VOCAB : rng.nextInt(VOCAB);
        TokenFile.write(tmp.resolve("tokens.bin"), tokens);
        try (Gpt2 teacher = new Gpt2(new Gpt2Config(VOCAB, SEQ, 1, 16, 2), kernels)) {
            teacher.initialize(99);
            // Sharpen the random teacher so its distribution is far from uniform.
            var wte = teacher.parameters().get("wte.weight");
            for (long i = 0; i < wte.numel(); i++) wte.setFloat(i, wte.getFloat(i) * 40);
            ModelFiles.write(tmp.resolve("teacher"), teacher);
        }
        PrintWriter quiet = new PrintWriter(new StringWriter());
        LogitDump.run(new LogitDump.Options(tmp.resolve("teacher"), tmp.resolve("tokens.bin"), tmp.resolve("dense"), TeacherTargets.Kind.DENSE,
                0, DType.F32, 1.0, SEQ, 40, 8, 0, 1, "test", null, false), kernels, quiet, quiet);
        LogitDump.run(new LogitDump.Options(tmp.resolve("teacher"), tmp.resolve("tokens.bin"), tmp.resolve("topk"), TeacherTargets.Kind.TOP_K,
                8, DType.BF16, 1.0, SEQ, 40, 8, 0, 1, "test", null, false), kernels, quiet, quiet);
        LogitDump.run(new LogitDump.Options(tmp.resolve("teacher"), tmp.resolve("tokens.bin"), tmp.resolve("sampled"), TeacherTargets.Kind.SAMPLED,
                16, DType.F32, 1.0, SEQ, 40, 8, 0, 1, "test", null, false), kernels, quiet, quiet);
    }

    @AfterAll
    static void close() {
        kernels.close();
    }

    static DistillConfig config(Path out, String shards, int steps, int checkpointEvery, double alpha) {
        return new DistillConfig(data.resolve(shards).toString(), data.resolve("dense").toString(), out.toString(), null, null,
                DistillConfig.Student.gpt2(1, 16, 2, SEQ, VOCAB + 3), steps, 4, 2, 1e-2, 1e-3, 2, 0.0, null, null, 1.0,
                new DistillConfig.Loss(1.0, alpha, "forward_kl", null, true, "tail", null, "mean", 7), 0, 4, checkpointEvery, 10, 5L, 0, 2, true, null, null, null, null, null, null, null, null, null, null);
    }

    /** {@code c} with a student of {@code architecture}: llama gets grouped queries (2 heads over 1 key/value head), RMSNorm, RoPE, SwiGLU. */
    private static DistillConfig ofArchitecture(DistillConfig c, String architecture) throws IOException {
        if (architecture.equals("gpt2")) return c;
        String json = c.toJson().replace("\"architecture\" : \"gpt2\"", "\"architecture\" : \"" + architecture + "\", \"kv_heads\" : 1");
        DistillConfig d = DistillConfig.fromJson(json);
        assertEquals(DistillConfig.Student.Architecture.LLAMA, d.student().family(), json);
        return d;
    }

    static DistillRun.Result run(DistillConfig c, boolean resume) throws IOException {
        return run(c, resume, 0);
    }

    static DistillRun.Result run(DistillConfig c, boolean resume, int stopAfter) throws IOException {
        return run(c, resume, stopAfter, kernels);
    }

    static DistillRun.Result run(DistillConfig c, boolean resume, int stopAfter, Kernels on) throws IOException {
        PrintWriter quiet = new PrintWriter(new StringWriter());
        return DistillRun.run(c, on, resume, stopAfter, quiet, quiet);
    }

    /** The manifest's SHA-256 of each shard, hashed as the dump wrote it, is the file's on disk. */
    @Test
    void dumpedShardsCarryTheHashOfTheirBytes() throws IOException {
        for (String set : List.of("dense", "topk", "sampled")) {
            TeacherManifest m = TeacherManifest.read(data.resolve(set).resolve("manifest.json"));
            assertTrue(m.shards().size() > 1, set + ": several shards");
            for (TeacherManifest.Shard shard : m.shards()) {
                assertEquals(TeacherShards.sha256(data.resolve(set).resolve(shard.file())), shard.sha256(), set + "/" + shard.file());
            }
        }
    }

    /**
     * The whole loop on {@code CudaKernels} over the CPU emulation of the device (parameters,
     * moments, activations and staged teacher batches in "device" memory that the host cannot
     * read): it tracks the CPU run of the same config, and a checkpoint written on the CPU
     * resumes on the device (and the other way round works by the same files).
     */
    @Test
    void theLoopRunsOnTheEmulatedCudaDeviceAndTracksTheCpu(@TempDir Path out) throws Exception {
        try (var gcc = new dev.distillery.kernels.cuda.EmulationBuild("distillery-emu-trainer")) {
            Path library = gcc.build("emu_device.cpp", "libdistillery_emu.so", "-O2", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE", "-shared", "-fPIC");
            DistillRun.Result cpu = run(config(out.resolve("cpu"), "topk", 8, 4, 0.5), false);
            DistillRun.Result split;
            try (var device = new dev.distillery.kernels.cuda.EmulatedCudaBackend(library);
                 var cuda = new dev.distillery.kernels.cuda.CudaKernels(device)) {
                DistillRun.Result gpu = run(config(out.resolve("cuda"), "topk", 8, 4, 0.5), false, 0, cuda);
                assertEquals(cpu.step(), gpu.step());
                assertEquals(cpu.lastEval().divergence(), gpu.lastEval().divergence(), 1e-3 * cpu.lastEval().divergence(), "held-out KL after 8 steps");
                assertEquals(cpu.lastEval().ce(), gpu.lastEval().ce(), 1e-3 * cpu.lastEval().ce(), "held-out CE after 8 steps");
                assertEquals(cpu.lastEval().agreement(), gpu.lastEval().agreement(), 0.02, "top-1 agreement");
                assertTrue(device.launches() > 50L * gpu.step(), device.launches() + " kernels ran on the emulated device in " + gpu.step() + " steps");

                // CPU for 4 steps, then the device from that checkpoint to step 8.
                run(config(out.resolve("split"), "topk", 8, 4, 0.5), false, 4);
                split = run(config(out.resolve("split"), "topk", 8, 4, 0.5), true, 0, cuda);
            }
            assertEquals(8, split.step());
            try (LanguageModel a = ModelFiles.read(cpu.lastCheckpoint(), kernels); LanguageModel b = ModelFiles.read(split.lastCheckpoint(), kernels)) {
                for (var t : a.parameters().parameters()) {
                    float[] x = t.toFloatArray(), y = b.parameters().get(t.name()).toFloatArray();
                    double diff = 0, scale = 1e-3;
                    for (int i = 0; i < x.length; i++) {
                        diff = Math.max(diff, Math.abs(x[i] - y[i]));
                        scale = Math.max(scale, Math.abs(x[i]));
                    }
                    assertTrue(diff <= 1e-3 * scale, t.name() + ": CPU-then-device run differs from the CPU run by " + diff);
                }
            }
        }
    }

    /**
     * bf16 mixed precision tracks fp32: the same config, step for step, on the CPU's bf16 GEMM
     * (AMX or AVX512-BF16), for a GPT-2 student and for a Llama one (RMSNorm, RoPE, SwiGLU,
     * grouped queries, whose activations the bf16 path stores differently). The losses part (the runs are not the same arithmetic) but stay within
     * 3% at every step, and both fall as far.
     */
    @ParameterizedTest
    @ValueSource(strings = {"gpt2", "llama"})
    void aBf16RunTracksTheFp32RunStepForStep(String architecture, @TempDir Path out) throws IOException {
        try (CpuKernels bf16 = new CpuKernels(2, "auto", Precision.BF16)) {
            assumeTrue(bf16.precision() == Precision.BF16, () -> "skipped: no bf16 arithmetic here: " + bf16.describe());
            DistillRun.Result fp32Run = run(ofArchitecture(config(out.resolve("fp32"), "dense", 60, 0, 0.5), architecture), false);
            DistillRun.Result bf16Run = run(ofArchitecture(config(out.resolve("bf16"), "dense", 60, 0, 0.5), architecture), false, 0, bf16);
            List<Double> a = trainLosses(out.resolve("fp32")), b = trainLosses(out.resolve("bf16"));
            assertEquals(60, a.size());
            assertEquals(60, b.size());
            double worst = 0;
            for (int i = 0; i < a.size(); i++) worst = Math.max(worst, Math.abs(a.get(i) - b.get(i)) / a.get(i));
            assertTrue(worst < 0.03, "bf16 loss parts from fp32 by up to " + worst);
            assertTrue(worst > 0, "bf16 gave fp32's bits: its GEMMs did not round");
            assertTrue(b.get(59) < 0.7 * b.get(0), "bf16 loss " + b.get(0) + " -> " + b.get(59));
            assertEquals(fp32Run.lastEval().divergence(), bf16Run.lastEval().divergence(), 0.05 * fp32Run.lastEval().divergence(),
                    "held-out KL after 60 steps");
        }
    }

    /**
     * {@code recompute_attention} reaches the step: the same losses, bit for bit, as a run that
     * keeps attention's probabilities, in a smaller workspace.
     */
    @Test
    void aRunRecomputingAttentionGivesTheLossesOfOneKeepingItInLessMemory(@TempDir Path out) throws IOException {
        DistillConfig one = config(out.resolve("keep"), "dense", 8, 0, 0.5);
        DistillConfig keep = DistillConfig.fromJson(one.toJson().replace("\"layers\" : 1", "\"layers\" : 3"));   // probabilities of several layers
        assertEquals(3, keep.student().layers());
        String json = keep.toJson().replace("\"recompute_attention\" : false", "\"recompute_attention\" : true")
                .replace(out.resolve("keep").toString(), out.resolve("again").toString());
        DistillConfig again = DistillConfig.fromJson(json);
        assertTrue(again.recomputeAttention(), json);
        long kept = run(keep, false).workspacePeak(), madeAgain = run(again, false).workspacePeak();
        assertEquals(trainLosses(out.resolve("keep")), trainLosses(out.resolve("again")));
        assertTrue(madeAgain < kept, "workspace " + madeAgain + " against " + kept);
    }

    private static List<Double> trainLosses(Path run) throws IOException {
        var json = new ObjectMapper();
        List<Double> losses = new ArrayList<>();
        for (String line : Files.readAllLines(run.resolve("metrics.jsonl"))) {
            var r = json.readTree(line);
            if (r.get("kind").asText().equals("train")) losses.add(r.get("loss").asDouble());
        }
        return losses;
    }

    @Test
    void dumpedShardsAreValidAndHoldTheTeachersTopK() throws IOException {
        try (TeacherShards dense = TeacherShards.open(data.resolve("dense"), true);
             TeacherShards topk = TeacherShards.open(data.resolve("topk"), true)) {
            assertEquals(96, dense.sequences());
            assertEquals(3, dense.manifest().shards().size(), "40 + 40 + 16 sequences");
            for (int s : new int[]{0, 41, 95}) {
                var d = (dev.distillery.kernels.distill.TeacherTargets.Dense) dense.sequence(s).targets();
                var t = (dev.distillery.kernels.distill.TeacherTargets.TopK) topk.sequence(s).targets();
                for (int r = 0; r < SEQ; r++) {
                    assertEquals(d.top1(r), t.top1(r), "sequence " + s + ", row " + r);
                    double max = Double.NEGATIVE_INFINITY, sum = 0;
                    for (int j = 0; j < VOCAB; j++) max = Math.max(max, d.type().read(d.logits(), (long) r * VOCAB + j));
                    for (int j = 0; j < VOCAB; j++) sum += Math.exp(d.type().read(d.logits(), (long) r * VOCAB + j) - max);
                    assertEquals(max + Math.log(sum), t.logsumexp().getAtIndex(ValueLayout.JAVA_FLOAT, r), 1e-4 * Math.max(1, Math.abs(max)),
                            "logsumexp of sequence " + s + ", row " + r);
                    for (int i = 1; i < 8; i++) {
                        assertTrue(t.type().read(t.logits(), (long) r * 8 + i - 1) >= t.type().read(t.logits(), (long) r * 8 + i), "descending");
                    }
                }
            }
        }
    }

    @Test
    void distillationLowersKlToTheTeacherForEveryTargetKind(@TempDir Path out) throws IOException {
        for (String kind : List.of("dense", "topk", "sampled")) {
            DistillRun.Result before = run(config(out.resolve(kind + "0"), kind, 1, 0, 0.2), false);
            DistillRun.Result after = run(config(out.resolve(kind), kind, 60, 0, 0.2), false);
            assertTrue(after.lastEval().divergence() < 0.5 * before.lastEval().divergence(),
                    kind + ": KL " + before.lastEval().divergence() + " -> " + after.lastEval().divergence());
            assertTrue(after.lastEval().agreement() > before.lastEval().agreement(), kind + ": agreement");
        }
    }

    @Test
    void resumedRunEndsBitIdenticalToAnUninterruptedOne(@TempDir Path out) throws IOException {
        DistillRun.Result whole = run(config(out.resolve("whole"), "topk", 14, 0, 0.5), false);
        // Interrupted: the same run stopped after step 7 (checkpoints at 3, 6, 7), then resumed to 14.
        assertEquals(7, run(config(out.resolve("split"), "topk", 14, 3, 0.5), false, 7).step());
        IOException refused = assertThrows(IOException.class, () -> run(config(out.resolve("split"), "topk", 14, 3, 0.5), false));
        assertTrue(refused.getMessage().contains("--resume"), refused.getMessage());
        DistillRun.Result resumed = run(config(out.resolve("split"), "topk", 14, 3, 0.5), true);
        assertEquals(14, resumed.step());
        byte[] a = Files.readAllBytes(whole.lastCheckpoint().resolve("model.safetensors"));
        byte[] b = Files.readAllBytes(resumed.lastCheckpoint().resolve("model.safetensors"));
        assertArrayEquals(a, b, "parameters after resume differ from the uninterrupted run");
        assertArrayEquals(momentsOf(whole), momentsOf(resumed));
        long trainLines = Files.readAllLines(out.resolve("split/metrics.jsonl")).stream().filter(l -> l.contains("\"train\"")).count();
        assertEquals(14, trainLines, "metrics.jsonl reads as one run");
        assertTrue(Files.isRegularFile(out.resolve("split/curves.png")));
    }

    private static float[] momentsOf(DistillRun.Result r) throws IOException {
        try (var st = dev.distillery.runtime.io.SafetensorsFile.open(r.lastCheckpoint().resolve("trainer_state.safetensors"))) {
            return st.tensor("adam.v").toFloatArray();
        }
    }

    @Test
    void aNonFiniteLossStopsTheRunAndKeepsTheLastGoodCheckpoint(@TempDir Path out) throws IOException {
        // Copy the dense shards, then poison one teacher logit of one sequence with NaN.
        Path bad = out.resolve("bad");
        Files.createDirectories(bad);
        TeacherManifest m;
        try (TeacherShards good = TeacherShards.open(data.resolve("dense"), false); Arena arena = Arena.ofConfined()) {
            m = good.manifest();
            int s = good.sequences();
            MemorySegment ids = arena.allocate(4L * s * SEQ), logits = arena.allocate(4L * s * SEQ * VOCAB);
            for (int i = 0; i < s; i++) {
                var seq = good.sequence(i);
                MemorySegment.copy(seq.inputIds(), 0, ids, 4L * i * SEQ, 4L * SEQ);
                MemorySegment.copy(((dev.distillery.kernels.distill.TeacherTargets.Dense) seq.targets()).logits(), 0, logits,
                        4L * i * SEQ * VOCAB, 4L * SEQ * VOCAB);
            }
            for (int i = 0; i < s; i++) logits.setAtIndex(ValueLayout.JAVA_FLOAT, (long) i * SEQ * VOCAB + 5, Float.NaN);
            SafetensorsWriter.write(bad.resolve("shard.safetensors"), List.of(
                    new SafetensorsWriter.Item("input_ids", DType.I32, new int[]{s, SEQ}, ids),
                    new SafetensorsWriter.Item("logits", DType.F32, new int[]{s, SEQ, VOCAB}, logits)), Map.of());
            new TeacherManifest(1, VOCAB, SEQ, "dense", 0, "f32", 1.0, "t", null, "t",
                    List.of(new TeacherManifest.Shard("shard.safetensors", s, TeacherShards.sha256(bad.resolve("shard.safetensors")))))
                    .write(bad.resolve("manifest.json"));
        }
        // Train on good shards with a checkpoint at step 2, then continue on the poisoned ones.
        Path run = out.resolve("run");
        DistillConfig good = config(run, "dense", 4, 2, 0.5).withSteps(2);
        run(good, false);
        byte[] before = Files.readAllBytes(run.resolve("checkpoints/step-00000002/model.safetensors"));
        // The value check finds the NaN before anything runs, naming the file, the sequence and the position.
        DistillConfig checked = new DistillConfig(bad.toString(), null, run.toString(), null, null, good.student(), 4, 4, 1,
                1e-2, 1e-3, 2, 0.0, null, null, 1.0, good.loss(), 0, 4, 1, 10, 5L, 0, 2, true, null, null, null, null, null, null, null, null, null, null);
        IOException refused = assertThrows(IOException.class, () -> run(checked, true));
        assertTrue(refused.getMessage().endsWith("shard.safetensors, sequence 0, position 0: logits: token 5 is NaN; teacher logits must be finite"),
                refused.getMessage());
        // Without it (check_values: false), the step's own guard stops the run at the first batch that holds one.
        DistillConfig poisoned = new DistillConfig(bad.toString(), null, run.toString(), null, null, good.student(), 4, 4, 1,
                1e-2, 1e-3, 2, 0.0, null, null, 1.0, good.loss(), 0, 4, 1, 10, 5L, 0, 2, true, false, null, null, null, null, null, null, null, null, null);
        IOException e = assertThrows(IOException.class, () -> run(poisoned, true));
        assertTrue(e.getMessage().contains("step 3") && e.getMessage().matches(".*shard\\.safetensors, sequence \\d+, position 0: the teacher's logit at column 5 is NaN.*")
                && e.getMessage().contains("step-00000002"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(run.resolve("checkpoints/step-00000002/model.safetensors")));
        assertEquals(2, dev.distillery.trainer.checkpoint.CheckpointStore.open(run.resolve("checkpoints")).latest().orElseThrow().step());
    }

    @Test
    void aDivergingRunStopsBeforeTheBadUpdate(@TempDir Path out) throws IOException {
        Path run = out.resolve("run");
        DistillConfig c = config(run, "dense", 30, 1, 0.5);
        DistillConfig exploding = new DistillConfig(c.teacher(), null, c.out(), null, null, c.student(), 30, 4, 1, 1e30, 1e30, 0, 0.0,
                null, null, 0.0, c.loss(), 0, 4, 1, 100, 5L, 0, 2, true, null, null, null, null, null, null, null, null, null, null);
        IOException e = assertThrows(IOException.class, () -> run(exploding, false));
        assertTrue(e.getMessage().contains("not finite") && e.getMessage().contains("Stopped; the last good checkpoint is"), e.getMessage());
        var store = dev.distillery.trainer.checkpoint.CheckpointStore.open(run.resolve("checkpoints"));
        var last = store.latest().orElseThrow();
        try (LanguageModel m = ModelFiles.read(last.dir(), kernels)) {
            for (var t : m.parameters().parameters()) {
                for (long i = 0; i < t.numel(); i++) assertTrue(Float.isFinite(t.getFloat(i)), "last checkpoint " + last.dir() + " holds " + t.name());
            }
        }
    }

    @Test
    void mismatchedShapesAreRefusedBeforeTheFirstStep(@TempDir Path out) {
        DistillConfig c = config(out, "dense", 2, 0, 0.5);
        DistillConfig small = new DistillConfig(c.teacher(), null, c.out(), null, null, DistillConfig.Student.gpt2(1, 16, 2, SEQ, VOCAB - 1),
                2, 4, 1, 1e-2, null, 0, 0.0, null, null, 1.0, c.loss(), 0, 4, 0, 1, 5L, 0, 2, true, null, null, null, null, null, null, null, null, null, null);
        assertTrue(assertThrows(IOException.class, () -> run(small, false)).getMessage().contains("smaller than the teacher's " + VOCAB));
        DistillConfig shortContext = new DistillConfig(c.teacher(), null, c.out(), null, null, DistillConfig.Student.gpt2(1, 16, 2, SEQ - 1, null),
                2, 4, 1, 1e-2, null, 0, 0.0, null, null, 1.0, c.loss(), 0, 4, 0, 1, 5L, 0, 2, true, null, null, null, null, null, null, null, null, null, null);
        assertTrue(assertThrows(IOException.class, () -> run(shortContext, false)).getMessage().contains("shorter than the shards' seq_len"));
    }

    @Test
    void aLossTheShardsCannotServeIsRefusedInTheConfigsKeysBeforeTheFirstStep(@TempDir Path out) {
        DistillConfig c = config(out.resolve("run"), "topk", 2, 0, 0.5);
        DistillConfig hot = withLoss(c, "topk", new DistillConfig.Loss(2.0, 0.5, "forward_kl", null, true, "tail", null, "mean", 7));
        String m = assertThrows(IllegalArgumentException.class, () -> run(hot, false)).getMessage();
        assertTrue(m.startsWith("'loss.temperature' is 2.0, but the top-k shards' logsumexp is at 1.0 (") && m.contains("manifest.json")
                && m.contains("'loss.sparse_temperature': \"rescale_topk\"") && !m.contains("RESCALE_TOPK"), m);
        DistillConfig reverse = withLoss(c, "sampled", new DistillConfig.Loss(1.0, 0.5, "reverse_kl", null, true, "tail", null, "mean", 7));
        m = assertThrows(IllegalArgumentException.class, () -> run(reverse, false)).getMessage();
        assertTrue(m.startsWith("'loss.divergence' is reverse_kl, but sampled shards"), m);
        assertTrue(!java.nio.file.Files.exists(out.resolve("run")), "nothing was written");
    }

    private static DistillConfig withLoss(DistillConfig c, String shards, DistillConfig.Loss loss) {
        return new DistillConfig(data.resolve(shards).toString(), null, c.out(), null, null, c.student(), c.steps(), c.batchSize(), 1,
                c.lr(), c.minLr(), 0, 0.0, null, null, 1.0, loss, 0, 4, 0, 1, 5L, 0, 2, true, null, null, null, null, null, null, null, null, null, null);
    }

    /** Two runs started together on one folder: exactly one runs; the other is refused in one line. */
    @Test
    void twoRunsOnOneFolderRunOnce(@TempDir Path out) throws Exception {
        DistillConfig c = config(out.resolve("run"), "topk", 6, 0, 0.5);
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(2);
        java.util.concurrent.CountDownLatch start = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.Callable<String> job = () -> {
            start.await();
            try {
                run(c, false);
                return "ran";
            } catch (IOException e) {
                return e.getMessage();
            }
        };
        try {
            var a = pool.submit(job);
            var b = pool.submit(job);
            start.countDown();
            List<String> results = List.of(a.get(), b.get());
            assertEquals(1, results.stream().filter("ran"::equals).count(), results.toString());
            String refusal = results.stream().filter(r -> !r.equals("ran")).findFirst().orElseThrow();
            assertTrue(refusal.contains("being written by another Distillery process") || refusal.contains("already holds"), refusal);
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void aFreshRunIntoAUsedFolderAndAResumeWithoutACheckpointAreRefused(@TempDir Path out) throws IOException {
        Path dir = out.resolve("run");
        Files.createDirectories(dir);
        String earlier = "{\"kind\":\"train\",\"step\":1,\"loss\":4.1}\n";   // a run that stopped before its first checkpoint
        Files.writeString(dir.resolve("metrics.jsonl"), earlier);
        IOException fresh = assertThrows(IOException.class, () -> run(config(dir, "topk", 2, 0, 0.5), false));
        assertTrue(fresh.getMessage().contains("metrics.jsonl") && fresh.getMessage().contains("choose another 'out'"), fresh.getMessage());
        assertEquals(earlier, Files.readString(dir.resolve("metrics.jsonl")), "the earlier run's metrics are untouched");
        IOException resume = assertThrows(IOException.class, () -> run(config(out.resolve("new"), "topk", 2, 0, 0.5), true));
        assertTrue(resume.getMessage().startsWith("--resume: ") && resume.getMessage().contains("no checkpoint to resume from"),
                resume.getMessage());
    }

    @Test
    void dumpLogitsRefusesAFolderThatHoldsFilesUnlessAskedToOverwrite(@TempDir Path out) throws IOException {
        Path shards = out.resolve("shards");
        PrintWriter quiet = new PrintWriter(new StringWriter());
        java.util.function.Function<Boolean, LogitDump.Options> options = overwrite -> new LogitDump.Options(data.resolve("teacher"),
                data.resolve("tokens.bin"), shards, TeacherTargets.Kind.TOP_K, 4, DType.BF16, 1.0, SEQ, 40, 8, 0, 1, "test", null, overwrite);
        LogitDump.run(options.apply(false), kernels, quiet, quiet);
        byte[] manifest = Files.readAllBytes(shards.resolve("manifest.json"));
        IOException e = assertThrows(IOException.class, () -> LogitDump.run(options.apply(false), kernels, quiet, quiet));
        assertTrue(e.getMessage().contains("already holds files") && e.getMessage().contains("--overwrite"), e.getMessage());
        assertArrayEquals(manifest, Files.readAllBytes(shards.resolve("manifest.json")), "the shards are untouched");
        LogitDump.run(options.apply(true), kernels, quiet, quiet);
        try (TeacherShards replaced = TeacherShards.open(shards, true)) {
            assertEquals(96, replaced.sequences(), "every sequence of the token file, in shards that verify");
        }
    }
}
