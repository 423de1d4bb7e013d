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

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.nn.Transformer;
import dev.distillery.runtime.nn.TransformerConfig;
import dev.distillery.runtime.optim.AdamW;

/**
 * A model on disk the way Hugging Face keeps GPT-2: {@code model.safetensors} with GPT-2's
 * tensor names and layouts (metadata {@code format: pt}) and a GPT-2 {@code config.json}, so
 * {@code GPT2LMHeadModel.from_pretrained(dir)} opens it. The optimizer's moments go to their own
 * safetensors file with the caller's metadata (step, data position, RNG). Every file is written
 * crash-safe (temp, fsync, rename) and read back with every name and shape checked.
 */
public final class ModelFiles {

    public static final String MODEL = "model.safetensors";
    public static final String CONFIG = "config.json";

    private static final ObjectMapper JSON = new ObjectMapper();

    private ModelFiles() {
    }

    /** Writes {@code dir/model.safetensors} and {@code dir/config.json}. */
    public static void write(Path dir, Transformer model) throws IOException {
        Kernels kernels = model.parameters().kernels();
        try (Arena host = Arena.ofConfined()) {
            List<SafetensorsWriter.Item> items = new ArrayList<>();
            for (Tensor t : model.parameters().parameters()) {
                items.add(new SafetensorsWriter.Item(t.name(), DType.F32, t.shape(), kernels.hostView(t.data(), t.byteSize(), host)));
            }
            SafetensorsWriter.write(dir.resolve(MODEL), items, Map.of("format", "pt"));
        }
        writeConfig(dir.resolve(CONFIG), model.config());
    }

    /** GPT-2's {@code config.json} for c (gelu_new is GPT-2's tanh GELU; the head is tied; no dropout). */
    public static void writeConfig(Path file, TransformerConfig c) throws IOException {
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
        m.put("torch_dtype", "float32");
        byte[] json = JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(m);
        AtomicFileWriter.write(file, ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(json)));
    }

    /** The architecture from a GPT-2 {@code config.json}; a missing or non-integer key is named. */
    public static TransformerConfig readConfig(Path file) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new IOException(file + ": not valid JSON: " + e.getOriginalMessage(), e);
        }
        try {
            return new TransformerConfig(intKey(file, root, "vocab_size", TransformerConfig.MAX_VOCAB),
                    intKey(file, root, "n_positions", TransformerConfig.MAX_CONTEXT), intKey(file, root, "n_layer", TransformerConfig.MAX_LAYERS),
                    intKey(file, root, "n_embd", TransformerConfig.MAX_CHANNELS), intKey(file, root, "n_head", TransformerConfig.MAX_CHANNELS));
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
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

    /** A new model from {@code dir} (config.json + model.safetensors) in the memory of {@code kernels}; the caller closes it. */
    public static Transformer read(Path dir, Kernels kernels) throws IOException {
        TransformerConfig config = readConfig(dir.resolve(CONFIG));
        Transformer model = new Transformer(config, kernels);
        try {
            readParameters(dir.resolve(MODEL), model);
        } catch (IOException | RuntimeException e) {
            model.close();
            throw e;
        }
        return model;
    }

    /**
     * Copies every parameter of {@code model} from {@code file}; names, dtypes and shapes must
     * match exactly, and every weight must be finite (a NaN would otherwise surface as a NaN
     * perplexity, or a NaN loss some steps into a run, with nothing naming the weight).
     */
    public static void readParameters(Path file, Transformer model) throws IOException {
        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            for (Tensor t : model.parameters().parameters()) {
                if (!st.contains(t.name())) throw new SafetensorsFormatException(file, "missing tensor '" + t.name() + "'");
                SafetensorsFile.Entry e = st.entry(t.name());
                if (e.dtype() != DType.F32 || !Arrays.equals(e.shape(), t.shape())) {
                    throw new SafetensorsFormatException(file, "tensor '" + t.name() + "' at buffer offset " + e.begin() + " is "
                            + e.dtype() + " " + Arrays.toString(e.shape()) + ", the model needs F32 " + Arrays.toString(t.shape()));
                }
                MemorySegment bytes = st.bytes(t.name());
                long n = bytes.byteSize() / 4;
                for (long i = 0; i < n; i++) {
                    float x = bytes.get(ValueLayout.JAVA_FLOAT_UNALIGNED, 4 * i);
                    if (!Float.isFinite(x)) {
                        throw new SafetensorsFormatException(file, "tensor '" + t.name() + "' element " + i + " is " + x
                                + "; a checkpoint's weights must be finite");
                    }
                }
                model.parameters().write(t, bytes);
            }
        }
    }

    /** Writes AdamW's moments ({@code adam.m}, {@code adam.v}) and its step with {@code metadata}. */
    public static void writeOptimizer(Path file, AdamW optimizer, long elements, Map<String, String> metadata) throws IOException {
        Map<String, String> meta = new LinkedHashMap<>(metadata);
        meta.put("adam.step", Integer.toString(optimizer.step()));
        int n = Math.toIntExact(elements);
        Kernels kernels = optimizer.kernels();
        try (Arena host = Arena.ofConfined()) {
            SafetensorsWriter.write(file, List.of(
                    new SafetensorsWriter.Item("adam.m", DType.F32, new int[]{n}, kernels.hostView(optimizer.firstMoments(), 4 * elements, host)),
                    new SafetensorsWriter.Item("adam.v", DType.F32, new int[]{n}, kernels.hostView(optimizer.secondMoments(), 4 * elements, host))),
                    meta);
        }
    }

    /** Restores AdamW's moments and step from {@code file}; returns the file's metadata. */
    public static Map<String, String> readOptimizer(Path file, AdamW optimizer, long elements) throws IOException {
        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            for (String name : List.of("adam.m", "adam.v")) {
                if (!st.contains(name)) throw new SafetensorsFormatException(file, "missing tensor '" + name + "'");
                SafetensorsFile.Entry e = st.entry(name);
                if (e.dtype() != DType.F32 || e.shape().length != 1 || e.shape()[0] != elements) {
                    throw new SafetensorsFormatException(file, "tensor '" + name + "' is " + e.dtype() + " " + Arrays.toString(e.shape())
                            + ", the model's optimizer needs F32 [" + elements + "]");
                }
            }
            optimizer.kernels().copyFromHost(optimizer.firstMoments(), st.bytes("adam.m"), 4 * elements);
            optimizer.kernels().copyFromHost(optimizer.secondMoments(), st.bytes("adam.v"), 4 * elements);
            String step = st.metadata().get("adam.step");
            try {
                optimizer.setStep(Integer.parseInt(step));
            } catch (NumberFormatException e) {
                throw new SafetensorsFormatException(file, "metadata 'adam.step' must be an integer, got " + step);
            }
            return st.metadata();
        }
    }
}
