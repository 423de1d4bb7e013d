package dev.distillery.runtime.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.IntUnaryOperator;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.ParameterStore;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.Llama;
import dev.distillery.runtime.nn.LlamaConfig;
import dev.distillery.runtime.optim.AdamW;

/**
 * A model on disk the way Hugging Face keeps it: {@code model.safetensors} with the family's
 * tensor names and layouts (metadata {@code format: pt}) and its {@code config.json}, so
 * {@code AutoModelForCausalLM.from_pretrained(dir)} opens it (GPT-2 here, the Llama family's
 * config in {@link LlamaFiles}). The optimizer's moments go to their own
 * safetensors file with the caller's metadata (step, data position, RNG). Every file is written
 * crash-safe (temp, fsync, rename) and read back with every name and shape checked.
 */
public final class ModelFiles {

    public static final String MODEL = "model.safetensors";
    public static final String CONFIG = "config.json";

    private static final ObjectMapper JSON = new ObjectMapper();

    private ModelFiles() {
    }

    /** Writes {@code dir/model.safetensors} and {@code dir/config.json}: the family's Hugging Face layout, fp32. */
    public static void write(Path dir, LanguageModel model) throws IOException {
        write(dir, model, DType.F32);
    }

    /**
     * As {@link #write(Path, LanguageModel)} with the weights in {@code weights}: F32 as they are,
     * or BF16 / F16 rounded to nearest even (an export for inference: half the bytes; training
     * keeps fp32 master weights). The config's dtype says which.
     */
    public static void write(Path dir, LanguageModel model, DType weights) throws IOException {
        if (!weights.isLogitType()) throw new IllegalArgumentException("weights are written as F32, BF16 or F16, not " + weights);
        Kernels kernels = model.parameters().kernels();
        try (Arena host = Arena.ofConfined()) {
            List<SafetensorsWriter.Item> items = new ArrayList<>();
            for (Tensor t : model.parameters().parameters()) {
                MemorySegment values = kernels.hostView(t.data(), t.byteSize(), host);
                if (weights != DType.F32) {
                    MemorySegment narrowed = host.allocate(t.numel() * weights.bytes(), 64);
                    for (long i = 0; i < t.numel(); i++) weights.write(narrowed, i, values.getAtIndex(ValueLayout.JAVA_FLOAT, i));
                    values = narrowed;
                }
                items.add(new SafetensorsWriter.Item(t.name(), weights, t.shape(), values));
            }
            SafetensorsWriter.write(dir.resolve(MODEL), items, Map.of("format", "pt"));
        }
        switch (model) {
            case Gpt2 g -> writeConfig(dir.resolve(CONFIG), g.config(), weights);
            case Llama l -> LlamaFiles.writeConfig(dir.resolve(CONFIG), l.config(), weights);
        }
    }

    /** transformers' name of a weight dtype in {@code config.json}: float32, bfloat16, float16. */
    static String torchName(DType weights) {
        return switch (weights) {
            case F32 -> "float32";
            case BF16 -> "bfloat16";
            case F16 -> "float16";
            default -> throw new IllegalArgumentException("no transformers weight dtype for " + weights);
        };
    }

    /** GPT-2's {@code config.json} for c (gelu_new is GPT-2's tanh GELU; the head is tied; no dropout), weights in {@code weights}. */
    public static void writeConfig(Path file, Gpt2Config c, DType weights) throws IOException {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("architectures", List.of("GPT2LMHeadModel"));
        m.put("model_type", "gpt2");
        m.put("vocab_size", c.vocabSize());
        m.put("n_positions", c.contextLength());
        m.put("n_ctx", c.contextLength());
        m.put("n_embd", c.channels());
        m.put("n_layer", c.layers());
        m.put("n_head", c.heads());
        m.put("n_inner", null);
        m.put("activation_function", "gelu_new");
        m.put("layer_norm_epsilon", 1e-5);
        m.put("initializer_range", 0.02);
        m.put("resid_pdrop", 0.0);
        m.put("embd_pdrop", 0.0);
        m.put("attn_pdrop", 0.0);
        m.put("tie_word_embeddings", true);
        m.put("bos_token_id", c.vocabSize() - 1);
        m.put("eos_token_id", c.vocabSize() - 1);
        m.put("torch_dtype", torchName(weights));
        writeJson(file, m);
    }

    /** A model folder's JSON file (a config), pretty-printed, written crash-safe. */
    static void writeJson(Path file, Map<String, Object> m) throws IOException {
        byte[] json = JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(m);
        AtomicFileWriter.write(file, ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(json)));
    }

    /** The architecture from a GPT-2 {@code config.json}; a missing or non-integer key is named. */
    public static Gpt2Config readConfig(Path file) throws IOException {
        JsonNode root = readJson(file);
        requireGpt2(file, root);
        try {
            return new Gpt2Config(intKey(file, root, "vocab_size", LanguageModel.MAX_VOCAB),
                    intKey(file, root, "n_positions", LanguageModel.MAX_CONTEXT), intKey(file, root, "n_layer", LanguageModel.MAX_LAYERS),
                    intKey(file, root, "n_embd", LanguageModel.MAX_CHANNELS), intKey(file, root, "n_head", LanguageModel.MAX_CHANNELS));
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
    }

    /**
     * The keys of a GPT-2 config that change the function, where present (a config written by
     * {@code transformers} has them all): anything but GPT-2 as this code computes it is refused by
     * its key, not loaded into a model that would compute something else.
     */
    private static void requireGpt2(Path file, JsonNode root) throws IOException {
        String type = root.path("model_type").asText("gpt2");
        if (!type.equals("gpt2")) {
            throw new IOException(file + ": 'model_type' is " + type + "; this build reads GPT-2 and the Llama family (" + LlamaFiles.types() + ")");
        }
        String activation = root.path("activation_function").asText("gelu_new");
        if (!activation.equals("gelu_new") && !activation.equals("gelu_pytorch_tanh")) {
            throw new IOException(file + ": 'activation_function' is " + activation + "; GPT-2 here is the tanh GELU (gelu_new)");
        }
        JsonNode inner = root.get("n_inner"), embd = root.get("n_embd");
        if (inner != null && !inner.isNull() && embd != null && inner.asLong() != 4 * embd.asLong()) {
            throw new IOException(file + ": 'n_inner' is " + inner + "; the MLP here is 4 × n_embd = " + 4 * embd.asLong() + " wide");
        }
        double eps = root.path("layer_norm_epsilon").asDouble(1e-5);
        if (Math.abs(eps - 1e-5) > 1e-12) throw new IOException(file + ": 'layer_norm_epsilon' is " + eps + "; the layernorm here uses 1e-5");
        if (!root.path("tie_word_embeddings").asBoolean(true)) {
            throw new IOException(file + ": 'tie_word_embeddings' is false; the LM head here is the token embedding (tied)");
        }
        for (String key : List.of("scale_attn_by_inverse_layer_idx", "add_cross_attention")) {
            if (root.path(key).asBoolean(false)) throw new IOException(file + ": '" + key + "' is true; GPT-2 here has neither");
        }
        if (!root.path("scale_attn_weights").asBoolean(true)) throw new IOException(file + ": 'scale_attn_weights' is false; attention here is scaled by 1/sqrt(head size)");
    }

    private static int intKey(Path file, JsonNode root, String key, int max) throws IOException {
        JsonNode n = root.get(key);
        if (n == null || !n.isIntegralNumber()) {
            throw new IOException(file + ": '" + key + "' must be an integer, got " + n);
        }
        if (!n.canConvertToInt() || n.intValue() < 1 || n.intValue() > max) {
            throw new IOException(file + ": '" + key + "' must be in [1, " + max + "], got " + n);
        }
        return n.intValue();
    }

    /** The context length {@code dir/config.json} gives, for either family, without reading the weights. */
    public static int contextLength(Path dir) throws IOException {
        return isLlama(dir) ? LlamaFiles.readConfig(dir.resolve(CONFIG)).contextLength() : readConfig(dir.resolve(CONFIG)).contextLength();
    }

    /** Whether {@code dir/config.json} names a Llama-family model_type. */
    public static boolean isLlama(Path dir) throws IOException {
        return LlamaConfig.Family.of(readJson(dir.resolve(CONFIG)).path("model_type").asText("")) != null;
    }

    /**
     * A new model from {@code dir} (config.json + model.safetensors, or shards with
     * model.safetensors.index.json), GPT-2 or Llama family by its model_type, in the memory of
     * {@code kernels}, with gradients; the caller closes it.
     */
    public static LanguageModel read(Path dir, Kernels kernels) throws IOException {
        return open(dir, null, kernels, true);
    }

    /** As {@link #read}, frozen: no gradient memory (a teacher's forward). */
    public static LanguageModel readTeacher(Path dir, Kernels kernels) throws IOException {
        return open(dir, null, kernels, false);
    }

    /**
     * A new model of {@code layers.length} blocks taken from the model in {@code dir} (block j is
     * its block {@code layers[j]}), with its embeddings, final norm and LM head: a shallower student
     * of the same width that starts from a teacher (DistilBERT's every-other-layer start).
     */
    public static LanguageModel readLayers(Path dir, int[] layers, Kernels kernels) throws IOException {
        if (layers.length == 0) throw new IllegalArgumentException("at least one layer must be taken from " + dir);
        return open(dir, layers, kernels, true);
    }

    private static LanguageModel open(Path dir, int[] layers, Kernels kernels, boolean trainable) throws IOException {
        Path file = dir.resolve(CONFIG);
        boolean llama = isLlama(dir);
        LlamaConfig lc = llama ? LlamaFiles.readConfig(file) : null;
        Gpt2Config gc = llama ? null : readConfig(file);
        int depth = llama ? lc.layers() : gc.layers();
        if (layers != null) {
            for (int l : layers) {
                if (l < 0 || l >= depth) {
                    throw new IllegalArgumentException("layer " + l + " is not one of the " + depth + " layers of " + dir + " (0 to " + (depth - 1) + ")");
                }
            }
            if (llama) lc = lc.withLayers(layers.length);
            else gc = new Gpt2Config(gc.vocabSize(), gc.contextLength(), layers.length, gc.channels(), gc.heads());
        }
        LanguageModel model = llama ? new Llama(lc, kernels, trainable) : new Gpt2(gc, kernels, trainable);
        try {
            readParameters(dir, model, layers == null ? l -> l : l -> layers[l]);
        } catch (IOException | RuntimeException e) {
            model.close();
            throw e;
        }
        return model;
    }

    /**
     * Copies every parameter of {@code model} (block j from the file's block {@code layerOf(j)})
     * from the weights in {@code dir}; names and shapes must match, and every weight must be finite
     * (a NaN would otherwise surface as a NaN perplexity, or a NaN loss some steps into a run, with
     * nothing naming the weight). Files saved by {@code transformers} load as they are: GPT-2's
     * names under {@code transformer.}, F16/BF16 weights widened to F32, an {@code lm_head.weight}
     * beside a tied head accepted when it equals the token embedding.
     */
    private static void readParameters(Path dir, LanguageModel model, IntUnaryOperator layerOf) throws IOException {
        String blocks = model instanceof Gpt2 ? "h." : "model.layers.";
        try (ModelWeights weights = ModelWeights.open(dir); Arena host = Arena.ofConfined()) {
            String prefix = model instanceof Gpt2 && !weights.contains("wte.weight") && weights.contains("transformer.wte.weight") ? "transformer." : "";
            for (Tensor t : model.parameters().parameters()) {
                String name = prefix + sourceName(t.name(), blocks, layerOf);
                if (!weights.contains(name)) throw new SafetensorsFormatException(Path.of(weights.describe(dir)), "missing tensor '" + name + "'");
                model.parameters().write(t, widened(weights.fileOf(name), name, t.shape(), host));
            }
            Tensor head = model.lmHeadWeight();
            if (!head.name().equals("lm_head.weight") && weights.contains("lm_head.weight")) {
                String embedding = prefix + head.name();
                MemorySegment file = widened(weights.fileOf("lm_head.weight"), "lm_head.weight", head.shape(), host);
                MemorySegment tied = widened(weights.fileOf(embedding), embedding, head.shape(), host);
                if (file.mismatch(tied) >= 0) {
                    throw new SafetensorsFormatException(weights.fileOf("lm_head.weight").path(), "'lm_head.weight' differs from '" + embedding
                            + "' though the config ties them; set 'tie_word_embeddings' to false for an untied head"
                            + (model instanceof Gpt2 ? " (GPT-2's head here is always the token embedding)" : ""));
                }
            }
        }
    }

    /** "{blocks}j.rest" read from "{blocks}layerOf(j).rest"; other names as they are. */
    private static String sourceName(String name, String blocks, IntUnaryOperator layerOf) {
        if (!name.startsWith(blocks)) return name;
        int dot = name.indexOf('.', blocks.length());
        return blocks + layerOf.applyAsInt(Integer.parseInt(name.substring(blocks.length(), dot))) + name.substring(dot);
    }

    /** A JSON file of a model folder (config.json, an index, a tokenizer's files); bad JSON is named with the file. */
    public static JsonNode readJson(Path file) throws IOException {
        try {
            return JSON.readTree(file.toFile());
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new IOException(file + ": not valid JSON: " + e.getOriginalMessage(), e);
        }
    }

    /** Tensor {@code name} as finite F32 of {@code shape}: F32 as mapped, F16/BF16 widened into {@code host}. */
    static MemorySegment widened(SafetensorsFile st, String name, int[] shape, Arena host) throws IOException {
        Path file = st.path();
        SafetensorsFile.Entry e = st.entry(name);
        boolean half = e.dtype() == DType.F16 || e.dtype() == DType.BF16;
        if ((e.dtype() != DType.F32 && !half) || !Arrays.equals(e.shape(), shape)) {
            throw new SafetensorsFormatException(file, "tensor '" + name + "' at buffer offset " + e.begin() + " is "
                    + e.dtype() + " " + Arrays.toString(e.shape()) + ", the model needs F32, F16 or BF16 " + Arrays.toString(shape));
        }
        MemorySegment bytes = st.bytes(name);
        long n = bytes.byteSize() / e.dtype().bytes();
        MemorySegment out = half ? host.allocate(4 * n, 64) : bytes;
        for (long i = 0; i < n; i++) {
            float x = half ? e.dtype().read(bytes, i) : bytes.get(ValueLayout.JAVA_FLOAT_UNALIGNED, 4 * i);
            if (!Float.isFinite(x)) {
                throw new SafetensorsFormatException(file, "tensor '" + name + "' element " + i + " is " + x + "; a checkpoint's weights must be finite");
            }
            if (half) out.setAtIndex(ValueLayout.JAVA_FLOAT, i, x);
        }
        return out;
    }

    /** Writes AdamW's moments ({@code adam.m}, {@code adam.v}) and its step with {@code metadata}. */
    public static void writeOptimizer(Path file, AdamW optimizer, long elements, Map<String, String> metadata) throws IOException {
        writeOptimizer(file, optimizer, elements, null, metadata);
    }

    /**
     * As above, plus, when {@code extra} is not null, the parameters it updates under their own
     * names and its moments as {@code <first parameter's prefix>adam.m/v} (feature projections:
     * trained with the model, kept out of its weights).
     */
    public static void writeOptimizer(Path file, AdamW optimizer, long elements, AdamW extra, Map<String, String> metadata) throws IOException {
        Map<String, String> meta = new LinkedHashMap<>(metadata);
        meta.put("adam.step", Integer.toString(optimizer.step()));
        int n = Math.toIntExact(elements);
        Kernels kernels = optimizer.kernels();
        try (Arena host = Arena.ofConfined()) {
            List<SafetensorsWriter.Item> items = new ArrayList<>(List.of(
                    new SafetensorsWriter.Item("adam.m", DType.F32, new int[]{n}, kernels.hostView(optimizer.firstMoments(), 4 * elements, host)),
                    new SafetensorsWriter.Item("adam.v", DType.F32, new int[]{n}, kernels.hostView(optimizer.secondMoments(), 4 * elements, host))));
            if (extra != null) {
                ParameterStore store = extra.store();
                for (Tensor t : store.parameters()) {
                    items.add(new SafetensorsWriter.Item(t.name(), DType.F32, t.shape(), kernels.hostView(t.data(), t.byteSize(), host)));
                }
                int m = Math.toIntExact(store.blockElements());
                String prefix = extraPrefix(store);
                items.add(new SafetensorsWriter.Item(prefix + "adam.m", DType.F32, new int[]{m}, kernels.hostView(extra.firstMoments(), 4L * m, host)));
                items.add(new SafetensorsWriter.Item(prefix + "adam.v", DType.F32, new int[]{m}, kernels.hostView(extra.secondMoments(), 4L * m, host)));
            }
            SafetensorsWriter.write(file, items, meta);
        }
    }

    /** "feature_projections." for "feature_projections.0.weight": where an extra store's moments are named. */
    private static String extraPrefix(ParameterStore store) {
        String first = store.parameters().getFirst().name();
        return first.substring(0, first.indexOf('.') + 1);
    }

    /** Restores AdamW's moments and step from {@code file}; returns the file's metadata. */
    public static Map<String, String> readOptimizer(Path file, AdamW optimizer, long elements) throws IOException {
        return readOptimizer(file, optimizer, elements, null);
    }

    /** As above, and {@code extra}'s parameters and moments where {@link #writeOptimizer} put them. */
    public static Map<String, String> readOptimizer(Path file, AdamW optimizer, long elements, AdamW extra) throws IOException {
        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            requireF32(st, "adam.m", new int[]{Math.toIntExact(elements)});
            requireF32(st, "adam.v", new int[]{Math.toIntExact(elements)});
            optimizer.kernels().copyFromHost(optimizer.firstMoments(), st.bytes("adam.m"), 4 * elements);
            optimizer.kernels().copyFromHost(optimizer.secondMoments(), st.bytes("adam.v"), 4 * elements);
            if (extra != null) {
                ParameterStore store = extra.store();
                for (Tensor t : store.parameters()) {
                    requireF32(st, t.name(), t.shape());
                    store.write(t, st.bytes(t.name()));
                }
                int m = Math.toIntExact(store.blockElements());
                String prefix = extraPrefix(store);
                requireF32(st, prefix + "adam.m", new int[]{m});
                requireF32(st, prefix + "adam.v", new int[]{m});
                extra.kernels().copyFromHost(extra.firstMoments(), st.bytes(prefix + "adam.m"), 4L * m);
                extra.kernels().copyFromHost(extra.secondMoments(), st.bytes(prefix + "adam.v"), 4L * m);
            }
            String step = st.metadata().get("adam.step");
            try {
                optimizer.setStep(Integer.parseInt(step));
                if (extra != null) extra.setStep(optimizer.step());
            } catch (NumberFormatException e) {
                throw new SafetensorsFormatException(file, "metadata 'adam.step' must be an integer, got " + step);
            }
            return st.metadata();
        }
    }

    private static void requireF32(SafetensorsFile st, String name, int[] shape) throws SafetensorsFormatException {
        if (!st.contains(name)) throw new SafetensorsFormatException(st.path(), "missing tensor '" + name + "'");
        SafetensorsFile.Entry e = st.entry(name);
        if (e.dtype() != DType.F32 || !Arrays.equals(e.shape(), shape)) {
            throw new SafetensorsFormatException(st.path(), "tensor '" + name + "' is " + e.dtype() + " " + Arrays.toString(e.shape())
                    + ", the run needs F32 " + Arrays.toString(shape));
        }
    }
}
