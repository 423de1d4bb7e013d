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
 *
 * <p>Up to {@code batch} prompts of one length are continued together ({@link #generate(int[][],
 * int, double, int, Rng[])}): each step's rows go through every GEMM at once, where one sequence
 * at a time reads every weight once per token. Each sequence samples from its own generator, so
 * its text does not depend on the others'; its logits may differ from a lone run's in the last
 * bits (a GEMM's sums over more rows may be ordered otherwise).
 */
public final class TextGenerator implements AutoCloseable {

    private final LanguageModel model;
    private final Kernels kernels;
    private final int vocab, context, batch;
    private final Workspace workspace;
    private final DifferentiableOps ops;
    private final Arena arena = Arena.ofShared();
    /** Token ids on the device: the windows for a prefill, one id a sequence for a decode. */
    private final Tensor window;
    private final MemorySegment hostWindow, hostRows;
    /** Sized by the longest call so far (at most the context), not by the context: a Llama 3's is 128k positions. */
    private KvCache cache;
    private int cacheFrom;

    /** Sampling one sequence at a time from {@code model} (not closed with this). */
    public TextGenerator(LanguageModel model, Kernels kernels) {
        this(model, kernels, 1);
    }

    /** Sampling up to {@code batch} sequences at a time from {@code model} (not closed with this). */
    public TextGenerator(LanguageModel model, Kernels kernels, int batch) {
        if (batch < 1) throw new IllegalArgumentException("a batch of " + batch + " sequences");
        this.model = model;
        this.kernels = kernels;
        this.vocab = model.vocabSize();
        this.context = model.contextLength();
        this.batch = batch;
        this.workspace = new Workspace(kernels, 1 << 20);
        Tape tape = new Tape();
        tape.setEnabled(false);
        this.ops = new DifferentiableOps(kernels, workspace, tape);
        this.window = new Tensor("window", new int[]{batch, context}, DType.I32, Device.of(kernels), kernels.allocate(arena, 4L * batch * context), false);
        this.hostWindow = arena.allocate(4L * batch * context, 64);
        this.hostRows = arena.allocate(4L * batch * vocab, 64);
    }

    /** The most sequences one call continues together. */
    public int batch() {
        return batch;
    }

    /**
     * The logits (rows, vocab), host memory, of the token after {@code seqs[r][from, from + t)}
     * for each row r: the cache holds those windows' first tokens already, unless the windows
     * moved, when it starts again.
     */
    private void nextLogits(int[][] seqs, int rows, int from, int t) {
        if (from != cacheFrom || cache.length() >= t) {
            cache.clear();
            cacheFrom = from;
        }
        if (cache.length() == 0 && t > 1) {   // prompts, or windows that slid: one forward over them fills the cache
            for (int r = 0; r < rows; r++) MemorySegment.copy(seqs[r], from, hostWindow, ValueLayout.JAVA_INT, 4L * r * t, t);
            kernels.copyFromHost(window.data(), hostWindow, 4L * rows * t);
            workspace.reset();
            Tensor logits = model.prefill(ops, cache, window.slice(0, rows, t), t);
            kernels.copyToHost(hostRows, logits.data(), 4L * rows * vocab);
            return;
        }
        while (cache.length() < t) {
            for (int r = 0; r < rows; r++) hostWindow.setAtIndex(ValueLayout.JAVA_INT, r, seqs[r][from + cache.length()]);
            kernels.copyFromHost(window.data(), hostWindow, 4L * rows);
            workspace.reset();
            Tensor logits = model.decode(ops, cache, window.slice(0, rows, 1));
            if (cache.length() == t) kernels.copyToHost(hostRows, logits.data(), 4L * rows * vocab);
        }
    }

    /**
     * {@code prompt} followed by {@code count} sampled tokens.
     *
     * @param temperature 0 = greedy, else softmax(logits / temperature)
     * @param topK        sample among the k most likely tokens only (0 = the whole vocabulary)
     */
    public int[] generate(int[] prompt, int count, double temperature, int topK, Rng rng) {
        return generate(new int[][]{prompt}, count, temperature, topK, new Rng[]{rng})[0];
    }

    /**
     * Each of {@code prompts} (at most {@link #batch()}, all of one length) followed by
     * {@code count} tokens sampled from its own generator {@code rngs[r]}, the sequences decoded
     * together.
     *
     * @param temperature 0 = greedy, else softmax(logits / temperature)
     * @param topK        sample among the k most likely tokens only (0 = the whole vocabulary)
     */
    public int[][] generate(int[][] prompts, int count, double temperature, int topK, Rng[] rngs) {
        int rows = prompts.length;
        if (rows < 1 || rows > batch) throw new IllegalArgumentException(rows + " prompts for a generator of " + batch + " at a time");
        if (rngs.length != rows) throw new IllegalArgumentException(rows + " prompts but " + rngs.length + " generators");
        int length = prompts[0].length;
        if (length == 0) throw new IllegalArgumentException("the prompt must hold at least one token");
        for (int[] p : prompts) {
            if (p.length != length) throw new IllegalArgumentException("prompts decoded together must be of one length: " + p.length + " and " + length);
        }
        if (temperature < 0) throw new IllegalArgumentException("temperature must be >= 0, got " + temperature);
        int v = vocab, ctx = context;
        int[][] seqs = new int[rows][];
        for (int r = 0; r < rows; r++) seqs[r] = Arrays.copyOf(prompts[r], length + count);
        int positions = (int) Math.min(ctx, (long) length + count);
        if (cache == null || cache.maxLen() < positions) {
            if (cache != null) cache.close();
            cache = model.newCache(batch, positions);
        }
        cache.clear();   // other sequences than the last call's
        cacheFrom = 0;
        double[] p = new double[v];
        float[] row = new float[v];
        int[] kept = topK > 0 && topK < v ? new int[topK] : null;   // the top k's ids, each token's
        for (int n = length; n < length + count; n++) {
            int t = Math.min(n, ctx), from = n - t;
            for (int[] seq : seqs) {
                for (int i = 0; i < t; i++) {
                    if (seq[from + i] < 0 || seq[from + i] >= v) throw new IllegalArgumentException("token id " + seq[from + i] + " is outside the vocabulary of " + v);
                }
            }
            nextLogits(seqs, rows, from, t);   // each sequence's last position's logits (rows, vocab) on the host
            for (int r = 0; r < rows; r++) {
                MemorySegment.copy(hostRows, ValueLayout.JAVA_FLOAT, 4L * r * v, row, 0, v);
                seqs[r][n] = sample(row, temperature, kept, p, rngs[r]);
            }
        }
        return seqs;
    }

    /** A token drawn from softmax(row / temperature), over the top k when {@code kept} holds k ids; the argmax at temperature 0. */
    private static int sample(float[] row, double temperature, int[] kept, double[] p, Rng rng) {
        int v = row.length;
        if (temperature == 0) {
            int best = 0;
            for (int j = 1; j < v; j++) if (row[j] > row[best]) best = j;
            return best;
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
        return pick;
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
        if (cache != null) cache.close();
        workspace.close();
        arena.close();
    }
}
