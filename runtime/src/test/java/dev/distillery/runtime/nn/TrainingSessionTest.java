package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

class TrainingSessionTest {

    private static void fillBatch(TrainingSession s, long seed, int vocab, int n) {
        Rng rng = new Rng(seed);
        int[] seq = new int[n + 1];
        for (int i = 0; i <= n; i++) seq[i] = rng.nextInt(vocab);
        try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment tokens = a.allocate(4L * n), targets = a.allocate(4L * n);
            for (int i = 0; i < n; i++) {
                tokens.setAtIndex(ValueLayout.JAVA_INT, i, seq[i]);
                targets.setAtIndex(ValueLayout.JAVA_INT, i, seq[i + 1]);
            }
            s.inputs().setInputs(tokens, targets);
        }
    }

    @Test
    void studentOverfitsOneFixedBatch() {
        Gpt2Config cfg = new Gpt2Config(37, 16, 2, 32, 4);
        int b = 4, t = 16, maxSteps = 300;
        try (CpuKernels kernels = new CpuKernels(2, "auto");
             Gpt2 model = new Gpt2(cfg, kernels);
             TrainingSession s = new TrainingSession(model, kernels, new AdamW.Config(0.9, 0.95, 1e-8, 0.0),
                     new LearningRateSchedule(1e-2, 1e-3, 10, maxSteps), 1.0, b, t)) {
            model.initialize(7);
            fillBatch(s, 3, cfg.vocabSize(), b * t);
            double first = s.evaluator().crossEntropy();
            assertEquals(Math.log(cfg.vocabSize()), first, 0.2, "a fresh model predicts about uniformly");
            double loss = s.step().loss();
            long capacity = s.workspace().capacity();
            int step = 1;
            while (loss >= 0.05 && step < maxSteps) {
                loss = s.step().loss();
                step++;
            }
            assertTrue(s.evaluator().crossEntropy() < 0.05, "loss " + loss + " after " + step + " steps");
            assertEquals(capacity, s.workspace().capacity(), "the workspace may grow only during the first step");
        }
    }

    /** The workspace's peak over one hard-label step of a GPT-2 with {@code layers} blocks. */
    private static long stepPeak(int layers, int vocab, int c, int heads, int b, int t) {
        return stepPeak(layers, vocab, c, heads, b, t, false, 0);
    }

    /**
     * {@link #stepPeak}, attention's probabilities kept or not; {@code keptBytes}, where not 0, is
     * what the session must say it keeps.
     */
    private static long stepPeak(int layers, int vocab, int c, int heads, int b, int t, boolean recompute, long keptBytes) {
        Gpt2Config cfg = new Gpt2Config(vocab, t, layers, c, heads);
        try (CpuKernels kernels = new CpuKernels(1, "auto");
             Gpt2 model = new Gpt2(cfg, kernels);
             TrainingSession s = new TrainingSession(model, kernels, new AdamW.Config(0.9, 0.95, 1e-8, 0.0),
                     new LearningRateSchedule(1e-3, 1e-3, 0, 10), 1.0, b, t)) {
            model.initialize(1);
            s.recomputeAttention(recompute);
            if (keptBytes != 0) assertEquals(recompute ? 0 : keptBytes, s.keptAttentionBytes());
            fillBatch(s, 2, vocab, b * t);
            s.step();
            return s.workspace().highWater();
        }
    }

    /**
     * The session counts attention's kept probabilities (b · heads · t² floats for each of 3 layers
     * and one block more for their gradient; 0 when they are made in bands), and not keeping them
     * takes at least the forward's three blocks off the workspace's peak (all live at the end of
     * the forward).
     */
    @Test
    void keptAttentionBytesCountsWhatNotKeepingThemSaves() {
        int vocab = 50, c = 32, heads = 4, b = 2, t = 96;
        long block = 4L * b * heads * t * t;
        long kept = stepPeak(3, vocab, c, heads, b, t, false, 4 * block), inBands = stepPeak(3, vocab, c, heads, b, t, true, 4 * block);
        assertTrue(kept - inBands >= 3 * block, "the peak drops by " + (kept - inBands) + " bytes; three layers' probabilities are " + 3 * block);
    }

    /**
     * A block adds its forward activations to the step's peak and nothing for its gradients: the
     * backward gives each activation gradient back once the op that made the activation has run
     * (and the GELU output is recomputed, not kept). Per block and row: ln_1 c, qkv 3c, attention
     * c, c_proj c, residual c, ln_2 c, c_fc 4c, mlp c_proj c, residual c = 14c floats, plus the
     * attention probabilities (b, heads, t, t) and the two layernorms' mean and rstd.
     */
    @Test
    void aBlockAddsItsForwardActivationsToTheStepPeakButNotItsGradients() {
        int vocab = 50, c = 64, heads = 4, b = 4, t = 32, n = b * t;
        long perBlock = 4L * (14L * n * c + (long) b * heads * t * t + 4L * n);
        long added = stepPeak(3, vocab, c, heads, b, t) - stepPeak(2, vocab, c, heads, b, t);
        assertTrue(added >= perBlock && added < perBlock + 64L * 16, "a block adds " + added + " bytes; its forward activations are " + perBlock);
    }

    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"auto", "blas", "vector"})
    void twoSeededRunsGiveBitIdenticalParametersAfterTwentySteps(String gemm) {
        MemorySegment[] finals = new MemorySegment[2];
        Gpt2Config cfg = new Gpt2Config(53, 12, 2, 24, 3);
        for (int run = 0; run < 2; run++) {
            try (CpuKernels kernels = new CpuKernels(2, gemm);
                 Gpt2 model = new Gpt2(cfg, kernels);
                 TrainingSession s = new TrainingSession(model, kernels, AdamW.Config.defaults(),
                         new LearningRateSchedule(3e-3, 3e-4, 5, 20), 1.0, 3, 12)) {
                model.initialize(11);
                for (int step = 0; step < 20; step++) {
                    fillBatch(s, 100 + step, cfg.vocabSize(), 36);
                    s.step();
                }
                finals[run] = MemorySegment.ofArray(model.parameters().paramBlock().toArray(ValueLayout.JAVA_BYTE));
            }
        }
        long at = finals[0].mismatch(finals[1]);
        assertEquals(-1, at, "parameters differ between two seeded runs at byte " + at + ": "
                + (at < 0 ? "" : finals[0].get(ValueLayout.JAVA_FLOAT_UNALIGNED, at & ~3) + " vs " + finals[1].get(ValueLayout.JAVA_FLOAT_UNALIGNED, at & ~3)));
    }

    @Test
    void sequenceLongerThanContextIsRejected() {
        try (CpuKernels kernels = new CpuKernels(1, "vector"); Gpt2 model = new Gpt2(new Gpt2Config(5, 4, 1, 4, 1), kernels)) {
            var e = assertThrows(IllegalArgumentException.class, () -> new TrainingSession(model, kernels,
                    AdamW.Config.defaults(), LearningRateSchedule.constant(1e-3), 1, 1, 5));
            assertTrue(e.getMessage().contains("exceeds the model's context 4"));
        }
    }

    @Test
    void scheduleWarmsUpThenDecaysByCosine() {
        LearningRateSchedule s = new LearningRateSchedule(1.0, 0.1, 10, 110);
        assertEquals(0.1, s.at(1), 1e-12);
        assertEquals(1.0, s.at(10), 1e-12);
        assertEquals(0.55, s.at(60), 1e-12);
        assertEquals(0.1, s.at(110), 1e-12);
        assertEquals(0.1, s.at(500), 1e-12);
    }
}
