package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;

/**
 * The keys and values of every block for the tokens generated so far (one sequence), where the
 * kernels compute: block l's keys and values are (maxLen, width) rows, width = key/value heads ×
 * head size. {@link LanguageModel#decode} appends one row per block and reads rows [0, length];
 * {@link LanguageModel#prefill} fills the rows of a whole window at once.
 */
public final class KvCache implements AutoCloseable {

    private final Arena arena = Arena.ofShared();
    private final MemorySegment[] keys, values;
    private final MemorySegment scores;
    private final int maxLen, width;
    private int length;

    /** @param heads query heads (the decode kernel's score scratch is heads × maxLen) */
    public KvCache(Kernels kernels, int layers, int maxLen, int width, int heads) {
        this.maxLen = maxLen;
        this.width = width;
        this.keys = new MemorySegment[layers];
        this.values = new MemorySegment[layers];
        for (int l = 0; l < layers; l++) {
            keys[l] = kernels.allocate(arena, 4L * maxLen * width);
            values[l] = kernels.allocate(arena, 4L * maxLen * width);
        }
        this.scores = kernels.allocate(arena, 4L * heads * maxLen);
    }

    /** Tokens cached: the position of the next one. */
    public int length() {
        return length;
    }

    public int maxLen() {
        return maxLen;
    }

    /** Forgets every token (the next decode is position 0). */
    public void clear() {
        length = 0;
    }

    /**
     * Attention of the new token's query over every cached row and its own: k and v (1, width)
     * join the cache at the next position first. q is (1, heads · hs); the result (1, heads · hs)
     * lives in the workspace of {@code ops}.
     */
    Tensor attend(DifferentiableOps ops, int layer, Tensor q, Tensor k, Tensor v, int heads, int kvHeads, int hs) {
        int pos = next();
        long row = 4L * pos * width, bytes = 4L * width;
        Kernels kernels = ops.kernels();
        kernels.copy(keys[layer].asSlice(row, bytes), k.data(), bytes);
        kernels.copy(values[layer].asSlice(row, bytes), v.data(), bytes);
        Tensor out = ops.workspace().tensor("attention.decode", 1, heads * hs);
        kernels.attentionDecode(out.data(), scores, q.data(), keys[layer], values[layer], 1, pos + 1, maxLen, heads, kvHeads, hs);
        return out;
    }

    /**
     * The keys and values of t new positions at once (a prompt, or a window refilled): row r of k
     * (heads · hs floats from column kOffset, rows kStride apart) and of v join the cache at
     * position next() + r. {@link #advance(int)} then counts them.
     */
    void append(Kernels kernels, int layer, Tensor k, int kStride, int kOffset, Tensor v, int vStride, int vOffset, int t, int heads, int hs) {
        int pos = next(t);
        MemorySegment kAt = keys[layer].asSlice(4L * pos * width), vAt = values[layer].asSlice(4L * pos * width);
        kernels.repeatHeadsForward(kAt, width, 0, k.data(), kStride, kOffset, t, heads, 1, hs);
        kernels.repeatHeadsForward(vAt, width, 0, v.data(), vStride, vOffset, t, heads, 1, hs);
    }

    /** The next position, checked against the cache's room. */
    int next() {
        return next(1);
    }

    /** The next position, with room for t from it. */
    int next(int t) {
        if (length + t > maxLen) throw new IllegalStateException("the cache holds " + maxLen + " positions, " + length + " used; " + t + " more do not fit");
        return length;
    }

    void advance() {
        advance(1);
    }

    void advance(int t) {
        length += t;
    }

    @Override
    public void close() {
        arena.close();
    }
}
