package dev.distillery.trainer.distill;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.ModelInputs;
import dev.distillery.runtime.nn.TextGenerator;

/**
 * On-policy batches (GKD): which micro-batches are on-policy, and their tokens. Each of the
 * batch's windows keeps its first seqLen − maxNewTokens tokens as a prompt and is continued by the
 * student's own samples (through its KV cache, the batch's windows decoded together); the targets
 * mark the positions whose next token was sampled and ignore the prompt's, so the loss sees the
 * generated positions only. Every draw comes from a generator seeded by (seed, step, micro-batch,
 * and the window for its samples), so a resumed run samples the same.
 */
final class OnPolicyBatches implements AutoCloseable {

    private final DistillConfig.OnPolicy cfg;
    private final long seed;
    private final int batch, seqLen, prompt;
    private final TextGenerator generator;
    private final Arena arena = Arena.ofConfined();
    private final MemorySegment ids, targets;
    private final int[][] windows;

    OnPolicyBatches(DistillConfig.OnPolicy cfg, long seed, LanguageModel student, Kernels kernels, int batch, int seqLen) {
        if (cfg.maxNewTokens() >= seqLen) {
            throw new IllegalArgumentException("'on_policy.max_new_tokens' " + cfg.maxNewTokens() + " must leave a prompt in windows of " + seqLen
                    + " tokens: at most " + (seqLen - 1));
        }
        this.cfg = cfg;
        this.seed = seed;
        this.batch = batch;
        this.seqLen = seqLen;
        this.prompt = seqLen - cfg.maxNewTokens();
        this.generator = new TextGenerator(student, kernels, batch);
        this.ids = arena.allocate(4L * batch * seqLen, 64);
        this.targets = arena.allocate(4L * batch * seqLen, 64);
        this.windows = new int[batch][prompt];
    }

    private Rng rng(int step, int micro, long salt) {
        return new Rng(seed ^ (0x9E3779B97F4A7C15L * (step * 65_537L + micro) + salt));
    }

    /** Whether micro-batch {@code micro} of {@code step} is on-policy: a draw below the fraction. */
    boolean chooses(int step, int micro) {
        return rng(step, micro, 1).nextDouble() < cfg.fraction();
    }

    /** The loss on an on-policy batch: on_policy's divergence at the step's temperature, no hard labels. */
    DistillOptions options(DistillOptions step) {
        return step.withAlpha(0f).withDivergence(cfg.divergenceKind());
    }

    /**
     * Sets {@code inputs} to the windows of {@code windowIds} (batch · seqLen int32, host) cut to
     * their prompts and continued by the student's samples; the targets count the generated
     * positions only (batch · maxNewTokens rows).
     */
    void fill(MemorySegment windowIds, ModelInputs inputs, int step, int micro) {
        Rng[] sampling = new Rng[batch];
        for (int b = 0; b < batch; b++) {
            for (int i = 0; i < prompt; i++) windows[b][i] = windowIds.getAtIndex(ValueLayout.JAVA_INT, (long) b * seqLen + i);
            sampling[b] = rng(step, micro, 2 + b);
        }
        int[][] seqs = generator.generate(windows, cfg.maxNewTokens(), cfg.temperature(), 0, sampling);
        for (int b = 0; b < batch; b++) {
            long row = (long) b * seqLen;
            int[] seq = seqs[b];
            for (int i = 0; i < seqLen; i++) {
                ids.setAtIndex(ValueLayout.JAVA_INT, row + i, seq[i]);
                // position i predicts token i + 1: counted where that token was sampled
                targets.setAtIndex(ValueLayout.JAVA_INT, row + i, i + 1 >= prompt && i + 1 < seqLen ? seq[i + 1] : DifferentiableOps.IGNORE_INDEX);
            }
        }
        inputs.setInputs(ids, targets);
    }

    @Override
    public void close() {
        generator.close();
        arena.close();
    }
}
