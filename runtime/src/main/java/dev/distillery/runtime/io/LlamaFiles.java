package dev.distillery.runtime.io;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

import dev.distillery.kernels.DType;
import dev.distillery.runtime.nn.LlamaConfig;

/**
 * A Llama-family {@code config.json} as {@code transformers} writes it ({@code LlamaForCausalLM},
 * {@code Qwen2ForCausalLM}, {@code MistralForCausalLM}). What this code does not compute (another
 * activation, a rope scaling other than Llama 3's, biases beyond Qwen2's q/k/v, sliding windows)
 * is refused by its key. The weights are read and written by {@link ModelFiles} under the
 * parameters' own names.
 */
public final class LlamaFiles {

    private LlamaFiles() {
    }

    /** The model_type values read here. */
    public static List<String> types() {
        return Arrays.stream(LlamaConfig.Family.values()).map(f -> f.modelType).toList();
    }

    public static LlamaConfig readConfig(Path file) throws IOException {
        JsonNode c = ModelFiles.readJson(file);
        LlamaConfig.Family family = LlamaConfig.Family.of(c.path("model_type").asText(""));
        if (family == null) throw new IOException(file + ": 'model_type' is " + c.path("model_type").asText() + ", not one of " + types());
        if (!c.path("hidden_act").asText("silu").equals("silu")) {
            throw new IOException(file + ": 'hidden_act' is " + c.path("hidden_act").asText() + "; the Llama MLP here is SwiGLU (silu)");
        }
        if (c.path("mlp_bias").asBoolean(false)) throw new IOException(file + ": 'mlp_bias' is true; the MLP here has no biases");
        if (family != LlamaConfig.Family.QWEN2 && c.path("attention_bias").asBoolean(false)) {
            throw new IOException(file + ": 'attention_bias' is true; only Qwen2's q/k/v biases are read");
        }
        JsonNode window = c.get("sliding_window");
        boolean qwenWindow = family == LlamaConfig.Family.QWEN2 && c.path("use_sliding_window").asBoolean(false);
        if ((family == LlamaConfig.Family.MISTRAL || qwenWindow) && window != null && !window.isNull()) {
            throw new IOException(file + ": 'sliding_window' is " + window + "; sliding-window attention is not computed here");
        }
        int hidden = intKey(file, c, "hidden_size"), heads = intKey(file, c, "num_attention_heads");
        int kvHeads = present(c, "num_key_value_heads") ? intKey(file, c, "num_key_value_heads") : heads;
        int headSize = present(c, "head_dim") ? intKey(file, c, "head_dim") : hidden / heads;
        try {
            return new LlamaConfig(family, intKey(file, c, "vocab_size"), intKey(file, c, "max_position_embeddings"),
                    intKey(file, c, "num_hidden_layers"), hidden, heads, kvHeads, headSize, intKey(file, c, "intermediate_size"),
                    (float) c.path("rms_norm_eps").asDouble(1e-6), rope(file, c), c.path("tie_word_embeddings").asBoolean(false));
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
    }

    /** transformers 5 keeps rope_theta and the scaling in rope_parameters; older configs at the top level. */
    private static LlamaConfig.Rope rope(Path file, JsonNode c) throws IOException {
        boolean v5 = c.path("rope_parameters").isObject();
        JsonNode rope = v5 ? c.path("rope_parameters") : c.path("rope_scaling");
        double theta = v5 ? rope.path("rope_theta").asDouble(10000) : c.path("rope_theta").asDouble(10000);
        String type = rope.isObject() ? rope.path("rope_type").asText(rope.path("type").asText("default")) : "default";
        return switch (type) {
            case "default" -> LlamaConfig.Rope.plain(theta);
            case "llama3" -> new LlamaConfig.Rope(theta, new LlamaConfig.Rope.Llama3Scaling(number(file, rope, "factor"),
                    number(file, rope, "low_freq_factor"), number(file, rope, "high_freq_factor"), number(file, rope, "original_max_position_embeddings")));
            default -> throw new IOException(file + ": rope type '" + type + "' is not computed here (default and llama3 are)");
        };
    }

    private static boolean present(JsonNode c, String key) {
        return c.has(key) && !c.get(key).isNull();
    }

    private static double number(Path file, JsonNode rope, String key) throws IOException {
        JsonNode n = rope.get(key);
        if (n == null || !n.isNumber() || !(n.asDouble() > 0)) throw new IOException(file + ": llama3 rope '" + key + "' must be a positive number, got " + n);
        return n.asDouble();
    }

    private static int intKey(Path file, JsonNode root, String key) throws IOException {
        JsonNode n = root.get(key);
        if (n == null || !n.isIntegralNumber() || !n.canConvertToInt() || n.intValue() < 1) {
            throw new IOException(file + ": '" + key + "' must be a positive integer, got " + n);
        }
        return n.intValue();
    }

    /** The {@code config.json} of c, in transformers 5's form (rope_parameters), no dropout, weights in {@code weights}. */
    public static void writeConfig(Path file, LlamaConfig c, DType weights) throws IOException {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("architectures", List.of(c.family().architecture));
        m.put("model_type", c.family().modelType);
        m.put("vocab_size", c.vocabSize());
        m.put("hidden_size", c.hidden());
        m.put("intermediate_size", c.intermediate());
        m.put("num_hidden_layers", c.layers());
        m.put("num_attention_heads", c.heads());
        m.put("num_key_value_heads", c.kvHeads());
        m.put("head_dim", c.headSize());
        m.put("max_position_embeddings", c.contextLength());
        m.put("rms_norm_eps", (double) c.rmsEps());
        m.put("hidden_act", "silu");
        Map<String, Object> rope = new LinkedHashMap<>();
        rope.put("rope_type", c.rope().llama3() == null ? "default" : "llama3");
        rope.put("rope_theta", c.rope().theta());
        if (c.rope().llama3() != null) {
            rope.put("factor", c.rope().llama3().factor());
            rope.put("low_freq_factor", c.rope().llama3().lowFreqFactor());
            rope.put("high_freq_factor", c.rope().llama3().highFreqFactor());
            rope.put("original_max_position_embeddings", (int) c.rope().llama3().originalContext());
        }
        m.put("rope_parameters", rope);
        if (c.family() != LlamaConfig.Family.QWEN2) m.put("attention_bias", false);
        if (c.family() == LlamaConfig.Family.QWEN2) m.put("use_sliding_window", false);
        if (c.family() != LlamaConfig.Family.LLAMA) m.put("sliding_window", null);
        m.put("mlp_bias", false);
        m.put("attention_dropout", 0.0);
        m.put("initializer_range", 0.02);
        m.put("tie_word_embeddings", c.tied());
        m.put("use_cache", true);
        m.put("dtype", ModelFiles.torchName(weights));
        ModelFiles.writeJson(file, m);
    }
}
