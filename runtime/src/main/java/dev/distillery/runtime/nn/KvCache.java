package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;

/**
 * The keys and values of every block for the tokens generated so far, for up to {@code batch}
 * sequences of equal length decoded together, where the kernels compute: block l's keys and
 * values are (batch, maxLen, width) rows, width = key/value heads × head size.
 * {@link LanguageModel#decode} appends one row per sequence and block and reads rows [0, length];
 * {@link LanguageModel#prefill} fills the rows of whole windows at once.
 */
public final class KvCache implements AutoCloseable {

    private final Arena arena = Arena.ofShared();
    private final MemorySegment[] keys, values;
    private final MemorySegment scores;
    private final int batch, maxLen, width;
    private int length;

    /** @param heads query heads (the decode kernel's score scratch is batch × heads × maxLen) */
    public KvCache(Kernels kernels, int layers, int batch, int maxLen, int width, int heads) {
        if (batch < 1) throw new IllegalArgumentException("a cache of " + batch + " sequences");
        this.batch = batch;
        this.maxLen = maxLen;
        this.width = width;
        this.keys = new MemorySegment[layers];
        this.values = new MemorySegment[layers];
        for (int l = 0; l < layers; l++) {
            keys[l] = kernels.allocate(arena, 4L * batch * maxLen * width);
            values[l] = kernels.allocate(arena, 4L * batch * maxLen * width);
        }
        this.scores = kernels.allocate(arena, 4L * batch * heads * maxLen);
    }

    /** Tokens cached per sequence: the position of the next one. */
    public int length() {
        return length;
    }

    public int maxLen() {
        return maxLen;
    }

    /** The most sequences it holds. */
    public int batch() {
        return batch;
    }

    /** Forgets every token (the next decode is position 0). */
    public void clear() {
        length = 0;
    }

    /**
     * Attention of each sequence's new query over its cached rows and its own: row r of k and of v
     * (key/value heads · hs floats from column kOffset / vOffset, rows kStride / vStride apart)
     * joins sequence r's cache at the next position first. Row r of q (heads · hs floats from
     * column qOffset, rows qStride apart) is sequence r's query; the result (rows, heads · hs)
     * lives in the workspace of {@code ops}.
     */
    Tensor attend(DifferentiableOps ops, int layer, int rows, Tensor q, int qStride, int qOffset, Tensor k, int kStride, int kOffset,
                  Tensor v, int vStride, int vOffset, int heads, int kvHeads, int hs) {
        requireRows(rows);
        int pos = next(), qWidth = heads * hs;
        Kernels kernels = ops.kernels();
        MemorySegment at = keys[layer].asSlice(4L * pos * width), vAt = values[layer].asSlice(4L * pos * width);
        // one row a sequence, maxLen · width floats apart
        kernels.repeatHeadsForward(at, maxLen * width, 0, k.data(), kStride, kOffset, rows, kvHeads, 1, hs);
        kernels.repeatHeadsForward(vAt, maxLen * width, 0, v.data(), vStride, vOffset, rows, kvHeads, 1, hs);
        MemorySegment query = q.data().asSlice(4L * qOffset);
        if (rows > 1 && qStride != qWidth) {   // the decode kernel reads the queries as (rows, heads · hs)
            Tensor packed = ops.workspace().tensor("attention.decode.q", rows, qWidth);
            kernels.repeatHeadsForward(packed.data(), qWidth, 0, q.data(), qStride, qOffset, rows, heads, 1, hs);
            query = packed.data();
        }
        Tensor out = ops.workspace().tensor("attention.decode", rows, qWidth);
        kernels.attentionDecode(out.data(), scores, query, keys[layer], values[layer], rows, pos + 1, maxLen, heads, kvHeads, hs);
        return out;
    }

    /**
     * The keys and values of t new positions of each of {@code rows} sequences at once (prompts,
     * or windows refilled): row s·t + r of k (heads · hs floats from column kOffset, rows kStride
     * apart) and of v join sequence s's cache at position next() + r. {@link #advance(int)} then
     * counts them.
     */
    void append(Kernels kernels, int layer, int rows, Tensor k, int kStride, int kOffset, Tensor v, int vStride, int vOffset, int t,
                int heads, int hs) {
        requireRows(rows);
        int pos = next(t);
        for (int s = 0; s < rows; s++) {
            long to = 4L * ((long) s * maxLen + pos) * width;
            kernels.repeatHeadsForward(keys[layer].asSlice(to), width, 0, k.data().asSlice(4L * s * t * kStride), kStride, kOffset, t, heads, 1, hs);
            kernels.repeatHeadsForward(values[layer].asSlice(to), width, 0, v.data().asSlice(4L * s * t * vStride), vStride, vOffset, t, heads, 1, hs);
        }
    }

    private void requireRows(int rows) {
        if (rows < 1 || rows > batch) throw new IllegalArgumentException(rows + " sequences for a cache of " + batch);
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
