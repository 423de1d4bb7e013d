package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;

import dev.distillery.kernels.Kernels;

/**
 * A Llama-family model, forward only, for windows of (b, t) tokens: the teacher side of
 * distillation. Every step is a kernel of the contract (the CPU's or the CUDA one); weights and
 * activations live in one arena of the backend, allocated once. Per block, with rows = b·t:
 *
 * <pre>
 *   h = rmsnorm(x)                          (rows, hidden)
 *   q = h Wqᵀ (+bq), k = h Wkᵀ, v = h Wvᵀ   (rows, heads·hs), (rows, kvHeads·hs) ×2
 *   q, k rotated (RoPE); q, k, v packed into qkv (rows, 3·heads·hs), k and v heads repeated per group
 *   x += attention(qkv) Woᵀ
 *   x += down(silu(h2 Wgateᵀ) · h2 Wupᵀ),   h2 = rmsnorm(x)
 * </pre>
 * then logits = rmsnorm(x) Wheadᵀ (rows, vocab). Linear weights are PyTorch's (out, in).
 */
public final class LlamaForward implements LanguageModelForward {

    /** One block's weights; the biases are null without qkv_bias. */
    public record Block(MemorySegment inputNorm, MemorySegment q, MemorySegment k, MemorySegment v, MemorySegment qBias,
                        MemorySegment kBias, MemorySegment vBias, MemorySegment o, MemorySegment postNorm,
                        MemorySegment gate, MemorySegment up, MemorySegment down) {
    }

    private final LlamaConfig cfg;
    private final Kernels kernels;
    private final Arena arena;
    private final int b, t, rows;
    private final MemorySegment embed, finalNorm, head;
    private final List<Block> blocks;
    private final MemorySegment tokens, noPositions, cosSin, x, h, rstd, q, k, v, qkv, att, attOut, gate, up, act, logits, lse;
    private MemorySegment hostLogits;

    /**
     * @param arena owns the weights (already in the backend's memory) and receives the workspace;
     *              closed with this model
     */
    public LlamaForward(LlamaConfig cfg, Kernels kernels, Arena arena, MemorySegment embed, List<Block> blocks, MemorySegment finalNorm,
                        MemorySegment head, int b, int t) {
        if (t > cfg.contextLength()) throw new IllegalArgumentException("windows of " + t + " exceed the context " + cfg.contextLength());
        this.cfg = cfg;
        this.kernels = kernels;
        this.arena = arena;
        this.b = b;
        this.t = t;
        this.rows = b * t;
        this.embed = embed;
        this.blocks = List.copyOf(blocks);
        this.finalNorm = finalNorm;
        this.head = head;
        int a = cfg.attention(), kv = cfg.kvHeads() * cfg.headSize();
        this.tokens = kernels.allocate(arena, 4L * rows);
        this.noPositions = floats((long) t * cfg.hidden());
        kernels.fill(noPositions, 0f, (long) t * cfg.hidden());
        this.cosSin = rotaryTable();
        this.x = floats((long) rows * cfg.hidden());
        this.h = floats((long) rows * cfg.hidden());
        this.rstd = floats(rows);
        this.q = floats((long) rows * a);
        this.k = floats((long) rows * kv);
        this.v = floats((long) rows * kv);
        this.qkv = floats((long) rows * 3 * a);
        this.att = floats((long) b * cfg.heads() * t * t);
        this.attOut = floats((long) rows * a);
        this.gate = floats((long) rows * cfg.intermediate());
        this.up = floats((long) rows * cfg.intermediate());
        this.act = floats((long) rows * cfg.intermediate());
        this.logits = floats((long) rows * cfg.vocabSize());
        this.lse = floats(rows);
    }

    private MemorySegment floats(long n) {
        return kernels.allocate(arena, 4 * Math.max(1, n));
    }

    /** (t, hs/2, 2): cos and sin of p·f_j, the product rounded to float first, as transformers computes it. */
    private MemorySegment rotaryTable() {
        int pairs = cfg.headSize() / 2;
        try (Arena host = Arena.ofConfined()) {
            MemorySegment table = host.allocate(8L * t * pairs, 64);
            for (int p = 0; p < t; p++) {
                for (int j = 0; j < pairs; j++) {
                    float angle = p * (float) cfg.invFreq()[j];
                    table.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * (p * pairs + j), (float) Math.cos(angle));
                    table.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * (p * pairs + j) + 1, (float) Math.sin(angle));
                }
            }
            MemorySegment device = floats(2L * t * pairs);
            kernels.copyFromHost(device, table, 8L * t * pairs);
            return device;
        }
    }

    public LlamaConfig config() {
        return cfg;
    }

    @Override
    public int vocabSize() {
        return cfg.vocabSize();
    }

    @Override
    public int contextLength() {
        return cfg.contextLength();
    }

    /** out (rows, n) = in (rows, k) · Wᵀ, W (n, k), plus bias (n) when there is one. */
    private void linear(MemorySegment out, MemorySegment in, MemorySegment w, MemorySegment bias, int n, int kIn) {
        if (bias != null) kernels.broadcastRows(out, bias, rows, n);
        kernels.gemm(false, true, rows, n, kIn, 1f, in, kIn, w, kIn, bias != null ? 1f : 0f, out, n);
    }

    @Override
    public MemorySegment logits(MemorySegment ids) {
        int hidden = cfg.hidden(), a = cfg.attention(), hs = cfg.headSize(), kvA = cfg.kvHeads() * hs, inter = cfg.intermediate();
        kernels.copyFromHost(tokens, ids, 4L * rows);
        kernels.embeddingForward(x, tokens, embed, noPositions, b, t, hidden, cfg.vocabSize());
        for (Block blk : blocks) {
            kernels.rmsNormForward(h, rstd, x, blk.inputNorm(), rows, hidden, cfg.rmsEps());
            linear(q, h, blk.q(), blk.qBias(), a, hidden);
            linear(k, h, blk.k(), blk.kBias(), kvA, hidden);
            linear(v, h, blk.v(), blk.vBias(), kvA, hidden);
            kernels.ropeForward(q, q, cosSin, b, t, cfg.heads(), hs, a, 0);
            kernels.ropeForward(k, k, cosSin, b, t, cfg.kvHeads(), hs, kvA, 0);
            kernels.repeatHeadsForward(qkv, 3 * a, 0, q, a, 0, rows, cfg.heads(), 1, hs);
            kernels.repeatHeadsForward(qkv, 3 * a, a, k, kvA, 0, rows, cfg.kvHeads(), cfg.group(), hs);
            kernels.repeatHeadsForward(qkv, 3 * a, 2 * a, v, kvA, 0, rows, cfg.kvHeads(), cfg.group(), hs);
            kernels.attentionForward(attOut, att, qkv, b, t, a, cfg.heads());
            linear(h, attOut, blk.o(), null, hidden, a);
            kernels.residualForward(x, x, h, (long) rows * hidden);
            kernels.rmsNormForward(h, rstd, x, blk.postNorm(), rows, hidden, cfg.rmsEps());
            linear(gate, h, blk.gate(), null, inter, hidden);
            linear(up, h, blk.up(), null, inter, hidden);
            kernels.swiGluForward(act, gate, up, (long) rows * inter);
            linear(h, act, blk.down(), null, hidden, inter);
            kernels.residualForward(x, x, h, (long) rows * hidden);
        }
        kernels.rmsNormForward(h, rstd, x, finalNorm, rows, hidden, cfg.rmsEps());
        linear(logits, h, head, null, cfg.vocabSize(), hidden);
        if (kernels.hostAccessible()) return logits;
        if (hostLogits == null) hostLogits = arena.allocate(4L * rows * cfg.vocabSize(), 64);
        kernels.copyToHost(hostLogits, logits, 4L * rows * cfg.vocabSize());
        return hostLogits;
    }

    @Override
    public float[] logsumexpOfLastLogits(double temperature) {
        kernels.logsumexpRows(lse, logits, rows, cfg.vocabSize(), (float) (1 / temperature));
        try (Arena host = Arena.ofConfined()) {
            return kernels.hostView(lse, 4L * rows, host).toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    @Override
    public void close() {
        arena.close();
    }
}
