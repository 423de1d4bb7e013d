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
    /** Token ids on the device: a window for a prefill, its first element for a decode. */
    private final Tensor window;
    private final MemorySegment hostWindow, hostRow;
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
        this.window = new Tensor("window", new int[]{1, context}, DType.I32, Device.of(kernels), kernels.allocate(arena, 4L * context), false);
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
            hostWindow.set(ValueLayout.JAVA_INT, 0, seq[from + cache.length()]);
            kernels.copyFromHost(window.data(), hostWindow, 4);
            workspace.reset();
            Tensor logits = model.decode(ops, cache, window.slice(0, 1, 1));
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
        float[] row = new float[v];
        int[] kept = topK > 0 && topK < v ? new int[topK] : null;   // the top k's ids, each token's
        for (int n = prompt.length; n < seq.length; n++) {
            int t = Math.min(n, ctx), from = n - t;
            for (int i = 0; i < t; i++) {
                if (seq[from + i] < 0 || seq[from + i] >= v) throw new IllegalArgumentException("token id " + seq[from + i] + " is outside the vocabulary of " + v);
            }
            nextLogits(seq, from, t);   // the last position's logits (vocab) on the host
            MemorySegment.copy(hostRow, ValueLayout.JAVA_FLOAT, 0, row, 0, v);
            if (temperature == 0) {
                int best = 0;
                for (int j = 1; j < v; j++) if (row[j] > row[best]) best = j;
                seq[n] = best;
                continue;
            }
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < v; j++) max = Math.max(max, row[j]);
            // the candidates in ascending order: every id, or the top k (exp is monotonic, so the
            // k largest logits, ties to the lower id, are the k largest probabilities); each gets
            // p = exp((logit − max)/T), summed and walked in id order
            int m = kept == null ? v : topIds(row, kept);
            double sum = 0;
            for (int i = 0; i < m; i++) {
                int j = kept == null ? i : kept[i];
                p[i] = Math.exp((row[j] - max) / temperature);
                sum += p[i];
            }
            double u = rng.nextDouble() * sum, c = 0;
            int pick = 0;
            for (int i = 0; i < m; i++) {
                c += p[i];
                if (p[i] > 0) pick = kept == null ? i : kept[i];
                if (u < c) break;
            }
            seq[n] = pick;
        }
        return seq;
    }

    /**
     * The ids of the k = heap.length largest logits (ties to the lower id), into heap in ascending
     * order; returns how many (k, or fewer logits). A bounded heap whose root is the worst kept,
     * O(V log k), where sorting the whole vocabulary's boxed ids cost more than the model's
     * forward on a 50,257-token vocabulary.
     */
    static int topIds(float[] logits, int[] heap) {
        int k = heap.length, size = 0;
        for (int j = 0; j < logits.length; j++) {
            if (size < k) {
                heap[size] = j;
                for (int i = size++; i > 0 && worse(logits, heap[i], heap[(i - 1) / 2]); i = (i - 1) / 2) swap(heap, i, (i - 1) / 2);
            } else if (worse(logits, heap[0], j)) {
                heap[0] = j;
                for (int i = 0; ; ) {
                    int l = 2 * i + 1, r = l + 1, w = i;
                    if (l < k && worse(logits, heap[l], heap[w])) w = l;
                    if (r < k && worse(logits, heap[r], heap[w])) w = r;
                    if (w == i) break;
                    swap(heap, i, w);
                    i = w;
                }
            }
        }
        Arrays.sort(heap, 0, size);
        return size;
    }

    /** Whether id a ranks below id b: a smaller logit, or the same one and a larger id. */
    private static boolean worse(float[] logits, int a, int b) {
        return logits[a] < logits[b] || (logits[a] == logits[b] && a > b);
    }

    private static void swap(int[] heap, int i, int j) {
        int x = heap[i];
        heap[i] = heap[j];
        heap[j] = x;
    }

    @Override
    public void close() {
        cache.close();
        workspace.close();
        arena.close();
    }
}
