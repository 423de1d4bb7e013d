package dev.distillery.runtime.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.autograd.Labels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.optim.AdamW;

class ChunkedLinearDistillLossTest {

    private static final Gpt2Config CFG = new Gpt2Config(61, 8, 2, 16, 2);
    private static final int B = 3, T = 8, N = B * T, VT = 59; // student vocab 61 = teacher 59 + 2 padding

    private record Inputs(Tensor tokens, Tensor labels, TeacherTargets teacher) {
    }

    private static Inputs inputs(Arena arena, long seed) {
        Rng rng = new Rng(seed);
        MemorySegment tok = arena.allocate(4L * N), lab = arena.allocate(4L * N), t = arena.allocate(2L * N * VT);
        for (int i = 0; i < N; i++) {
            tok.setAtIndex(ValueLayout.JAVA_INT, i, rng.nextInt(CFG.vocabSize()));
            lab.setAtIndex(ValueLayout.JAVA_INT, i, i == 5 ? -100 : rng.nextInt(VT));
        }
        for (int i = 0; i < N * VT; i++) DType.BF16.write(t, i, (float) (3 * rng.nextGaussian()));
        return new Inputs(new Tensor("tokens", new int[]{B, T}, DType.I32, Device.CPU, tok, false),
                new Tensor("labels", new int[]{N}, DType.I32, Device.CPU, lab, false),
                new TeacherTargets.Dense(t, DType.BF16, VT));
    }

    /** Loss and a copy of every parameter gradient after one forward + backward with the given chunk size. */
    private static double[] lossAndGradients(CpuKernels kernels, Gpt2 model, Inputs in, DistillOptions o, int chunk) {
        try (Workspace ws = new Workspace(kernels, 1 << 16)) {
            Tape tape = new Tape();
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape);
            model.parameters().zeroGrad();
            Tensor hidden = model.hidden(ops, in.tokens(), B, T);
            var loss = ops.distillationLoss(hidden, model.lmHeadWeight(), in.teacher(), Labels.of(in.labels()), o,
                    DifferentiableOps.Reduction.MEAN, chunk);
            tape.backward();
            float[] g = model.parameters().gradBlock().asSlice(0, 4 * model.parameters().blockElements()).toArray(ValueLayout.JAVA_FLOAT);
            double[] out = new double[g.length + 1];
            out[0] = loss.total();
            for (int i = 0; i < g.length; i++) out[i + 1] = g[i];
            assertEquals(N - 1, loss.rows());
            return out;
        }
    }

    /** 32 MiB of logits, rounded down to whole 32-row blocks of the GEMMs from 32 rows on. */
    @Test
    void defaultChunksAreWhole32RowBlocksOfAtMost32MiB() {
        int[][] vocabRows = {{32_000, 256}, {4_096, 2_048}, {50_257, 160}, {128_256, 64}, {151_936, 32}, {262_144, 32}, {300_000, 27}, {10_000_000, 1}};
        for (int[] vr : vocabRows) {
            int rows = ChunkedLinearDistillLoss.defaultChunkRows(vr[0]);
            assertEquals(vr[1], rows, "vocabulary " + vr[0]);
            assertTrue(4L * rows * vr[0] <= 32L << 20 || rows == 1, "vocabulary " + vr[0] + ": " + rows + " rows");
        }
    }

    @Test
    void chunkedPathEqualsTheWholeLogitsPath() {
        try (CpuKernels kernels = new CpuKernels(2, "auto"); Gpt2 model = new Gpt2(CFG, kernels); Arena arena = Arena.ofShared()) {
            model.initialize(3);
            Inputs in = inputs(arena, 9);
            for (Divergence d : new Divergence[]{Divergence.forwardKl(), Divergence.jsd(0.5)}) {
                DistillOptions o = DistillOptions.of(2f, 0.4f).withDivergence(d);
                double[] whole = lossAndGradients(kernels, model, in, o, N);
                for (int chunk : new int[]{1, 5, 7}) {
                    double[] chunked = lossAndGradients(kernels, model, in, o, chunk);
                    assertEquals(whole[0], chunked[0], 1e-6 * Math.abs(whole[0]), d + " loss, chunk " + chunk);
                    double diff = 0, scale = 1e-9;
                    for (int i = 1; i < whole.length; i++) {
                        diff = Math.max(diff, Math.abs(whole[i] - chunked[i]));
                        scale = Math.max(scale, Math.abs(whole[i]));
                    }
                    assertTrue(diff / scale < 1e-5, d + " gradients, chunk " + chunk + ": relative difference " + diff / scale);
                }
            }
        }
    }

    /** Loss and every parameter gradient of the hard-label step: the whole logits' CE (chunk 0), or the chunked LM head's. */
    private static double[] crossEntropyAndGradients(CpuKernels kernels, Gpt2 model, Inputs in, int chunk) {
        try (Workspace ws = new Workspace(kernels, 1 << 16)) {
            Tape tape = new Tape();
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape);
            model.parameters().zeroGrad();
            DifferentiableOps.Loss loss = chunk == 0
                    ? ops.crossEntropy(model.forward(ops, in.tokens(), B, T), Labels.of(in.labels()), 0.5f)
                    : ops.linearCrossEntropy(model.hidden(ops, in.tokens(), B, T), model.lmHeadWeight(), Labels.of(in.labels()), 0.5f, chunk);
            tape.backward();
            assertEquals(N - 1, loss.rows());
            float[] g = model.parameters().gradBlock().asSlice(0, 4 * model.parameters().blockElements()).toArray(ValueLayout.JAVA_FLOAT);
            double[] out = new double[g.length + 1];
            out[0] = loss.mean();
            for (int i = 0; i < g.length; i++) out[i + 1] = g[i];
            return out;
        }
    }

    @Test
    void chunkedCrossEntropyEqualsTheWholeLogitsCrossEntropy() {
        try (CpuKernels kernels = new CpuKernels(2, "auto"); Gpt2 model = new Gpt2(CFG, kernels); Arena arena = Arena.ofShared()) {
            model.initialize(4);
            Inputs in = inputs(arena, 13);
            double[] whole = crossEntropyAndGradients(kernels, model, in, 0);
            assertTrue(whole[0] > 3 && whole[0] < 6, "an untrained model's CE over 61 tokens is near ln 61: " + whole[0]);
            for (int chunk : new int[]{1, 5, 7, N}) {
                double[] chunked = crossEntropyAndGradients(kernels, model, in, chunk);
                assertEquals(whole[0], chunked[0], 1e-6 * whole[0], "loss, chunk " + chunk);
                double diff = 0, scale = 1e-9;
                for (int i = 1; i < whole.length; i++) {
                    diff = Math.max(diff, Math.abs(whole[i] - chunked[i]));
                    scale = Math.max(scale, Math.abs(whole[i]));
                }
                assertTrue(diff / scale < 1e-5, "gradients, chunk " + chunk + ": relative difference " + diff / scale);
            }
        }
    }

    @Test
    void chunkedCrossEntropyNamesTheRowOfATargetOutsideTheVocabulary() {
        try (CpuKernels kernels = new CpuKernels(1, "auto"); Gpt2 model = new Gpt2(CFG, kernels); Arena arena = Arena.ofShared();
             Workspace ws = new Workspace(kernels, 1 << 16)) {
            model.initialize(4);
            Inputs in = inputs(arena, 13);
            in.labels().data().setAtIndex(ValueLayout.JAVA_INT, 17, CFG.vocabSize());
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, new Tape());
            var e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> ops.linearCrossEntropy(model.hidden(ops, in.tokens(), B, T), model.lmHeadWeight(), Labels.of(in.labels()), 1f, 5));
            assertEquals("target 61 at row 17 is outside [0, 61) and is not the ignore index -100", e.getMessage());
        }
    }

    @Test
    void distillingTowardsAFixedTeacherLowersTheDivergence() {
        try (CpuKernels kernels = new CpuKernels(2, "auto"); Gpt2 model = new Gpt2(CFG, kernels);
             Arena arena = Arena.ofShared(); Workspace ws = new Workspace(kernels, 1 << 16)) {
            model.initialize(5);
            Inputs in = inputs(arena, 11);
            DistillOptions o = DistillOptions.of(2f, 0f);
            AdamW adam = new AdamW(model.parameters(), kernels, new AdamW.Config(0.9, 0.95, 1e-8, 0));
            Tape tape = new Tape();
            DifferentiableOps ops = new DifferentiableOps(kernels, ws, tape);
            double first = Double.NaN, last = Double.NaN;
            for (int step = 0; step < 100; step++) {
                ws.reset();
                model.parameters().zeroGrad();
                var loss = ops.distillationLoss(model.hidden(ops, in.tokens(), B, T), model.lmHeadWeight(), in.teacher(),
                        null, o, DifferentiableOps.Reduction.MEAN, 7);
                tape.backward();
                adam.update(1e-2);
                if (step == 0) first = loss.divergence();
                last = loss.divergence();
            }
            assertTrue(last < 0.5 * first, "KL to the teacher went from " + first + " to " + last);
        }
    }
}
