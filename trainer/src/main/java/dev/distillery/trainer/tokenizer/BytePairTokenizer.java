package dev.distillery.trainer.tokenizer;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.distillery.runtime.io.AtomicFileWriter;

/**
 * GPT-2's byte-level BPE: text is split by GPT-2's pre-tokenization pattern, each piece's UTF-8
 * bytes start as 256 byte symbols, and learned merges are applied lowest rank first. Training
 * counts distinct pieces once with their frequency and updates pair counts incrementally, so a
 * few thousand merges over megabytes of text take seconds. Saved and loaded as a Hugging Face
 * {@code tokenizer.json} (model type BPE, ByteLevel pre-tokenizer and decoder), so a checkpoint's
 * tokenizer opens in {@code transformers}.
 *
 * <p>Ids: 0-255 are the bytes (in byte order, spelled with GPT-2's printable byte alphabet),
 * then one id per merge in rank order, then {@value #END_OF_TEXT} as the last id.
 */
public final class BytePairTokenizer {

    public static final String END_OF_TEXT = "<|endoftext|>";

    /**
     * GPT-2's pre-tokenization pattern, with {@code \\s} as Hugging Face {@code tokenizers} runs it:
     * every Unicode White_Space character (NBSP, U+3000, U+2003...), not Java's ASCII default.
     */
    private static final Pattern PIECES = Pattern.compile(
            "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", Pattern.UNICODE_CHARACTER_CLASS);

    /** The special token as it stands in text: split out before pre-tokenization, as {@code tokenizers} does. */
    private static final Pattern SPECIAL = Pattern.compile(Pattern.quote(END_OF_TEXT));

    private static final char[] BYTE_TO_CHAR = new char[256];
    private static final Map<Character, Integer> CHAR_TO_BYTE = new HashMap<>();

    static {
        // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256 + n.
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            BYTE_TO_CHAR[b] = printable ? (char) b : (char) (256 + n++);
            CHAR_TO_BYTE.put(BYTE_TO_CHAR[b], b);
        }
    }

    private final byte[][] tokenBytes;              // id -> bytes (the special token: its UTF-8)
    private final int[] byteToId;                   // byte -> id
    private final Map<Long, int[]> merges;          // (left id, right id) -> {rank, merged id}
    private final List<int[]> mergeList;            // rank -> {left id, right id}
    private final int endOfText;
    private final Map<String, int[]> cache = new HashMap<>();

    private BytePairTokenizer(byte[][] tokenBytes, int[] byteToId, List<int[]> mergeList, int[] mergedIds, int endOfText) {
        this.tokenBytes = tokenBytes;
        this.byteToId = byteToId;
        this.mergeList = mergeList;
        this.endOfText = endOfText;
        this.merges = new HashMap<>();
        for (int r = 0; r < mergeList.size(); r++) {
            int[] m = mergeList.get(r);
            merges.put(pair(m[0], m[1]), new int[]{r, mergedIds[r]});
        }
    }

    private static long pair(int a, int b) {
        return ((long) a << 32) | (b & 0xffffffffL);
    }

    /** Vocabulary size, the end-of-text token included. */
    public int vocabSize() {
        return tokenBytes.length;
    }

    public int endOfText() {
        return endOfText;
    }

    /**
     * Learns {@code vocabSize - 257} merges from {@code text} (ties go to the pair with the smaller
     * ids, so the result depends on the text alone).
     *
     * @param vocabSize 257 (bytes + end of text) or more
     */
    public static BytePairTokenizer train(String text, int vocabSize) {
        if (vocabSize < 257) throw new IllegalArgumentException("vocab size must be >= 257 (256 bytes + end of text), got " + vocabSize);
        Map<String, Integer> pieceCounts = new HashMap<>();
        for (String segment : SPECIAL.split(text, -1)) {   // the special token is no text to learn from
            for (String piece : pieces(segment)) pieceCounts.merge(piece, 1, Integer::sum);
        }
        List<String> pieces = new ArrayList<>(pieceCounts.keySet());
        pieces.sort(null);
        int[][] words = new int[pieces.size()][];
        int[] freq = new int[pieces.size()];
        Map<Long, Long> pairCounts = new HashMap<>();
        Map<Long, List<Integer>> pairWords = new HashMap<>();
        for (int w = 0; w < words.length; w++) {
            byte[] bytes = pieces.get(w).getBytes(StandardCharsets.UTF_8);
            words[w] = new int[bytes.length];
            for (int i = 0; i < bytes.length; i++) words[w][i] = bytes[i] & 0xff;
            freq[w] = pieceCounts.get(pieces.get(w));
            countPairs(words[w], freq[w], w, pairCounts, pairWords);
        }
        // Max-heap on (count, then smaller pair); stale entries are skipped when popped.
        PriorityQueue<long[]> heap = new PriorityQueue<>((x, y) -> x[0] != y[0] ? Long.compare(y[0], x[0]) : Long.compare(x[1], y[1]));
        pairCounts.forEach((p, c) -> heap.add(new long[]{c, p}));

        int merges = vocabSize - 257;
        List<int[]> mergeList = new ArrayList<>();
        List<byte[]> tokenBytes = new ArrayList<>();
        for (int b = 0; b < 256; b++) tokenBytes.add(new byte[]{(byte) b});
        int[] visited = new int[words.length];
        Arrays.fill(visited, -1);
        while (mergeList.size() < merges && !heap.isEmpty()) {
            long[] top = heap.poll();
            long current = pairCounts.getOrDefault(top[1], 0L);
            if (current != top[0] || current <= 0) continue;
            int a = (int) (top[1] >>> 32), b = (int) top[1];
            int id = tokenBytes.size();
            byte[] ab = Arrays.copyOf(tokenBytes.get(a), tokenBytes.get(a).length + tokenBytes.get(b).length);
            System.arraycopy(tokenBytes.get(b), 0, ab, tokenBytes.get(a).length, tokenBytes.get(b).length);
            tokenBytes.add(ab);
            mergeList.add(new int[]{a, b});
            Map<Long, Long> changed = new HashMap<>();
            for (int w : pairWords.remove(top[1])) {
                if (visited[w] == id) continue;
                visited[w] = id;
                int[] old = words[w];
                int[] merged = mergeWord(old, a, b, id);
                if (merged.length == old.length) continue;
                countPairs(old, -freq[w], -1, pairCounts, null);
                countPairs(merged, freq[w], w, pairCounts, pairWords);
                words[w] = merged;
                for (int i = 0; i + 1 < old.length; i++) changed.put(pair(old[i], old[i + 1]), 0L);
                for (int i = 0; i + 1 < merged.length; i++) changed.put(pair(merged[i], merged[i + 1]), 0L);
            }
            pairCounts.remove(top[1]);
            for (Long p : changed.keySet()) {
                long c = pairCounts.getOrDefault(p, 0L);
                if (c > 0) heap.add(new long[]{c, p});
                else pairCounts.remove(p);
            }
        }
        int eot = tokenBytes.size();
        tokenBytes.add(END_OF_TEXT.getBytes(StandardCharsets.UTF_8));
        int[] byteToId = new int[256];
        for (int i = 0; i < 256; i++) byteToId[i] = i;
        int[] mergedIds = new int[mergeList.size()];
        for (int r = 0; r < mergedIds.length; r++) mergedIds[r] = 256 + r;
        return new BytePairTokenizer(tokenBytes.toArray(byte[][]::new), byteToId, mergeList, mergedIds, eot);
    }

    private static void countPairs(int[] word, long by, int w, Map<Long, Long> counts, Map<Long, List<Integer>> where) {
        for (int i = 0; i + 1 < word.length; i++) {
            long p = pair(word[i], word[i + 1]);
            counts.merge(p, by, Long::sum);
            if (where != null) where.computeIfAbsent(p, k -> new ArrayList<>()).add(w);
        }
    }

    private static int[] mergeWord(int[] word, int a, int b, int id) {
        int[] out = new int[word.length];
        int n = 0;
        for (int i = 0; i < word.length; i++) {
            if (i + 1 < word.length && word[i] == a && word[i + 1] == b) {
                out[n++] = id;
                i++;
            } else {
                out[n++] = word[i];
            }
        }
        return n == word.length ? word : Arrays.copyOf(out, n);
    }

    /** The pre-tokenizer's pieces of {@code text}, as Hugging Face's ByteLevel splits it. */
    static List<String> pieces(String text) {
        List<String> out = new ArrayList<>();
        Matcher m = PIECES.matcher(text);
        while (m.find()) out.add(m.group());
        return out;
    }

    /**
     * Token ids of {@code text}. A literal {@value #END_OF_TEXT} in it is the special token, as in
     * Hugging Face {@code tokenizers} (added tokens are split out before pre-tokenization).
     */
    public int[] encode(String text) {
        List<int[]> parts = new ArrayList<>();
        int total = 0;
        String[] segments = SPECIAL.split(text, -1);
        for (int i = 0; i < segments.length; i++) {
            if (i > 0) {
                parts.add(new int[]{endOfText});
                total++;
            }
            for (String piece : pieces(segments[i])) {
                int[] ids = cache.computeIfAbsent(piece, this::encodePiece);
                parts.add(ids);
                total += ids.length;
            }
        }
        int[] out = new int[total];
        int at = 0;
        for (int[] p : parts) {
            System.arraycopy(p, 0, out, at, p.length);
            at += p.length;
        }
        return out;
    }

    private int[] encodePiece(String piece) {
        byte[] bytes = piece.getBytes(StandardCharsets.UTF_8);
        int[] word = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) word[i] = byteToId[bytes[i] & 0xff];
        while (word.length > 1) {
            int bestRank = Integer.MAX_VALUE, bestId = -1, a = -1, b = -1;
            for (int i = 0; i + 1 < word.length; i++) {
                int[] merge = merges.get(pair(word[i], word[i + 1]));
                if (merge != null && merge[0] < bestRank) {
                    bestRank = merge[0];
                    bestId = merge[1];
                    a = word[i];
                    b = word[i + 1];
                }
            }
            if (bestId < 0) break;
            word = mergeWord(word, a, b, bestId);
        }
        return word;
    }

    /** The text of {@code ids}; invalid UTF-8 (a sequence cut mid-character) becomes U+FFFD. */
    public String decode(int[] ids, int from, int to) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        for (int i = from; i < to; i++) {
            int id = ids[i];
            if (id < 0 || id >= tokenBytes.length) throw new IllegalArgumentException("token id " + id + " is outside the vocabulary of " + tokenBytes.length);
            out.writeBytes(tokenBytes[id]);
        }
        return out.toString(StandardCharsets.UTF_8);
    }

    public String decode(int[] ids) {
        return decode(ids, 0, ids.length);
    }

    /** Bytes in GPT-2's printable byte alphabet, as tokenizer.json spells tokens. */
    static String spell(byte[] bytes) {
        StringBuilder sb = new StringBuilder(bytes.length);
        for (byte x : bytes) sb.append(BYTE_TO_CHAR[x & 0xff]);
        return sb.toString();
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    /** Writes a Hugging Face {@code tokenizer.json} (crash-safe: temp file, fsync, rename). */
    public void save(Path file) throws IOException {
        Map<String, Object> vocab = new LinkedHashMap<>();
        for (int id = 0; id < tokenBytes.length; id++) {
            if (id != endOfText) vocab.put(spell(tokenBytes[id]), id);
        }
        vocab.put(END_OF_TEXT, endOfText);
        List<String> mergeStrings = new ArrayList<>();
        for (int[] mg : mergeList) mergeStrings.add(spell(tokenBytes[mg[0]]) + " " + spell(tokenBytes[mg[1]]));
        Map<String, Object> byteLevel = new LinkedHashMap<>();
        byteLevel.put("type", "ByteLevel");
        byteLevel.put("add_prefix_space", false);
        byteLevel.put("trim_offsets", true);
        byteLevel.put("use_regex", true);
        Map<String, Object> model = new LinkedHashMap<>();
        model.put("type", "BPE");
        model.put("dropout", null);
        model.put("unk_token", null);
        model.put("continuing_subword_prefix", null);
        model.put("end_of_word_suffix", null);
        model.put("fuse_unk", false);
        model.put("byte_fallback", false);
        model.put("vocab", vocab);
        model.put("merges", mergeStrings);
        Map<String, Object> special = new LinkedHashMap<>();
        special.put("id", endOfText);
        special.put("content", END_OF_TEXT);
        special.put("single_word", false);
        special.put("lstrip", false);
        special.put("rstrip", false);
        special.put("normalized", true);
        special.put("special", true);
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("version", "1.0");
        root.put("truncation", null);
        root.put("padding", null);
        root.put("added_tokens", List.of(special));
        root.put("normalizer", null);
        root.put("pre_tokenizer", byteLevel);
        root.put("post_processor", byteLevel);
        root.put("decoder", byteLevel);
        root.put("model", model);
        byte[] json = JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(root);
        AtomicFileWriter.write(file, ch -> AtomicFileWriter.writeFully(ch, java.nio.ByteBuffer.wrap(json)));
    }

    /** Reads a byte-level BPE {@code tokenizer.json} (ours or GPT-2's); problems name the file and the key. */
    public static BytePairTokenizer load(Path file) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new IOException(file + ": not valid JSON: " + e.getOriginalMessage(), e);
        }
        JsonNode model = root.path("model");
        if (!"BPE".equals(model.path("type").asText())) throw new IOException(file + ": 'model.type' must be BPE, got " + model.path("type"));
        JsonNode vocab = model.path("vocab");
        if (!vocab.isObject() || vocab.isEmpty()) throw new IOException(file + ": 'model.vocab' is missing or empty");
        int size = 0;
        for (var it = vocab.fields(); it.hasNext(); ) size = Math.max(size, it.next().getValue().asInt() + 1);
        byte[][] bytes = new byte[size][];
        Map<String, Integer> ids = new HashMap<>();
        int eot = -1;
        for (var it = vocab.fields(); it.hasNext(); ) {
            var e = it.next();
            int id = e.getValue().asInt();
            ids.put(e.getKey(), id);
            if (e.getKey().equals(END_OF_TEXT)) {
                eot = id;
                bytes[id] = END_OF_TEXT.getBytes(StandardCharsets.UTF_8);
                continue;
            }
            byte[] b = new byte[e.getKey().length()];
            for (int i = 0; i < b.length; i++) {
                Integer x = CHAR_TO_BYTE.get(e.getKey().charAt(i));
                if (x == null) throw new IOException(file + ": token '" + e.getKey() + "' (id " + id + ") is not in the byte-level alphabet");
                b[i] = (byte) x.intValue();
            }
            bytes[id] = b;
        }
        for (int id = 0; id < size; id++) {
            if (bytes[id] == null) throw new IOException(file + ": 'model.vocab' has no token with id " + id);
        }
        if (eot < 0) throw new IOException(file + ": 'model.vocab' has no " + END_OF_TEXT);
        int[] byteToId = new int[256];
        for (int b = 0; b < 256; b++) {
            Integer id = ids.get(String.valueOf(BYTE_TO_CHAR[b]));
            if (id == null) throw new IOException(file + ": 'model.vocab' lacks the byte token for byte " + b);
            byteToId[b] = id;
        }
        List<int[]> mergeList = new ArrayList<>();
        JsonNode ms = model.path("merges");
        int[] mergedIds = new int[ms.size()];
        for (int r = 0; r < ms.size(); r++) {
            JsonNode mg = ms.get(r);
            String left, right;
            if (mg.isArray()) {
                left = mg.get(0).asText();
                right = mg.get(1).asText();
            } else {
                String[] lr = mg.asText().split(" ", 2);
                if (lr.length != 2) throw new IOException(file + ": 'model.merges[" + r + "]' is not two tokens: " + mg);
                left = lr[0];
                right = lr[1];
            }
            Integer a = ids.get(left), b = ids.get(right), ab = ids.get(left + right);
            if (a == null || b == null || ab == null) throw new IOException(file + ": 'model.merges[" + r + "]' (" + left + " " + right + ") names a token the vocab lacks");
            mergeList.add(new int[]{a, b});
            mergedIds[r] = ab;
        }
        return new BytePairTokenizer(bytes, byteToId, mergeList, mergedIds, eot);
    }
}
