package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.ParameterStore;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;

/**
 * A Llama-family model (Llama 2/3, Qwen2, Mistral without sliding windows), as teacher or
 * student. Parameter names and layouts are {@code transformers}' {@code LlamaForCausalLM}
 * ({@code model.layers.0.self_attn.q_proj.weight} is (heads·hs, hidden), PyTorch's (out, in)), so
 * a checkpoint opens there as it is. Per block, with rows = b·t:
 *
 * <pre>
 *   h = rmsnorm(x)                                   (rows, hidden)
 *   q = rope(h Wqᵀ + bq), k = rope(h Wkᵀ + bk)       (rows, heads·hs), (rows, kvHeads·hs); biases: Qwen2 only
 *   v = h Wvᵀ + bv                                   (rows, kvHeads·hs)
 *   x += attention(pack(q, k, v)) Woᵀ                k and v heads repeated for each group of query heads
 *   x += (silu(h2 Wgateᵀ) · h2 Wupᵀ) Wdownᵀ,  h2 = rmsnorm(x)
 * </pre>
 * then hidden = rmsnorm(x), logits = hidden Wheadᵀ, Whead the token embedding when tied.
 */
public final class Llama implements LanguageModel {

    private final LlamaConfig cfg;
    private final Kernels kernels;
    private final ParameterStore params;
    private final double[] invFreq;
    private Arena tableArena;
    private Tensor cosSin;

    /** A student: its parameters zero-filled, with gradients (call {@link #initialize} or load them). */
    public Llama(LlamaConfig cfg, Kernels kernels) {
        this(cfg, kernels, true);
    }

    /** @param trainable false for a teacher: no gradient memory, nothing recorded for a backward */
    public Llama(LlamaConfig cfg, Kernels kernels, boolean trainable) {
        this.cfg = cfg;
        this.kernels = kernels;
        this.invFreq = cfg.rope().inverseFrequencies(cfg.headSize());
        int h = cfg.hidden(), a = cfg.attention(), kv = cfg.keyValue(), inter = cfg.intermediate();
        ParameterStore.Builder b = ParameterStore.builder().add("model.embed_tokens.weight", cfg.vocabSize(), h);
        for (int l = 0; l < cfg.layers(); l++) {
            String p = prefix(l);
            b.add(p + "input_layernorm.weight", h).add(p + "self_attn.q_proj.weight", a, h);
            if (cfg.qkvBias()) b.add(p + "self_attn.q_proj.bias", a);
            b.add(p + "self_attn.k_proj.weight", kv, h);
            if (cfg.qkvBias()) b.add(p + "self_attn.k_proj.bias", kv);
            b.add(p + "self_attn.v_proj.weight", kv, h);
            if (cfg.qkvBias()) b.add(p + "self_attn.v_proj.bias", kv);
            b.add(p + "self_attn.o_proj.weight", h, a).add(p + "post_attention_layernorm.weight", h)
                    .add(p + "mlp.gate_proj.weight", inter, h).add(p + "mlp.up_proj.weight", inter, h).add(p + "mlp.down_proj.weight", h, inter);
        }
        b.add("model.norm.weight", h);
        if (!cfg.tied()) b.add("lm_head.weight", cfg.vocabSize(), h);
        this.params = trainable ? b.build(kernels) : b.buildFrozen(kernels);
    }

    /** "model.layers.l.": the names of block l's parameters start so. */
    private static String prefix(int l) {
        return "model.layers." + l + ".";
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

    @Override
    public int width() {
        return cfg.hidden();
    }

    @Override
    public int layers() {
        return cfg.layers();
    }

    @Override
    public int heads() {
        return cfg.heads();
    }

    @Override
    public ParameterStore parameters() {
        return params;
    }

    @Override
    public String describe() {
        return String.format("%s, %d layers of %d (%d heads of %d, %d key/value heads), SwiGLU %d, vocab %d, context %d%s: %,d parameters",
                cfg.family().architecture, cfg.layers(), cfg.hidden(), cfg.heads(), cfg.headSize(), cfg.kvHeads(), cfg.intermediate(),
                cfg.vocabSize(), cfg.contextLength(), cfg.tied() ? ", tied head" : "", params.parameterCount());
    }

    /**
     * {@code transformers}' initialisation of the family: embeddings and projections N(0, 0.02),
     * biases 0, norm weights 1, drawn in declaration order from one seeded {@link Rng}.
     */
    @Override
    public void initialize(long seed) {
        Rng rng = new Rng(seed);
        for (Tensor t : params.parameters()) {
            if (t.name().endsWith("norm.weight")) {
                params.fill(t, () -> 1);
            } else if (t.name().endsWith(".bias")) {
                params.fill(t, () -> 0);
            } else {
                params.fill(t, () -> 0.02 * rng.nextGaussian());
            }
        }
    }

    @Override
    public Tensor hidden(DifferentiableOps ops, Tensor tokens, int b, int t, LayerTap tap) {
        if (t > cfg.contextLength()) throw new IllegalArgumentException("sequence length " + t + " exceeds the model's context " + cfg.contextLength());
        Tensor table = rotaryTable(t);
        Tensor embedded = ops.tokenEmbedding(tokens, p("model.embed_tokens.weight"), b, t);
        Tensor x = Blocks.run(ops, embedded, cfg.layers(), (in, l) -> block(ops, in, l, table, b, t,
                (q, k, v) -> ops.attention(ops.packQkv(q, k, v, cfg.heads(), cfg.kvHeads()), b, t, cfg.heads(), ops.gemmOperandType())), tap);
        Tensor out = ops.rmsNorm(x, p("model.norm.weight"), cfg.rmsEps());
        if (tap != null) tap.observe(cfg.layers(), out);
        return out;
    }

    /** The attention of one block: its rotated q and k and its v in, the heads' output (rows, heads·hs) out. */
    private interface Attention {
        Tensor apply(Tensor q, Tensor k, Tensor v);
    }

    /** Block l on the residual stream x, positions rotated by the (t, hs/2, 2) rows of {@code cosSin}. */
    private Tensor block(DifferentiableOps ops, Tensor x, int l, Tensor cosSin, int b, int t, Attention attention) {
        String pre = prefix(l);
        float eps = cfg.rmsEps();
        // the block's two norms and its SwiGLU feed only projections (as its attention's output,
        // made in hidden(), does): stored as their GEMMs read them (bf16 under bf16)
        Tensor h = ops.rmsNorm(x, p(pre + "input_layernorm.weight"), eps, ops.gemmOperandType());
        Tensor q = ops.rope(ops.projection(h, p(pre + "self_attn.q_proj.weight"), bias(pre + "self_attn.q_proj.bias")), cosSin, b, t, cfg.heads());
        Tensor k = ops.rope(ops.projection(h, p(pre + "self_attn.k_proj.weight"), bias(pre + "self_attn.k_proj.bias")), cosSin, b, t, cfg.kvHeads());
        Tensor v = ops.projection(h, p(pre + "self_attn.v_proj.weight"), bias(pre + "self_attn.v_proj.bias"));
        Tensor mid = ops.add(x, ops.projection(attention.apply(q, k, v), p(pre + "self_attn.o_proj.weight"), null));
        Tensor h2 = ops.rmsNorm(mid, p(pre + "post_attention_layernorm.weight"), eps, ops.gemmOperandType());
        Tensor act = ops.swiGlu(ops.projection(h2, p(pre + "mlp.gate_proj.weight"), null), ops.projection(h2, p(pre + "mlp.up_proj.weight"), null),
                ops.gemmOperandType());
        return ops.add(mid, ops.projection(act, p(pre + "mlp.down_proj.weight"), null));
    }

    @Override
    public KvCache newCache(int batch, int maxLen) {
        if (maxLen < 1 || maxLen > cfg.contextLength()) throw new IllegalArgumentException("a cache of " + maxLen + " positions; the context is " + cfg.contextLength());
        return new KvCache(kernels, cfg.layers(), batch, maxLen, cfg.keyValue(), cfg.heads());
    }

    @Override
    public Tensor decode(DifferentiableOps ops, KvCache cache, Tensor tokens) {
        if (ops.tape().enabled()) throw new IllegalStateException("decode is forward only: turn the tape off");
        int pos = cache.next(), pairs = cfg.headSize() / 2, b = (int) tokens.numel(), qw = cfg.heads() * cfg.headSize(), kv = cfg.keyValue();
        Tensor cs = rotaryTable(cache.maxLen()).slice((long) pos * pairs * 2, 1, pairs, 2);   // position pos as row 0, for every sequence
        Tensor embedded = ops.tokenEmbedding(tokens, p("model.embed_tokens.weight"), b, 1);
        Tensor x = Blocks.run(ops, embedded, cfg.layers(), (in, l) -> block(ops, in, l, cs, b, 1,
                (q, k, v) -> cache.attend(ops, l, b, q, qw, 0, k, kv, 0, v, kv, 0, cfg.heads(), cfg.kvHeads(), cfg.headSize())));
        cache.advance();
        return ops.projection(ops.rmsNorm(x, p("model.norm.weight"), cfg.rmsEps()), lmHeadWeight(), null);
    }

    @Override
    public Tensor prefill(DifferentiableOps ops, KvCache cache, Tensor tokens, int t) {
        if (ops.tape().enabled()) throw new IllegalStateException("prefill is forward only: turn the tape off");
        if (cache.length() != 0) throw new IllegalStateException("prefill starts a cache at position 0; it holds " + cache.length());
        int pairs = cfg.headSize() / 2, kv = cfg.keyValue(), b = (int) (tokens.numel() / t);
        Tensor cs = rotaryTable(cache.maxLen()).slice(0, t, pairs, 2);   // positions 0..t-1, as decode reads them
        Tensor embedded = ops.tokenEmbedding(tokens, p("model.embed_tokens.weight"), b, t);
        Tensor x = Blocks.run(ops, embedded, cfg.layers(), (in, l) -> block(ops, in, l, cs, b, t, (q, k, v) -> {
            cache.append(ops.kernels(), l, b, k, kv, 0, v, kv, 0, t, cfg.kvHeads(), cfg.headSize());
            return ops.attention(ops.packQkv(q, k, v, cfg.heads(), cfg.kvHeads()), b, t, cfg.heads(), ops.gemmOperandType());
        }));
        cache.advance(t);
        return ops.projection(ops.rmsNorm(LanguageModel.lastRows(ops, x, b, t), p("model.norm.weight"), cfg.rmsEps()), lmHeadWeight(), null);
    }

    @Override
    public Tensor lmHeadWeight() {
        return p(cfg.tied() ? "model.embed_tokens.weight" : "lm_head.weight");
    }

    private Tensor p(String name) {
        return params.get(name);
    }

    private Tensor bias(String name) {
        return cfg.qkvBias() ? params.get(name) : null;
    }

    /**
     * cos and sin of p·f_j for positions p < t, (t, hs/2, 2) as the rope kernels read it, the
     * product rounded to float first as transformers computes it. Built for the longest window seen
     * so far, not for the whole context (128k positions of a Llama 3 would be 64 MB).
     */
    private Tensor rotaryTable(int t) {
        if (cosSin != null && cosSin.dim(0) >= t) return cosSin;
        int pairs = cfg.headSize() / 2;
        Arena arena = Arena.ofShared();
        MemorySegment device = kernels.allocate(arena, 8L * t * pairs);
        try (Arena host = Arena.ofConfined()) {
            MemorySegment table = host.allocate(8L * t * pairs, 64);
            for (int p = 0; p < t; p++) {
                for (int j = 0; j < pairs; j++) {
                    float angle = p * (float) invFreq[j];
                    table.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * (p * pairs + j), (float) Math.cos(angle));
                    table.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * (p * pairs + j) + 1, (float) Math.sin(angle));
                }
            }
            kernels.copyFromHost(device, table, 8L * t * pairs);
        }
        if (tableArena != null) tableArena.close();   // between passes: no recorded backward reads the old table
        tableArena = arena;
        cosSin = new Tensor("rope.cos_sin", new int[]{t, pairs, 2}, DType.F32, Device.of(kernels), device, false);
        return cosSin;
    }

    @Override
    public void close() {
        if (tableArena != null) tableArena.close();
        params.close();
    }
}
