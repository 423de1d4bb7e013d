package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.function.Function;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.cuda.CudaKernels;
import dev.distillery.kernels.cuda.EmulatedCudaBackend;
import dev.distillery.kernels.cuda.EmulationBuild;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * The runtime on CUDA: a {@link TrainingSession} whose parameters, moments, workspace, inputs and
 * teacher targets live in the memory of {@link CudaKernels} on the CPU emulation of the device
 * (whose device pointers fault if the host dereferences them), trained side by side with the same
 * session on {@link CpuKernels}. Both start from the same seed and see the same batches; the
 * losses, gradient norms, parameters, evaluation sums, logits and generated tokens must agree to
 * float32 accuracy, and a checkpoint written from device memory must read back on the CPU. Both
 * families: GPT-2, and a Qwen2-style Llama (grouped-query attention, q/k/v biases, untied head);
 * GPT-2 also in bf16, and a step's launches held to a budget.
 */
class TrainingOnEmulatedCudaTest {

    private static final int VOCAB = 37, B = 2, T = 7, N = B * T, K = 5;
    private static final Function<Kernels, LanguageModel> GPT2 = k -> new Gpt2(new Gpt2Config(VOCAB, T, 2, 12, 3), k);
    private static final Function<Kernels, LanguageModel> QWEN2 = k -> new Llama(new LlamaConfig(LlamaConfig.Family.QWEN2, VOCAB, T, 2, 16,
            4, 2, 4, 24, 1e-6f, LlamaConfig.Rope.plain(10000), false), k);

    private static EmulationBuild gcc;
    private static Path library;

    @BeforeAll
    static void compile() throws Exception {
        gcc = new EmulationBuild("distillery-emu-runtime");
        library = gcc.build("emu_device.cpp", "libdistillery_emu.so", "-O2", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE", "-shared", "-fPIC");
    }

    @AfterAll
    static void cleanUp() throws Exception {
        if (gcc != null) gcc.close();
    }

    /** Everything one side of the comparison produced. */
    private record Trace(double[] losses, double[] norms, float[] wte, float[] norm, Evaluator.Sums eval,
                         float[] logits, float[] lse, int[] generated) {
    }

    private static Trace train(Kernels kernels, Function<Kernels, LanguageModel> make, Path checkpoint) throws IOException {
        Rng data = new Rng(11);
        try (Arena host = Arena.ofShared();
             LanguageModel model = make.apply(kernels);
             TrainingSession s = new TrainingSession(model, kernels, AdamW.Config.defaults(), new LearningRateSchedule(1e-2, 1e-3, 1, 4),
                     1.0, B, T)) {
            assertEquals(Device.of(kernels), model.lmHeadWeight().device());
            model.initialize(5);
            // A dense bf16 teacher and a top-k teacher over the same random logits, in host memory (what a shard gives).
            MemorySegment dense = host.allocate(2L * N * VOCAB, 64);
            MemorySegment ids = host.allocate(4L * N * K, 64), top = host.allocate(4L * N * K, 64), lse = host.allocate(4L * N, 64);
            for (int r = 0; r < N; r++) {
                double[] t = new double[VOCAB];
                double max = Double.NEGATIVE_INFINITY, sum = 0;
                for (int j = 0; j < t.length; j++) {
                    long at = (long) r * t.length + j;
                    DType.BF16.write(dense, at, (float) (3 * data.nextGaussian()));
                    t[j] = DType.BF16.read(dense, at);
                    max = Math.max(max, t[j] / 2);
                }
                for (double x : t) sum += Math.exp(x / 2 - max);
                lse.setAtIndex(ValueLayout.JAVA_FLOAT, r, (float) (max + Math.log(sum)));
                Integer[] order = new Integer[t.length];
                for (int j = 0; j < t.length; j++) order[j] = j;
                Arrays.sort(order, (x, y) -> Double.compare(t[y], t[x]));
                for (int i = 0; i < K; i++) {
                    ids.setAtIndex(ValueLayout.JAVA_INT, (long) r * K + i, order[i]);
                    top.setAtIndex(ValueLayout.JAVA_FLOAT, (long) r * K + i, (float) t[order[i]]);
                }
            }
            TeacherTargets denseTeacher = new TeacherTargets.Dense(dense, DType.BF16, VOCAB);
            TeacherTargets topK = new TeacherTargets.TopK(ids, top, DType.F32, lse, K, VOCAB, 2f);
            DistillOptions options = DistillOptions.of(2f, 0.3f);
            int steps = 4;
            double[] losses = new double[steps], norms = new double[steps];
            int[] windows = null;
            for (int step = 0; step < steps; step++) {
                windows = new int[B * (T + 1)];
                for (int i = 0; i < windows.length; i++) windows[i] = data.nextInt(VOCAB);
                s.inputs().setWindows(windows);
                s.beginStep();
                // two micro-batches: a dense and a top-k one (with JSD), gradients accumulating at 1/2 each
                double loss = s.backwardDistill(denseTeacher, options, DifferentiableOps.Reduction.MEAN, 5, 0.5f).total();
                loss += s.backwardDistill(topK, options.withDivergence(Divergence.jsd(0.5)), DifferentiableOps.Reduction.MEAN, 4, 0.5f).total();
                if (step == steps - 1) loss += s.backwardCrossEntropy(0.5f);
                TrainingSession.StepResult r = s.finishStep(loss / 2);
                losses[step] = r.loss();
                norms[step] = r.gradNorm();
            }
            int[] top1 = new int[N];
            for (int r = 0; r < N; r++) top1[r] = denseTeacher.top1(r);
            Evaluator.Sums eval = s.evaluator().distill(denseTeacher, top1, options, 3);
            float[] logits, rowLse;
            try (LanguageModelForward forward = new LanguageModelForward(model, kernels, B, T); Arena scratch = Arena.ofConfined()) {
                MemorySegment tokens = scratch.allocate(4L * N, 64);
                for (int b = 0; b < B; b++) {
                    for (int t = 0; t < T; t++) tokens.setAtIndex(ValueLayout.JAVA_INT, (long) b * T + t, windows[b * (T + 1) + t]);
                }
                logits = forward.logits(tokens).asSlice(0, 4L * N * VOCAB).toArray(ValueLayout.JAVA_FLOAT);
                rowLse = forward.logsumexpOfLastLogits(1.5);
            }
            ModelFiles.write(checkpoint, model);
            int[] generated;
            try (TextGenerator g = new TextGenerator(model, kernels, 2)) {   // two sequences of different lengths decoded together
                int[][] two = g.generate(new int[][]{{3, 1, 4}, {2, 7}}, 6, 0, 0, new Rng[]{new Rng(1), new Rng(2)});
                generated = java.util.stream.IntStream.concat(java.util.Arrays.stream(two[0]), java.util.Arrays.stream(two[1])).toArray();
            }
            return new Trace(losses, norms, model.parameters().read(model.lmHeadWeight()),
                    model.parameters().read(model.parameters().get(model instanceof Gpt2 ? "ln_f.weight" : "model.norm.weight")), eval, logits,
                    rowLse, generated);
        }
    }

    private static void assertClose(float[] expected, float[] actual, double tolerance, String what) {
        assertEquals(expected.length, actual.length, what);
        double scale = 1e-3, diff = 0;
        for (int i = 0; i < expected.length; i++) {
            scale = Math.max(scale, Math.abs(expected[i]));
            diff = Math.max(diff, Math.abs(expected[i] - actual[i]));
        }
        assertTrue(diff <= tolerance * scale, what + ": max difference " + diff + " at scale " + scale);
    }

    @Test
    void gpt2DistillationOnTheEmulatedDeviceMatchesTheCpuStepForStep(@TempDir Path dir) throws IOException {
        matchesTheCpuStepForStep(GPT2, dir);
    }

    @Test
    void llamaDistillationOnTheEmulatedDeviceMatchesTheCpuStepForStep(@TempDir Path dir) throws IOException {
        matchesTheCpuStepForStep(QWEN2, dir);
    }

    /**
     * bf16 mixed precision on both sides: the CUDA side rounds the step's parameters once
     * ({@code holdStepParameters}) and attention's heads as it takes them apart, the CPU side packs
     * at every GEMM; the same bf16 operands with fp32 sums in other orders, so they agree as
     * closely as the fp32 runs do.
     */
    @Test
    void gpt2InBf16OnTheEmulatedDeviceTracksTheCpuInBf16(@TempDir Path dir) throws IOException {
        Trace cpu, gpu;
        try (CpuKernels kernels = new CpuKernels(2, "auto", Precision.BF16)) {
            assumeTrue(kernels.precision() == Precision.BF16, "no bf16 GEMM on this CPU: " + kernels.describe());
            cpu = train(kernels, GPT2, dir.resolve("cpu"));
        }
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, Precision.BF16)) {
            gpu = train(kernels, GPT2, dir.resolve("cuda"));
        }
        for (int i = 0; i < cpu.losses().length; i++) {
            assertEquals(cpu.losses()[i], gpu.losses()[i], 1e-4 * Math.abs(cpu.losses()[i]), "loss of step " + (i + 1));
            assertEquals(cpu.norms()[i], gpu.norms()[i], 1e-3 * cpu.norms()[i], "gradient norm of step " + (i + 1));
        }
        assertClose(cpu.wte(), gpu.wte(), 1e-3, "wte after 4 steps");
    }

    private static void matchesTheCpuStepForStep(Function<Kernels, LanguageModel> make, Path dir) throws IOException {
        Trace cpu, gpu;
        int launches;
        try (CpuKernels kernels = new CpuKernels(2, "blas")) {
            cpu = train(kernels, make, dir.resolve("cpu"));
        }
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device)) {
            gpu = train(kernels, make, dir.resolve("cuda"));
            launches = device.launches();
        }
        assertTrue(launches > 300, "the emulated device ran " + launches + " kernels");
        for (int i = 0; i < cpu.losses().length; i++) {
            assertEquals(cpu.losses()[i], gpu.losses()[i], 1e-4 * Math.abs(cpu.losses()[i]), "loss of step " + (i + 1));
            assertEquals(cpu.norms()[i], gpu.norms()[i], 1e-3 * cpu.norms()[i], "gradient norm of step " + (i + 1));
        }
        assertTrue(cpu.losses()[2] < cpu.losses()[0], "the distillation loss fell: " + Arrays.toString(cpu.losses()));
        assertClose(cpu.wte(), gpu.wte(), 1e-3, "wte after 4 steps");
        assertClose(cpu.norm(), gpu.norm(), 1e-3, "the final norm's weight after 4 steps");
        assertEquals(cpu.eval().agree(), gpu.eval().agree(), "top-1 agreements");
        assertEquals(cpu.eval().rows(), gpu.eval().rows());
        assertEquals(cpu.eval().ce(), gpu.eval().ce(), 1e-3 * Math.abs(cpu.eval().ce()), "evaluation CE");
        assertEquals(cpu.eval().divergence(), gpu.eval().divergence(), 1e-3 * Math.abs(cpu.eval().divergence()), "evaluation KL");
        assertClose(cpu.logits(), gpu.logits(), 1e-3, "forwardLogits");
        assertClose(cpu.lse(), gpu.lse(), 1e-4, "logsumexp at T = 1.5");
        assertArrayEquals(cpu.generated(), gpu.generated(), "greedy tokens");

        // The checkpoint written from device memory holds the device's parameters and opens on the CPU.
        try (CpuKernels kernels = new CpuKernels(1, "vector"); LanguageModel back = ModelFiles.read(dir.resolve("cuda"), kernels)) {
            assertArrayEquals(gpu.wte(), back.parameters().read(back.lmHeadWeight()), "wte read back from the CUDA run's checkpoint");
        }
    }

    /**
     * The emulated device under bf16 stores the activations only GEMMs read in bf16 as the CPU
     * does: a GPT-2 pass gives the bits of one with them in fp32, in less workspace, launching
     * five roundings fewer a layer: one for each linear a norm or attention feeds (the hold's,
     * which served its forward and its weight gradient), and GELU's output in the forward and in
     * the backward.
     */
    @Test
    void gpt2OnTheEmulatedDeviceGivesTheBitsOfFp32ActivationsWithGemmOnlyActivationsInBf16() {
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, Precision.BF16)) {
            int before = device.launches();
            ActivationMemoryTest.Pass fp32 = ActivationMemoryTest.pass(kernels, ActivationMemoryTest.GPT2, DType.F32);
            int between = device.launches();
            ActivationMemoryTest.Pass bf16 = ActivationMemoryTest.pass(kernels, ActivationMemoryTest.GPT2, DType.BF16);
            int after = device.launches();
            ActivationMemoryTest.assertSameBits(fp32, bf16);
            assertTrue(bf16.workspacePeak() < fp32.workspacePeak(), "workspace " + bf16.workspacePeak() + " against " + fp32.workspacePeak());
            assertEquals((between - before) - 2 * 5, after - between, "launches with those activations in fp32 and in bf16 (2 layers)");
        }
    }

    /**
     * On the emulated device, attention's probabilities made again in the backward give the bits
     * of kept ones where the window fits one band of rows (as here), in less workspace, for as many
     * launches: two more a layer in the backward (the scores and their softmax), two fewer for the
     * test workspace's poisoning of the (t, t) buffers, which are never made.
     */
    @Test
    void recomputedAttentionProbabilitiesGiveTheBitsOfKeptOnesWithinOneBandOnTheEmulatedDevice() {
        for (Precision precision : Precision.values()) {
            try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, precision)) {
                DType type = kernels.storesBf16Activations() ? DType.BF16 : DType.F32;
                int before = device.launches() + device.gemms();
                ActivationMemoryTest.Pass kept = ActivationMemoryTest.pass(kernels, ActivationMemoryTest.GPT2, type, false);
                int between = device.launches() + device.gemms();
                ActivationMemoryTest.Pass again = ActivationMemoryTest.pass(kernels, ActivationMemoryTest.GPT2, type, true);
                int after = device.launches() + device.gemms();
                ActivationMemoryTest.assertSameBits(kept, again);
                assertTrue(again.workspacePeak() < kept.workspacePeak(), precision + ": workspace " + again.workspacePeak() + " against " + kept.workspacePeak());
                assertEquals(between - before, after - between, precision + ": launches kept and made again (2 layers)");
            }
        }
    }

    /**
     * What a training step costs a GPU in launches: at config B's sizes a step is bound by kernel
     * launches rather than by the card (docs/PERFORMANCE.md, on an H100/H200), so their number is
     * held to a budget. A GPT-2 step shaped like config B (6 layers, 6 heads, batch 8; small widths,
     * which do not change the count, the LM head in one chunk, and rows enough that the column sums
     * of bias and layernorm gradients take their two launches, as at B), counted on the emulated
     * device: kernels plus cuBLAS calls, the same at every step, within the budget in each precision.
     */
    @Test
    void aConfigBShapedStepStaysWithinItsLaunchBudget() {
        assertTrue(launchesPerStep(Precision.FP32, false, 0).launches() <= 330);
        assertTrue(launchesPerStep(Precision.BF16, false, 0).launches() <= 375);
        assertTrue(launchesPerStep(Precision.BF16, true, 0).launches() <= 375);
    }

    /**
     * The distillation step reads its losses back once, not once per chunk of the LM head
     * (Kernels.distillLossRows): in four chunks it waits for the device as often as in one.
     */
    @Test
    void aDistillationStepWaitsAsOftenInFourChunksAsInOne() {
        Step one = launchesPerStep(Precision.FP32, true, 0), four = launchesPerStep(Precision.FP32, true, 32);
        assertEquals(one.waits(), four.waits(), "waits a step in one chunk and in four");
    }

    /**
     * The hard-label loss through the chunked LM head counts and checks its targets from the
     * inputs' host copy and launches each chunk's loss without reading anything back
     * (Kernels.softmaxCrossEntropyRows): one wait, for the losses, in one chunk as in four; the
     * same loss either way.
     */
    @Test
    void aHardLabelLossWaitsOnceInFourChunksAsInOne() {
        int b = 4, t = 16, vocab = 64;
        int[] chunks = {b * t, b * t / 4}, waits = new int[2];
        double[] loss = new double[2];
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device);
             LanguageModel model = new Gpt2(new Gpt2Config(vocab, t, 1, 16, 2), kernels);
             ModelInputs inputs = new ModelInputs(kernels, b, t, vocab);
             Workspace ws = new Workspace(kernels, 1 << 20)) {
            model.initialize(3);
            Rng rng = new Rng(8);
            int[] windows = new int[b * (t + 1)];
            for (int i = 0; i < windows.length; i++) windows[i] = rng.nextInt(vocab);
            inputs.setWindows(windows);
            for (int i = 0; i < chunks.length; i++) {
                ws.reset();
                Tape tape = new Tape();
                DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape);
                model.parameters().zeroGrad();
                Tensor hidden = model.hidden(ops, inputs.tokens(), b, t);
                int before = device.waits();
                loss[i] = ops.linearCrossEntropy(hidden, model.lmHeadWeight(), inputs.labels(), 1f, chunks[i]).mean();
                waits[i] = device.waits() - before;
                tape.backward();
            }
        }
        assertArrayEquals(new int[]{1, 1}, waits, "waits of the loss in " + chunks[0] + "- and " + chunks[1] + "-row chunks");
        assertEquals(loss[0], loss[1], 1e-6 * Math.abs(loss[0]));
    }

    /** Kernels and cuBLAS calls of a step, and the host's waits for the device during it. */
    private record Step(int launches, int waits) {
    }

    /**
     * Kernels and cuBLAS calls of one hard-label training step, or of a distillation step against a
     * dense bf16 teacher of random logits in host memory (the LM head in one chunk, or in chunks
     * of chunkRows), checked to be the same over three steps.
     */
    private static Step launchesPerStep(Precision precision, boolean distill, int chunkRows) {
        int b = 8, t = 16, vocab = 256;
        int[] counts = new int[3], waits = new int[3];
        try (Arena teacherArena = Arena.ofConfined(); EmulatedCudaBackend device = new EmulatedCudaBackend(library);
             CudaKernels kernels = new CudaKernels(device, precision);
             LanguageModel model = new Gpt2(new Gpt2Config(vocab, t, 6, 48, 6), kernels);
             TrainingSession session = new TrainingSession(model, kernels, AdamW.Config.defaults(), new LearningRateSchedule(1e-3, 1e-4, 1, 4),
                     1.0, b, t)) {
            model.initialize(5);
            Rng data = new Rng(3);
            MemorySegment logits = teacherArena.allocate(2L * b * t * vocab, 64);
            for (long i = 0; i < (long) b * t * vocab; i++) DType.BF16.write(logits, i, (float) (4 * data.nextGaussian()));
            TeacherTargets teacher = new TeacherTargets.Dense(logits, DType.BF16, vocab);
            for (int step = 0; step < counts.length; step++) {
                int[] windows = new int[b * (t + 1)];
                for (int i = 0; i < windows.length; i++) windows[i] = data.nextInt(vocab);
                int before = device.launches() + device.gemms(), waitsBefore = device.waits();
                session.inputs().setWindows(windows);
                session.beginStep();
                if (distill) {
                    double l = session.backwardDistill(teacher, DistillOptions.of(2f, 0.5f), DifferentiableOps.Reduction.MEAN,
                            chunkRows > 0 ? chunkRows : b * t, 1f).total();
                    session.finishStep(l);
                } else {
                    session.finishStep(session.backwardCrossEntropy(1f));
                }
                counts[step] = device.launches() + device.gemms() - before;
                waits[step] = device.waits() - waitsBefore;
            }
            System.out.printf("%s%s: %d kernels and cuBLAS calls a step (%d of them cuBLAS), %d waits for the stream%n", precision,
                    distill ? " distillation" : "", counts[2], device.gemms() / counts.length, waits[2]);
        }
        // the distillation's first step clips its gradient (one scale launch more): its norm is above 1 there
        if (!distill) assertEquals(counts[1], counts[0], precision + ": launches of steps 1 and 2 " + Arrays.toString(counts));
        assertEquals(counts[2], counts[1], precision + ": launches of steps 2 and 3");
        // the ids' upload (tokens and targets in one copy), the loss and the gradient norm back,
        // and the embedding's token groups up where the backward ends; the tokens are checked and
        // grouped, and the targets counted and checked, from the inputs' host copy
        assertTrue(waits[2] <= 4, precision + ": " + waits[2] + " waits for the stream a step");
        return new Step(counts[2], waits[2]);
    }
}
