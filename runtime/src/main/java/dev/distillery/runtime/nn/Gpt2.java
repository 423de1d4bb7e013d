package dev.distillery.runtime.nn;

import java.util.function.UnaryOperator;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.ParameterStore;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;

/**
 * The GPT-2 student: learned token and position embeddings, pre-LN blocks (causal self-attention,
 * then a 4× GELU MLP, each inside a residual), a final layernorm and an LM head tied to the token
 * embedding. Parameter names and layouts are Hugging Face GPT-2's ({@code h.0.attn.c_attn.weight}
 * is (c, 3c), Conv1D style), so a checkpoint opens in {@code transformers} as it is.
 */
public final class Gpt2 implements LanguageModel {

    private final Gpt2Config config;
    private final ParameterStore params;

    /** The model's parameters, zero-filled, in the memory of {@code kernels} (call {@link #initialize} or load them). */
    public Gpt2(Gpt2Config config, Kernels kernels) {
        this(config, kernels, true);
    }

    /** @param trainable false for a teacher: no gradient memory, nothing recorded for a backward */
    public Gpt2(Gpt2Config config, Kernels kernels, boolean trainable) {
        this.config = config;
        int c = config.channels(), v = config.vocabSize();
        ParameterStore.Builder b = ParameterStore.builder()
                .add("wte.weight", v, c)
                .add("wpe.weight", config.contextLength(), c);
        for (int l = 0; l < config.layers(); l++) {
            String p = "h." + l + ".";
            b.add(p + "ln_1.weight", c).add(p + "ln_1.bias", c)
                    .add(p + "attn.c_attn.weight", c, 3 * c).add(p + "attn.c_attn.bias", 3 * c)
                    .add(p + "attn.c_proj.weight", c, c).add(p + "attn.c_proj.bias", c)
                    .add(p + "ln_2.weight", c).add(p + "ln_2.bias", c)
                    .add(p + "mlp.c_fc.weight", c, 4 * c).add(p + "mlp.c_fc.bias", 4 * c)
                    .add(p + "mlp.c_proj.weight", 4 * c, c).add(p + "mlp.c_proj.bias", c);
        }
        b.add("ln_f.weight", c).add("ln_f.bias", c);
        this.params = trainable ? b.build(kernels) : b.buildFrozen(kernels);
    }

    public Gpt2Config config() {
        return config;
    }

    @Override
    public int vocabSize() {
        return config.vocabSize();
    }

    @Override
    public int contextLength() {
        return config.contextLength();
    }

    @Override
    public int width() {
        return config.channels();
    }

    @Override
    public int layers() {
        return config.layers();
    }

    @Override
    public int heads() {
        return config.heads();
    }

    @Override
    public String describe() {
        return String.format("GPT-2, %d layers of %d channels, %d heads, vocab %d, context %d: %,d parameters", config.layers(),
                config.channels(), config.heads(), config.vocabSize(), config.contextLength(), params.parameterCount());
    }

    @Override
    public ParameterStore parameters() {
        return params;
    }

    /**
     * GPT-2's initialisation: weights N(0, 0.02), the residual projections (attn.c_proj, mlp.c_proj)
     * N(0, 0.02/√(2·layers)), biases 0, layernorm weights 1. Draws in declaration order from one
     * seeded {@link Rng}, so a seed fixes the model bit for bit.
     */
    @Override
    public void initialize(long seed) {
        Rng rng = new Rng(seed);
        double residualStd = 0.02 / Math.sqrt(2.0 * config.layers());
        for (Tensor t : params.parameters()) {
            String name = t.name();
            if (name.contains("ln_") && name.endsWith(".weight")) {
                params.fill(t, () -> 1);
            } else if (name.endsWith(".bias")) {
                params.fill(t, () -> 0);
            } else {
                double std = name.endsWith("c_proj.weight") ? residualStd : 0.02;
                params.fill(t, () -> std * rng.nextGaussian());
            }
        }
    }

    @Override
    public Tensor hidden(DifferentiableOps ops, Tensor tokens, int b, int t, LayerTap tap) {
        Tensor embedded = ops.embedding(tokens, p("wte.weight"), p("wpe.weight"), b, t);
        // attention's output feeds only the block's projection: stored as its GEMMs read it (bf16 under bf16)
        Tensor x = Blocks.run(ops, embedded, config.layers(), (in, l) -> block(ops, in, l,
                qkv -> ops.attention(qkv, b, t, config.heads(), ops.gemmOperandType())), tap);
        Tensor out = ops.layerNorm(x, p("ln_f.weight"), p("ln_f.bias"));
        if (tap != null) tap.observe(config.layers(), out);
        return out;
    }

    /** Block l on the residual stream x; {@code attention} maps the block's qkv (rows, 3c) to its heads' output (rows, c). */
    private Tensor block(DifferentiableOps ops, Tensor x, int l, UnaryOperator<Tensor> attention) {
        String pre = "h." + l + ".";
        // the block's two norms feed only linears: stored as their GEMMs read them (bf16 under bf16)
        Tensor h = ops.layerNorm(x, p(pre + "ln_1.weight"), p(pre + "ln_1.bias"), ops.gemmOperandType());
        Tensor a = attention.apply(ops.linear(h, p(pre + "attn.c_attn.weight"), p(pre + "attn.c_attn.bias")));
        Tensor mid = ops.add(x, ops.linear(a, p(pre + "attn.c_proj.weight"), p(pre + "attn.c_proj.bias")));
        h = ops.layerNorm(mid, p(pre + "ln_2.weight"), p(pre + "ln_2.bias"), ops.gemmOperandType());
        h = ops.linear(h, p(pre + "mlp.c_fc.weight"), p(pre + "mlp.c_fc.bias"));
        return ops.add(mid, ops.geluLinear(h, p(pre + "mlp.c_proj.weight"), p(pre + "mlp.c_proj.bias")));
    }

    @Override
    public KvCache newCache(int batch, int maxLen) {
        if (maxLen < 1 || maxLen > config.contextLength()) throw new IllegalArgumentException("a cache of " + maxLen + " positions; the context is " + config.contextLength());
        return new KvCache(params.kernels(), config.layers(), batch, maxLen, config.channels(), config.heads());
    }

    @Override
    public Tensor decode(DifferentiableOps ops, KvCache cache, Tensor tokens) {
        if (ops.tape().enabled()) throw new IllegalStateException("decode is forward only: turn the tape off");
        int c = config.channels(), nh = config.heads(), pos = cache.next(), b = (int) tokens.numel();
        // every sequence's token at position pos: the position table's row pos serves them all
        Tensor embedded = ops.embedding(tokens, p("wte.weight"), p("wpe.weight").slice((long) pos * c, 1, c), b, 1);
        Tensor x = Blocks.run(ops, embedded, config.layers(), (in, l) -> block(ops, in, l,
                qkv -> cache.attend(ops, l, b, qkv, 3 * c, 0, qkv, 3 * c, c, qkv, 3 * c, 2 * c, nh, nh, config.headSize())));
        cache.advance();
        return ops.projection(ops.layerNorm(x, p("ln_f.weight"), p("ln_f.bias")), p("wte.weight"), null);
    }

    @Override
    public Tensor prefill(DifferentiableOps ops, KvCache cache, Tensor tokens, int t) {
        if (ops.tape().enabled()) throw new IllegalStateException("prefill is forward only: turn the tape off");
        if (cache.length() != 0) throw new IllegalStateException("prefill starts a cache at position 0; it holds " + cache.length());
        int c = config.channels(), nh = config.heads(), b = (int) (tokens.numel() / t);
        Tensor embedded = ops.embedding(tokens, p("wte.weight"), p("wpe.weight"), b, t);
        Tensor x = Blocks.run(ops, embedded, config.layers(), (in, l) -> block(ops, in, l, qkv -> {
            cache.append(ops.kernels(), l, b, qkv, 3 * c, c, qkv, 3 * c, 2 * c, t, nh, config.headSize());
            return ops.attention(qkv, b, t, nh, ops.gemmOperandType());
        }));
        cache.advance(t);
        return ops.projection(ops.layerNorm(LanguageModel.lastRows(ops, x, b, t), p("ln_f.weight"), p("ln_f.bias")), p("wte.weight"), null);
    }

    /** The LM head's weight (vocab, channels): the token embedding, tied. */
    @Override
    public Tensor lmHeadWeight() {
        return p("wte.weight");
    }

    private Tensor p(String name) {
        return params.get(name);
    }

    @Override
    public void close() {
        params.close();
    }
}
