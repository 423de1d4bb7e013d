package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.function.IntFunction;
import java.util.function.IntPredicate;

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
 * <p>Up to {@code batch} prompts, of any lengths, are continued together ({@link #generate(int[][],
 * int, double, int, Rng[])}): each step's rows go through every GEMM at once, where one sequence
 * at a time reads every weight once per token. Each sequence samples from its own generator, so
 * its text does not depend on the others'; its logits may differ from a lone run's in the last
 * bits (a GEMM's sums over more rows may be ordered otherwise). Each token is drawn where the
 * logits are ({@link Kernels#sampleRows}): only the ids come back to the host, and the uniform
 * numbers go to the device.
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
    /** Each sequence's uniform number and drawn id, on the device, for {@link Kernels#sampleRows}. */
    private final MemorySegment uniforms, drawn;
    private final MemorySegment hostWindow, hostUniforms, hostDrawn;
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
        this.uniforms = kernels.allocate(arena, 8L * batch);
        this.drawn = kernels.allocate(arena, 4L * batch);
        this.hostWindow = arena.allocate(4L * batch * context, 64);
        this.hostUniforms = arena.allocate(8L * batch, 64);
        this.hostDrawn = arena.allocate(4L * batch, 64);
    }

    /** The most sequences one call continues together. */
    public int batch() {
        return batch;
    }

    /**
     * The logits (rows, vocab), in the workspace, of the token after {@code seqs[r][from, from + t)}
     * for each row r: the cache holds those windows' first tokens already, unless the windows
     * moved, when it starts again.
     */
    private Tensor nextLogits(int[][] seqs, int rows, int from, int t) {
        if (from != cacheFrom || cache.length() >= t) {
            cache.clear();
            cacheFrom = from;
        }
        if (cache.length() == 0 && t > 1) {   // prompts, or windows that slid: one forward over them fills the cache
            for (int r = 0; r < rows; r++) MemorySegment.copy(seqs[r], from, hostWindow, ValueLayout.JAVA_INT, 4L * r * t, t);
            kernels.copyFromHost(window.data(), hostWindow, 4L * rows * t);
            workspace.reset();
            return model.prefill(ops, cache, window.slice(0, rows, t), t);
        }
        Tensor logits = null;
        while (cache.length() < t) {
            for (int r = 0; r < rows; r++) hostWindow.setAtIndex(ValueLayout.JAVA_INT, r, seqs[r][from + cache.length()]);
            kernels.copyFromHost(window.data(), hostWindow, 4L * rows);
            workspace.reset();
            logits = model.decode(ops, cache, window.slice(0, rows, 1));
        }
        return logits;
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
     * Each of {@code prompts} (at most {@link #batch()}) followed by {@code count} tokens sampled
     * from its own generator {@code rngs[r]}, the sequences decoded together.
     *
     * <p>Prompts of different lengths share every step's position: the cache is filled with the
     * shortest prompt's length at once, then a sequence whose prompt goes on is given its next
     * prompt token where the others draw one (its logits there are not drawn from, and its generator
     * is not touched), and a sequence that has its {@code count} tokens idles until the longest
     * is done. A sequence's text is then what it would be alone, up to the GEMMs' last bits; a
     * batch of lengths m..M costs M − m more steps than one of equal lengths, each step of every row.
     *
     * @param temperature 0 = greedy, else softmax(logits / temperature)
     * @param topK        sample among the k most likely tokens only (0 = the whole vocabulary)
     */
    public int[][] generate(int[][] prompts, int count, double temperature, int topK, Rng[] rngs) {
        return generate(prompts, count, temperature, topK, rngs, NO_STOP);
    }

    /** For {@code stop}: no token ends a sequence before its count. */
    public static final int NO_STOP = -1;

    /**
     * {@link #generate(int[][], int, double, int, Rng[])}, a sequence ending early, with that token,
     * when it draws {@code stop} (an end-of-sequence id, or {@link #NO_STOP}): it idles from there
     * (its generator untouched), and the call ends when every sequence has ended.
     */
    public int[][] generate(int[][] prompts, int count, double temperature, int topK, Rng[] rngs, int stop) {
        int rows = prompts.length;
        if (rows < 1 || rows > batch) throw new IllegalArgumentException(rows + " prompts for a generator of " + batch + " at a time");
        if (rngs.length != rows) throw new IllegalArgumentException(rows + " prompts but " + rngs.length + " generators");
        if (count < 0) throw new IllegalArgumentException("a count of " + count + " tokens");
        int shortest = Integer.MAX_VALUE, longest = 0;
        for (int[] p : prompts) {
            if (p.length == 0) throw new IllegalArgumentException("a prompt must hold at least one token");
            for (int id : p) if (id < 0 || id >= vocab) throw new IllegalArgumentException("token id " + id + " is outside the vocabulary of " + vocab);
            shortest = Math.min(shortest, p.length);
            longest = Math.max(longest, p.length);
        }
        if (stop != NO_STOP && (stop < 0 || stop >= vocab)) throw new IllegalArgumentException("stop token " + stop + " is outside the vocabulary of " + vocab);
        Kernels.greedy(temperature, topK);   // the arguments checked before the prefill
        if (count == 0) return Arrays.stream(prompts).map(int[]::clone).toArray(int[][]::new);
        int v = vocab, ctx = context, end = longest + count;
        int[][] seqs = new int[rows][];
        int[] ends = new int[rows];   // each sequence's length: its prompt and count tokens, or up to its stop token
        for (int r = 0; r < rows; r++) {
            seqs[r] = Arrays.copyOf(prompts[r], end);   // an idle sequence's tokens past its own end are dropped
            ends[r] = prompts[r].length + count;
        }
        int positions = (int) Math.min(ctx, (long) end);
        if (cache == null || cache.maxLen() < positions) {
            if (cache != null) cache.close();
            cache = model.newCache(batch, positions);
        }
        cache.clear();   // other sequences than the last call's
        cacheFrom = 0;
        // the weights do not change during a call: under bf16 each is rounded or packed once a call, not once a token
        try (Kernels.ConstantHold weights = kernels.holdConstant(model.parameters().paramBlock())) {
            for (int n = shortest, last = end; n < last; n++) {   // last: the longest sequence's end, which stops move down
                int t = Math.min(n, ctx), from = n - t;   // the prompts' ids were checked, and sampleRows draws in [0, v)
                Tensor logits = nextLogits(seqs, rows, from, t);   // each sequence's last position's logits (rows, vocab)
                if (temperature > 0) {   // greedy draws nothing from the generators
                    for (int r = 0; r < rows; r++) hostUniforms.setAtIndex(ValueLayout.JAVA_DOUBLE, r, drawsAt(prompts[r].length, ends[r], n) ? rngs[r].nextDouble() : 0);
                    kernels.copyFromHost(uniforms, hostUniforms, 8L * rows);
                }
                kernels.sampleRows(drawn, logits.data(), uniforms, rows, v, temperature, topK);   // where the logits are
                kernels.copyToHost(hostDrawn, drawn, 4L * rows);
                for (int r = 0; r < rows; r++) {
                    if (n < prompts[r].length) continue;
                    int id = hostDrawn.getAtIndex(ValueLayout.JAVA_INT, r);
                    seqs[r][n] = id;
                    if (id == stop && n < ends[r]) {
                        ends[r] = n + 1;
                        last = Arrays.stream(ends).max().getAsInt();
                    }
                }
            }
        }
        for (int r = 0; r < rows; r++) if (seqs[r].length != ends[r]) seqs[r] = Arrays.copyOf(seqs[r], ends[r]);
        return seqs;
    }

    /**
     * Every one of {@code prompts} continued by {@code count} tokens, prompt i sampled from its own
     * generator {@code generators.apply(i)}, the results in the prompts' order: the prompts in order
     * of token length (then of index) go through {@link #generate(int[][], int, double, int, Rng[])}
     * {@link #batch()} at a time, a batch's lengths differing by at most {@code spread} tokens
     * (0: prompts of one length only), each ending early at {@code stop} (or {@link #NO_STOP}).
     * {@code goOn} hears the prompts continued so far after each batch, and ends the call there when
     * it answers false: the prompts not continued are then null.
     */
    public int[][] generateAll(List<int[]> prompts, int count, double temperature, int topK, int stop, int spread,
                               IntFunction<Rng> generators, IntPredicate goOn) {
        if (spread < 0) throw new IllegalArgumentException("a spread of " + spread + " tokens");
        Integer[] order = new Integer[prompts.size()];
        for (int i = 0; i < order.length; i++) order[i] = i;
        Arrays.sort(order, Comparator.comparingInt((Integer i) -> prompts.get(i).length).thenComparingInt(i -> i));
        int[][] continued = new int[prompts.size()][];
        for (int first = 0, next; first < order.length; first = next) {
            int shortest = prompts.get(order[first]).length;
            next = first + 1;
            while (next < order.length && next - first < batch && prompts.get(order[next]).length - shortest <= spread) next++;
            int[][] starts = new int[next - first][];
            Rng[] rngs = new Rng[next - first];
            for (int r = 0; r < starts.length; r++) {
                starts[r] = prompts.get(order[first + r]);
                rngs[r] = generators.apply(order[first + r]);
            }
            int[][] seqs = generate(starts, count, temperature, topK, rngs, stop);
            for (int r = 0; r < starts.length; r++) continued[order[first + r]] = seqs[r];
            if (!goOn.test(next)) break;
        }
        return continued;
    }

    /**
     * {@link #generateAll}'s spread for continuations of {@code count} tokens: a quarter of them.
     * The shortest prompts of a batch fill the cache at once and the longer ones go on one token a
     * step with it, so each token of spread costs the batch one step of all its rows; a quarter
     * bounds that at a quarter of the batch's own steps, and continuations of one token batch only
     * prompts of one length.
     */
    public static int spread(int count) {
        return count / 4;
    }

    /** Whether a sequence whose prompt holds {@code length} tokens and that ends at {@code end} draws its token at position n. */
    private static boolean drawsAt(int length, int end, int n) {
        return n >= length && n < end;
    }

    @Override
    public void close() {
        if (cache != null) cache.close();
        workspace.close();
        arena.close();
    }
}
