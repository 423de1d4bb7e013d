package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;

/**
 * Autoregressive sampling with temperature and top-k, through a KV cache: the prompt goes through
 * the model in one forward pass that fills the cache ({@link LanguageModel#prefill}), then each
 * new token is one row through the blocks ({@link LanguageModel#decode}), attending over the
 * cached keys and values of the tokens before it. Past the context the window slides, and each
 * new token costs one forward over the window (learned positions, as GPT-2's, move with it).
 */
public final class TextGenerator implements AutoCloseable {

    private final LanguageModel model;
    private final Kernels kernels;
    private final int vocab, context;
    private final Workspace workspace;
    private final DifferentiableOps ops;
    private final Arena arena = Arena.ofShared();
    private final Tensor token, window;
    private final MemorySegment hostToken, hostWindow, hostRow;
    private final KvCache cache;
    private int cacheFrom;

    /** Sampling from {@code model} (not closed with this). */
    public TextGenerator(LanguageModel model, Kernels kernels) {
        this.model = model;
        this.kernels = kernels;
        this.vocab = model.vocabSize();
        this.context = model.contextLength();
        this.workspace = new Workspace(kernels, 1 << 20);
        Tape tape = new Tape();
        tape.setEnabled(false);
        this.ops = new DifferentiableOps(kernels, workspace, tape);
        this.token = new Tensor("token", new int[]{1, 1}, DType.I32, Device.of(kernels), kernels.allocate(arena, 4), false);
        this.window = new Tensor("window", new int[]{1, context}, DType.I32, Device.of(kernels), kernels.allocate(arena, 4L * context), false);
        this.hostToken = arena.allocate(4, 64);
        this.hostWindow = arena.allocate(4L * context, 64);
        this.hostRow = arena.allocate(4L * vocab, 64);
        this.cache = model.newCache(context);
    }

    /**
     * The logits (vocab, host memory) of the token after {@code seq[from, from + t)}: the cache
     * holds that window's first tokens already, unless the window moved, when it starts again.
     */
    private void nextLogits(int[] seq, int from, int t) {
        if (from != cacheFrom || cache.length() >= t) {
            cache.clear();
            cacheFrom = from;
        }
        if (cache.length() == 0 && t > 1) {   // a prompt, or a window that slid: one forward over it fills the cache
            MemorySegment.copy(seq, from, hostWindow, ValueLayout.JAVA_INT, 0, t);
            kernels.copyFromHost(window.data(), hostWindow, 4L * t);
            workspace.reset();
            Tensor logits = model.prefill(ops, cache, window.slice(0, 1, t), t);
            kernels.copyToHost(hostRow, logits.data(), 4L * vocab);
            return;
        }
        while (cache.length() < t) {
            hostToken.set(ValueLayout.JAVA_INT, 0, seq[from + cache.length()]);
            kernels.copyFromHost(token.data(), hostToken, 4);
            workspace.reset();
            Tensor logits = model.decode(ops, cache, token);
            if (cache.length() == t) kernels.copyToHost(hostRow, logits.data(), 4L * vocab);
        }
    }

    /**
     * {@code prompt} followed by {@code count} sampled tokens.
     *
     * @param temperature 0 = greedy, else softmax(logits / temperature)
     * @param topK        sample among the k most likely tokens only (0 = the whole vocabulary)
     */
    public int[] generate(int[] prompt, int count, double temperature, int topK, Rng rng) {
        if (prompt.length == 0) throw new IllegalArgumentException("the prompt must hold at least one token");
        if (temperature < 0) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        int v = vocab, ctx = context;
        int[] seq = Arrays.copyOf(prompt, prompt.length + count);
        cache.clear();   // another sequence than the last call's
        cacheFrom = 0;
        double[] p = new double[v];
        Integer[] order = new Integer[v];
        for (int n = prompt.length; n < seq.length; n++) {
            int t = Math.min(n, ctx), from = n - t;
            for (int i = 0; i < t; i++) {
                if (seq[from + i] < 0 || seq[from + i] >= v) throw new IllegalArgumentException("token id " + seq[from + i] + " is outside the vocabulary of " + v);
            }
            nextLogits(seq, from, t);   // the last position's logits (vocab) on the host
            if (temperature == 0) {
                int best = 0;
                for (int j = 1; j < v; j++) if (logit(j) > logit(best)) best = j;
                seq[n] = best;
                continue;
            }
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < v; j++) max = Math.max(max, logit(j));
            for (int j = 0; j < v; j++) p[j] = Math.exp((logit(j) - max) / temperature);
            if (topK > 0 && topK < v) {
                for (int j = 0; j < v; j++) order[j] = j;
                Arrays.sort(order, (a, b) -> Double.compare(p[b], p[a]));
                for (int j = topK; j < v; j++) p[order[j]] = 0;
            }
            double sum = 0;
            for (int j = 0; j < v; j++) sum += p[j];
            double u = rng.nextDouble() * sum, c = 0;
            int pick = 0;
            for (int j = 0; j < v; j++) {
                c += p[j];
                if (p[j] > 0) pick = j;
                if (u < c) break;
            }
            seq[n] = pick;
        }
        return seq;
    }

    private float logit(int j) {
        return hostRow.getAtIndex(ValueLayout.JAVA_FLOAT, j);
    }

    @Override
    public void close() {
        cache.close();
        workspace.close();
        arena.close();
    }
}
