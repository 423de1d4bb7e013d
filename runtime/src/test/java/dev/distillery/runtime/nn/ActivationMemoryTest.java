package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;

/**
 * The two ways a training pass keeps less for its backward give the same loss and gradients, bit
 * for bit, in less workspace: under bf16 the activations that only GEMMs read (the block norms'
 * outputs, GPT-2's GELU output, Llama's SwiGLU output) are stored in bf16 (the GEMMs rounded them
 * to bf16 anyway), and attention's probabilities can be made again in the backward instead of
 * kept (over one band of rows or several). GPT-2 and Llama (grouped-query attention) on the CPU; the
 * emulated CUDA device's twins are in TrainingOnEmulatedCudaTest.
 */
class ActivationMemoryTest {

    static final Function<Kernels, LanguageModel> GPT2 = gpt2(16);
    static final Function<Kernels, LanguageModel> LLAMA = llama(16);

    /** A 2-block GPT-2 of width 48 and 4 heads over a context of t. */
    static Function<Kernels, LanguageModel> gpt2(int t) {
        return k -> new Gpt2(new Gpt2Config(97, t, 2, 48, 4), k);
    }

    /** A 2-block Llama of width 48, 4 heads over 2 key/value heads, over a context of t. */
    static Function<Kernels, LanguageModel> llama(int t) {
        return k -> new Llama(new LlamaConfig(LlamaConfig.Family.LLAMA, 97, t, 2, 48, 4, 2, 12, 80, 1e-5f, LlamaConfig.Rope.plain(10000), true), k);
    }

    /** A pass over a model, its inputs and a workspace made for it. */
    interface PassBody<R> {
        R run(LanguageModel model, ModelInputs inputs, Workspace ws);
    }

    /**
     * body over a model from make (initialised from seed 7), b random windows of t + 1 tokens from
     * seed, and a workspace that fills what it hands out with NaN, so a value read before it is
     * written fails.
     */
    private static <R> R withModel(Kernels kernels, Function<Kernels, LanguageModel> make, int b, int t, long seed, PassBody<R> body) {
        try (LanguageModel model = make.apply(kernels);
             ModelInputs inputs = new ModelInputs(kernels, b, t, model.vocabSize());
             Workspace ws = new Workspace(kernels, 1 << 16).poisonAllocations()) {
            model.initialize(7);
            Rng rng = new Rng(seed);
            int[] windows = new int[b * (t + 1)];
            for (int i = 0; i < windows.length; i++) windows[i] = rng.nextInt(model.vocabSize());
            inputs.setWindows(windows);
            return body.run(model, inputs, ws);
        }
    }

    @Test
    void gpt2GivesTheBitsOfFp32ActivationsWithGemmOnlyActivationsInBf16() {
        sameBitsInLessWorkspace(GPT2);
    }

    @Test
    void llamaGivesTheBitsOfFp32ActivationsWithGemmOnlyActivationsInBf16() {
        sameBitsInLessWorkspace(LLAMA);
    }

    /**
     * Attention's probabilities made again in the backward give the bits of kept ones where the
     * window fits one band of rows (16 tokens here; over several bands dk and dv add the bands'
     * terms in another order, CpuKernelsConformanceTest), in less workspace: GPT-2 and Llama, in
     * fp32 and (where the CPU has it) in bf16.
     */
    @Test
    void recomputedAttentionProbabilitiesGiveTheBitsOfKeptOnesWithinOneBand() {
        for (Precision precision : Precision.values()) {
            try (CpuKernels kernels = new CpuKernels(2, "auto", precision)) {
                DType type = kernels.storesBf16Activations() ? DType.BF16 : DType.F32;
                for (Function<Kernels, LanguageModel> make : List.of(GPT2, LLAMA)) {
                    Pass kept = pass(kernels, make, type, false), again = pass(kernels, make, type, true);
                    assertSameBits(kept, again);
                    assertTrue(again.workspacePeak() < kept.workspacePeak(), kernels.describe() + ": workspace " + again.workspacePeak()
                            + " against " + kept.workspacePeak());
                }
            }
        }
    }

    /**
     * Over several bands of rows (150 tokens: bands of 64, 64 and 22) the probabilities made again
     * give the kept ones' loss and gradients bit for bit (the backward's band calls are the kept
     * path's, with the probabilities read where they were kept), in less workspace: GPT-2 and
     * Llama, fp32.
     */
    @Test
    void recomputedAttentionOverSeveralBandsGivesTheKeptBits() {
        try (CpuKernels kernels = new CpuKernels(2, "auto", Precision.FP32)) {
            for (Function<Kernels, LanguageModel> make : List.of(gpt2(150), llama(150))) {
                Pass kept = pass(kernels, make, DType.F32, false, 150), again = pass(kernels, make, DType.F32, true, 150);
                assertSameBits(kept, again);
                assertTrue(again.workspacePeak() < kept.workspacePeak(), "workspace " + again.workspacePeak() + " against " + kept.workspacePeak());
            }
        }
    }

    /**
     * A pass with no backward (evaluation, a teacher's forward, a prompt) keeps no attention
     * probabilities: over 150 tokens (three bands) its hidden states are the bits of a recorded
     * pass's, in a workspace smaller by at least the recorded pass's probabilities; GPT-2 and
     * Llama, fp32.
     */
    @Test
    void aPassWithNoBackwardKeepsNoAttentionProbabilitiesAndGivesTheSameHiddenStates() {
        int b = 2, t = 150, heads = 4, layers = 2;   // as gpt2() and llama() make them
        try (CpuKernels kernels = new CpuKernels(2, "auto", Precision.FP32)) {
            for (Function<Kernels, LanguageModel> make : List.of(gpt2(t), llama(t))) {
                float[][] hidden = new float[2][];
                long[] peak = new long[2];
                for (int pass = 0; pass < 2; pass++) {
                    boolean recorded = pass == 0;
                    int at = pass;
                    hidden[pass] = withModel(kernels, make, b, t, 5, (model, inputs, ws) -> {
                        Tape tape = new Tape();
                        tape.setEnabled(recorded);
                        Tensor h = model.hidden(new DifferentiableOps(kernels, ws, tape), inputs.tokens(), b, t);
                        peak[at] = ws.highWater();
                        try (Arena scratch = Arena.ofConfined()) {
                            return kernels.hostView(h.data(), h.byteSize(), scratch).toArray(ValueLayout.JAVA_FLOAT);
                        }
                    });
                }
                assertArrayEquals(hidden[0], hidden[1], "hidden states");
                long probs = 4L * b * heads * t * t * layers;
                assertTrue(peak[0] - peak[1] >= probs, "workspace " + peak[1] + " against " + peak[0] + "; the probabilities are " + probs);
            }
        }
    }

    /** fp32 kernels keep every activation fp32, and refuse to be asked otherwise. */
    @Test
    void fp32KernelsStoreNoActivationInBf16() {
        try (CpuKernels kernels = new CpuKernels(1, "auto"); Workspace ws = new Workspace(kernels, 1 << 16)) {
            assertEquals(DType.F32, new DifferentiableOps(kernels, ws, new Tape()).gemmOperandType());
            var e = assertThrows(IllegalArgumentException.class, () -> new DifferentiableOps(kernels, ws, new Tape(), DType.BF16));
            assertTrue(e.getMessage().contains("takes fp32"), e.getMessage());
        }
    }

    private static void sameBitsInLessWorkspace(Function<Kernels, LanguageModel> make) {
        try (CpuKernels kernels = new CpuKernels(2, "auto", Precision.BF16)) {
            assumeTrue(kernels.precision() == Precision.BF16, () -> "skipped: no bf16 GEMM here: " + kernels.describe());
            Pass fp32 = pass(kernels, make, DType.F32), bf16 = pass(kernels, make, DType.BF16);
            assertSameBits(fp32, bf16);
            assertTrue(bf16.workspacePeak() < fp32.workspacePeak(), "workspace " + bf16.workspacePeak() + " against " + fp32.workspacePeak());
        }
    }

    /** The loss and every parameter gradient of one forward and backward, and the workspace's peak. */
    record Pass(double loss, List<float[]> gradients, long workspacePeak) {
    }

    static void assertSameBits(Pass fp32, Pass bf16) {
        assertEquals(Double.doubleToRawLongBits(fp32.loss()), Double.doubleToRawLongBits(bf16.loss()), "loss " + fp32.loss() + " and " + bf16.loss());
        for (int i = 0; i < fp32.gradients().size(); i++) {
            assertArrayEquals(fp32.gradients().get(i), bf16.gradients().get(i), "gradient of parameter " + i);
        }
    }

    /**
     * One hard-label pass over 3 windows of 16 random tokens, with the activations only GEMMs read
     * stored as {@code gemmOperandType}; a workspace that fills what it hands out with NaN, so a
     * value read before it is written fails.
     */
    static Pass pass(Kernels kernels, Function<Kernels, LanguageModel> make, DType gemmOperandType) {
        return pass(kernels, make, gemmOperandType, false);
    }

    /** {@link #pass}, with attention's probabilities made again in the backward or kept. */
    static Pass pass(Kernels kernels, Function<Kernels, LanguageModel> make, DType gemmOperandType, boolean recomputeAttention) {
        return pass(kernels, make, gemmOperandType, recomputeAttention, 16);
    }

    /** {@link #pass} over windows of t tokens (at most the model's context). */
    static Pass pass(Kernels kernels, Function<Kernels, LanguageModel> make, DType gemmOperandType, boolean recomputeAttention, int t) {
        int b = 3;
        return withModel(kernels, make, b, t, 21, (model, inputs, ws) -> {
            Tape tape = new Tape();
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape, gemmOperandType);
            ops.setRecomputeAttention(recomputeAttention);
            model.parameters().zeroGrad();
            double loss = ops.linearCrossEntropy(model.hidden(ops, inputs.tokens(), b, t), model.lmHeadWeight(), inputs.labels(), 1f, b * t).mean();
            tape.backward();
            List<float[]> gradients = new ArrayList<>();
            try (Arena scratch = Arena.ofConfined()) {
                for (Tensor p : model.parameters().parameters()) {
                    gradients.add(kernels.hostView(p.grad().data(), p.grad().byteSize(), scratch).toArray(ValueLayout.JAVA_FLOAT));
                }
            }
            return new Pass(loss, gradients, ws.highWater());
        });
    }
}
