package dev.distillery.runtime.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;

import com.fasterxml.jackson.databind.JsonNode;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.nn.LlamaConfig;
import dev.distillery.runtime.nn.LlamaForward;

/**
 * A Llama-family model folder as {@code transformers} saves it ({@code LlamaForCausalLM},
 * {@code Qwen2ForCausalLM}): config.json, and model.safetensors or shards with an index; F32, F16
 * or BF16 weights, widened to F32 on load. What this code does not compute (another activation,
 * a rope scaling other than Llama 3's, biases beyond Qwen2's q/k/v, sliding windows) is refused
 * by its key.
 */
public final class LlamaFiles {

    /** The model_type values read here. */
    public static final Set<String> TYPES = Set.of("llama", "qwen2", "mistral");

    private LlamaFiles() {
    }

    /** Whether {@code dir/config.json} names a Llama-family model_type. */
    public static boolean isLlama(Path dir) throws IOException {
        JsonNode root = ModelFiles.readJson(dir.resolve(ModelFiles.CONFIG));
        return TYPES.contains(root.path("model_type").asText(""));
    }

    public static LlamaConfig readConfig(Path file) throws IOException {
        JsonNode c = ModelFiles.readJson(file);
        String type = c.path("model_type").asText("");
        if (!TYPES.contains(type)) throw new IOException(file + ": 'model_type' is " + type + ", not one of " + TYPES);
        if (!c.path("hidden_act").asText("silu").equals("silu")) {
            throw new IOException(file + ": 'hidden_act' is " + c.path("hidden_act").asText() + "; the Llama MLP here is SwiGLU (silu)");
        }
        if (c.path("mlp_bias").asBoolean(false)) throw new IOException(file + ": 'mlp_bias' is true; the MLP here has no biases");
        if (type.equals("llama") && c.path("attention_bias").asBoolean(false)) {
            throw new IOException(file + ": 'attention_bias' is true; only Qwen2's q/k/v biases are read");
        }
        JsonNode window = c.get("sliding_window");
        if (type.equals("mistral") && window != null && !window.isNull()) {
            throw new IOException(file + ": 'sliding_window' is " + window + "; sliding-window attention is not computed here");
        }
        int hidden = intKey(file, c, "hidden_size"), heads = intKey(file, c, "num_attention_heads");
        int kvHeads = c.has("num_key_value_heads") && !c.get("num_key_value_heads").isNull() ? intKey(file, c, "num_key_value_heads") : heads;
        int headSize = c.has("head_dim") && !c.get("head_dim").isNull() ? intKey(file, c, "head_dim") : hidden / heads;
        // transformers 5 keeps rope_theta and the scaling in rope_parameters; older configs at the top level
        JsonNode rope = c.path("rope_parameters").isObject() ? c.path("rope_parameters") : c.path("rope_scaling");
        double theta = c.path("rope_parameters").isObject() ? rope.path("rope_theta").asDouble(10000) : c.path("rope_theta").asDouble(10000);
        String ropeType = rope.isObject() ? rope.path("rope_type").asText(rope.path("type").asText("default")) : "default";
        double[] invFreq = new double[headSize / 2];
        for (int j = 0; j < invFreq.length; j++) invFreq[j] = (float) (1.0 / Math.pow(theta, 2.0 * j / headSize));   // float, as transformers keeps it
        switch (ropeType) {
            case "default" -> {
            }
            case "llama3" -> llama3(invFreq, rope.path("factor").asDouble(), rope.path("low_freq_factor").asDouble(),
                    rope.path("high_freq_factor").asDouble(), rope.path("original_max_position_embeddings").asDouble());
            default -> throw new IOException(file + ": rope type '" + ropeType + "' is not computed here (default and llama3 are)");
        }
        try {
            return new LlamaConfig(intKey(file, c, "vocab_size"), intKey(file, c, "max_position_embeddings"), intKey(file, c, "num_hidden_layers"),
                    hidden, heads, kvHeads, headSize, intKey(file, c, "intermediate_size"), (float) c.path("rms_norm_eps").asDouble(1e-6),
                    invFreq, type.equals("qwen2"), c.path("tie_word_embeddings").asBoolean(false));
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
    }

    /** Llama 3's rescaling of the rotary frequencies (transformers' _compute_llama3_parameters), in float as there. */
    private static void llama3(double[] invFreq, double factor, double low, double high, double original) {
        double lowWavelen = original / low, highWavelen = original / high;
        for (int j = 0; j < invFreq.length; j++) {
            double f = invFreq[j], wavelen = 2 * Math.PI / f;
            double scaled = wavelen > lowWavelen ? f / factor : f;
            if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
                double smooth = (original / wavelen - low) / (high - low);
                scaled = (1 - smooth) * scaled / factor + smooth * scaled;
            }
            invFreq[j] = (float) scaled;
        }
    }

    private static int intKey(Path file, JsonNode root, String key) throws IOException {
        JsonNode n = root.get(key);
        if (n == null || !n.isIntegralNumber() || !n.canConvertToInt() || n.intValue() < 1) {
            throw new IOException(file + ": '" + key + "' must be a positive integer, got " + n);
        }
        return n.intValue();
    }

    /** The model in {@code dir}, forward only, for windows of (b, t), in the memory of {@code kernels}; the caller closes it. */
    public static LlamaForward read(Path dir, Kernels kernels, int b, int t) throws IOException {
        LlamaConfig cfg = readConfig(dir.resolve(ModelFiles.CONFIG));
        Arena arena = Arena.ofShared();
        try (ModelWeights w = ModelWeights.open(dir)) {
            int hidden = cfg.hidden(), a = cfg.attention(), kv = cfg.kvHeads() * cfg.headSize(), inter = cfg.intermediate();
            Loader l = new Loader(dir, w, kernels, arena);
            List<LlamaForward.Block> blocks = new ArrayList<>();
            for (int i = 0; i < cfg.layers(); i++) {
                String p = "model.layers." + i + ".";
                blocks.add(new LlamaForward.Block(l.get(p + "input_layernorm.weight", hidden),
                        l.get(p + "self_attn.q_proj.weight", a, hidden), l.get(p + "self_attn.k_proj.weight", kv, hidden),
                        l.get(p + "self_attn.v_proj.weight", kv, hidden),
                        cfg.qkvBias() ? l.get(p + "self_attn.q_proj.bias", a) : null, cfg.qkvBias() ? l.get(p + "self_attn.k_proj.bias", kv) : null,
                        cfg.qkvBias() ? l.get(p + "self_attn.v_proj.bias", kv) : null,
                        l.get(p + "self_attn.o_proj.weight", hidden, a), l.get(p + "post_attention_layernorm.weight", hidden),
                        l.get(p + "mlp.gate_proj.weight", inter, hidden), l.get(p + "mlp.up_proj.weight", inter, hidden),
                        l.get(p + "mlp.down_proj.weight", hidden, inter)));
            }
            MemorySegment embed = l.get("model.embed_tokens.weight", cfg.vocabSize(), hidden);
            MemorySegment head = cfg.tied() ? embed : l.get("lm_head.weight", cfg.vocabSize(), hidden);
            return new LlamaForward(cfg, kernels, arena, embed, blocks, l.get("model.norm.weight", hidden), head, b, t);
        } catch (IOException | RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** Tensors by name, checked for shape and finiteness, widened to F32 and copied into the backend's memory. */
    private record Loader(Path dir, ModelWeights weights, Kernels kernels, Arena arena) {
        MemorySegment get(String name, int... shape) throws IOException {
            SafetensorsFile st = weights.fileOf(name);
            if (st == null) throw new IOException(weights.describe(dir) + ": missing tensor '" + name + "'");
            long bytes = 4L * Arrays.stream(shape).asLongStream().reduce(1, (x, y) -> x * y);
            MemorySegment device = kernels.allocate(arena, bytes);
            try (Arena tensor = Arena.ofConfined()) {   // one tensor's F32 copy at a time on the host
                kernels.copyFromHost(device, ModelFiles.widened(st, name, shape, tensor), bytes);
            }
            return device;
        }
    }
}
