package dev.distillery.trainer.tokenizer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.OptionalInt;
import java.util.Set;

import com.fasterxml.jackson.databind.JsonNode;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import ai.djl.huggingface.tokenizers.jni.TokenizersLibrary;
import dev.distillery.runtime.io.ModelFiles;

/**
 * A Hugging Face {@code tokenizer.json}, run by the Rust {@code tokenizers} through DJL. Before it is
 * loaded, the file's components are checked against those the library runs, so that one it cannot
 * run is named ("'pre_tokenizer.type' FooSplit is not one of ...") instead of a serde message.
 */
public final class HuggingFaceTokenizerFile implements TextTokenizer {

    // the component types of tokenizers 0.2x (its normalizers/, pre_tokenizers/, models/, decoders/, processors/)
    private static final Map<String, Set<String>> KNOWN = Map.of(
            "normalizer", Set.of("BertNormalizer", "Strip", "StripAccents", "NFC", "NFD", "NFKC", "NFKD", "Sequence", "Lowercase",
                    "Nmt", "Precompiled", "Replace", "Prepend", "ByteLevel"),
            "pre_tokenizer", Set.of("BertPreTokenizer", "ByteLevel", "CharDelimiterSplit", "Metaspace", "Whitespace", "Sequence", "Split",
                    "Punctuation", "WhitespaceSplit", "Digits", "UnicodeScripts", "FixedLength"),
            "model", Set.of("BPE", "WordPiece", "WordLevel", "Unigram"),
            "decoder", Set.of("BPEDecoder", "ByteLevel", "WordPiece", "Metaspace", "CTC", "Sequence", "Replace", "Fuse", "Strip", "ByteFallback"),
            "post_processor", Set.of("RobertaProcessing", "BertProcessing", "ByteLevel", "TemplateProcessing", "Sequence"));

    private static final List<String> EOS_NAMES = List.of("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>");
    private static final List<String> BOS_NAMES = List.of("<|begin_of_text|>", "<s>", "<bos>");

    private final Path file;
    private final HuggingFaceTokenizer tokenizer;
    private final int vocabSize;
    private final OptionalInt eos, bos;
    private final boolean cutsAfterNewlines;

    private HuggingFaceTokenizerFile(Path file, HuggingFaceTokenizer tokenizer, int vocabSize, OptionalInt eos, OptionalInt bos,
                                     boolean cutsAfterNewlines) {
        this.file = file;
        this.tokenizer = tokenizer;
        this.vocabSize = vocabSize;
        this.eos = eos;
        this.bos = bos;
        this.cutsAfterNewlines = cutsAfterNewlines;
    }

    /** Loads {@code file}; {@code tokenizer_config.json} beside it, when there, names the EOS and BOS tokens. */
    /** What {@code transformers}' AutoTokenizer reads beside a tokenizer.json: the special tokens (BOS, EOS) and the class. */
    public static final List<String> COMPANIONS = List.of("tokenizer_config.json", "special_tokens_map.json");

    /**
     * Copies {@code file} into {@code dir} as tokenizer.json, with the {@link #COMPANIONS} found
     * beside it, so a folder made here (token files, a checkpoint) loads in AutoTokenizer with the
     * teacher's special tokens. Copying a file onto itself is a no-op.
     */
    public static void copyInto(Path file, Path dir) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        copy(file, dir.resolve("tokenizer.json"));
        for (String name : COMPANIONS) {
            if (Files.isRegularFile(parent.resolve(name))) copy(parent.resolve(name), dir.resolve(name));
        }
    }

    private static void copy(Path from, Path to) throws IOException {
        if (!Files.exists(to) || !Files.isSameFile(from, to)) Files.copy(from, to, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    }

    public static HuggingFaceTokenizerFile open(Path file) throws IOException {
        JsonNode root = ModelFiles.readJson(file);
        if (root == null || !root.isObject() || !root.path("model").isObject()) {
            throw new IOException(file + ": not a Hugging Face tokenizer.json (it has no 'model' object)");
        }
        for (String component : KNOWN.keySet()) requireKnown(file, component, root.path(component), component);
        Map<String, Integer> ids = new java.util.HashMap<>();
        JsonNode vocab = root.path("model").path("vocab");
        int max = -1;
        if (vocab.isObject()) {
            for (Iterator<Map.Entry<String, JsonNode>> it = vocab.fields(); it.hasNext(); ) {
                var e = it.next();
                ids.put(e.getKey(), e.getValue().asInt());
                max = Math.max(max, e.getValue().asInt());
            }
        } else if (vocab.isArray()) {   // Unigram: [[piece, score], ...], the id is the index
            for (int i = 0; i < vocab.size(); i++) ids.put(vocab.get(i).path(0).asText(), i);
            max = vocab.size() - 1;
        }
        Map<String, Integer> specials = new java.util.HashMap<>();
        for (JsonNode added : root.path("added_tokens")) {
            ids.put(added.path("content").asText(), added.path("id").asInt());
            if (added.path("special").asBoolean(false)) specials.put(added.path("content").asText(), added.path("id").asInt());
            max = Math.max(max, added.path("id").asInt());
        }
        if (max < 0) throw new IOException(file + ": 'model.vocab' is empty");
        Path configFile = file.resolveSibling("tokenizer_config.json");
        JsonNode config = Files.isRegularFile(configFile) ? ModelFiles.readJson(configFile) : null;
        OptionalInt eos = special(file, ids, specials, config, "eos_token", EOS_NAMES),
                bos = special(file, ids, specials, config, "bos_token", BOS_NAMES);
        HuggingFaceTokenizer tokenizer;
        try {
            tokenizer = HuggingFaceTokenizer.newInstance(file, Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false"));
        } catch (RuntimeException | UnsatisfiedLinkError e) {
            throw new IOException(file + ": the tokenizers library cannot load it: " + e.getMessage(), e);
        }
        return new HuggingFaceTokenizerFile(file, tokenizer, max + 1, eos, bos, cutsAfterNewlines(root));
    }

    /** A component's "type", and those of a Sequence's members, must be ones the library runs. */
    private static void requireKnown(Path file, String component, JsonNode node, String key) throws IOException {
        if (node.isNull() || node.isMissingNode()) return;
        String type = node.path("type").asText(null);
        if (type == null) {
            if (component.equals("model")) return;   // BPE files written without a type: tokenizers infers it
            throw new IOException(file + ": '" + key + "' has no 'type'");
        }
        if (!KNOWN.get(component).contains(type)) {
            throw new IOException(file + ": '" + key + ".type' " + type + " is not a " + component.replace('_', '-') + " this build's tokenizers runs ("
                    + String.join(", ", new java.util.TreeSet<>(KNOWN.get(component))) + ")");
        }
        String members = component.equals("normalizer") ? "normalizers" : component.equals("pre_tokenizer") ? "pretokenizers"
                : component.equals("decoder") ? "decoders" : "processors";
        JsonNode list = node.path(members);
        for (int i = 0; i < list.size(); i++) requireKnown(file, component, list.get(i), key + "." + members + "[" + i + "]");
    }

    /** The token tokenizer_config.json names under {@code key}, else the first of {@code names} that is a special token. */
    private static OptionalInt special(Path file, Map<String, Integer> ids, Map<String, Integer> specials, JsonNode config, String key,
                                       List<String> names) throws IOException {
        JsonNode named = config == null ? null : config.get(key);
        if (named != null && !named.isNull()) {
            String content = named.isObject() ? named.path("content").asText() : named.asText();
            Integer id = ids.get(content);
            if (id == null) throw new IOException(file.resolveSibling("tokenizer_config.json") + ": '" + key + "' " + content + " is not in " + file);
            return OptionalInt.of(id);
        }
        for (String name : names) if (specials.containsKey(name)) return OptionalInt.of(specials.get(name));
        return OptionalInt.empty();
    }

    /** No normalizer, and every pre-tokenizer a byte-level one without a prefix space or a regex split (see the interface). */
    private static boolean cutsAfterNewlines(JsonNode root) {
        if (!root.path("normalizer").isNull() && !root.path("normalizer").isMissingNode()) return false;
        JsonNode pre = root.path("pre_tokenizer");
        List<JsonNode> parts = "Sequence".equals(pre.path("type").asText()) ? iterate(pre.path("pretokenizers")) : List.of(pre);
        boolean byteLevel = false;
        for (JsonNode p : parts) {
            switch (p.path("type").asText()) {
                case "ByteLevel" -> {
                    if (p.path("add_prefix_space").asBoolean(false)) return false;
                    byteLevel = true;
                }
                case "Split" -> {
                }
                default -> {
                    return false;
                }
            }
        }
        return byteLevel;
    }

    private static List<JsonNode> iterate(JsonNode array) {
        List<JsonNode> out = new java.util.ArrayList<>();
        array.forEach(out::add);
        return out;
    }

    @Override
    public String name() {
        return file.toString();
    }

    @Override
    public int vocabSize() {
        return vocabSize;
    }

    // Encodings are read through DJL's JNI layer for their ids alone: its Encoding object also
    // copies out the tokens as Java strings, offsets, masks and type ids, which took more than half
    // of the time of encoding a corpus (docs/PERFORMANCE.md).

    @Override
    public int[] encode(String text) {
        return ids(TokenizersLibrary.LIB.encode(tokenizer.getHandle(), text, false));
    }

    /** The ids of a native encoding, which is freed. */
    private static int[] ids(long encoding) {
        try {
            long[] ids = TokenizersLibrary.LIB.getTokenIds(encoding);
            int[] out = new int[ids.length];
            for (int i = 0; i < ids.length; i++) out[i] = Math.toIntExact(ids[i]);
            return out;
        } finally {
            TokenizersLibrary.LIB.deleteEncoding(encoding);
        }
    }

    /** One call into the library, whose encode_batch runs on its own (rayon) pool, one thread per core. */
    @Override
    public int[][] encodeAll(List<String> texts, java.util.concurrent.ExecutorService threads) {
        long[] encodings = TokenizersLibrary.LIB.batchEncode(tokenizer.getHandle(), texts.toArray(new String[0]), false);
        int[][] out = new int[encodings.length][];
        int i = 0;
        try {
            for (; i < out.length; i++) out[i] = ids(encodings[i]);
        } finally {
            for (int j = i + 1; j < encodings.length; j++) TokenizersLibrary.LIB.deleteEncoding(encodings[j]);   // after a failure
        }
        return out;
    }

    @Override
    public String decode(int[] ids) {
        long[] wide = new long[ids.length];
        for (int i = 0; i < ids.length; i++) wide[i] = ids[i];
        return tokenizer.decode(wide, false);
    }

    @Override
    public OptionalInt eos() {
        return eos;
    }

    @Override
    public OptionalInt bos() {
        return bos;
    }

    @Override
    public boolean cutsAfterNewlines() {
        return cutsAfterNewlines;
    }

    @Override
    public void close() {
        tokenizer.close();
    }
}
