package dev.distillery.trainer.tokenizer;

import java.util.List;
import java.util.Map;
import java.util.OptionalInt;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import com.knuddels.jtokkit.Encodings;
import com.knuddels.jtokkit.api.Encoding;
import com.knuddels.jtokkit.api.EncodingType;
import com.knuddels.jtokkit.api.IntArrayList;

/**
 * A tiktoken encoding (its ranks ship inside jtokkit). jtokkit encodes ordinary text only, so the
 * special tokens written in a text are split out here and given their ids, as tiktoken's
 * {@code encode(text, allowed_special="all")} and the tokenizer.json converted from it do.
 */
public final class TiktokenEncoding implements TextTokenizer {

    static final List<String> NAMES = List.of("gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base");

    private final String name;
    private final Encoding encoding;
    private final Map<String, Integer> specials;
    private final Pattern specialPattern;
    private final int vocabSize;

    private TiktokenEncoding(String name, Encoding encoding, Map<String, Integer> specials, int vocabSize) {
        this.name = name;
        this.encoding = encoding;
        this.specials = specials;
        this.specialPattern = Pattern.compile(specials.keySet().stream().map(Pattern::quote).collect(Collectors.joining("|")));
        this.vocabSize = vocabSize;
    }

    static TiktokenEncoding of(String name) {
        var registry = Encodings.newDefaultEncodingRegistry();
        // the special tokens and vocabulary sizes are tiktoken's (tiktoken_ext/openai_public.py)
        return switch (name) {
            case "gpt2", "r50k_base" -> new TiktokenEncoding(name, registry.getEncoding(EncodingType.R50K_BASE),
                    Map.of("<|endoftext|>", 50256), 50257);
            case "p50k_base" -> new TiktokenEncoding(name, registry.getEncoding(EncodingType.P50K_BASE),
                    Map.of("<|endoftext|>", 50256), 50281);
            case "cl100k_base" -> new TiktokenEncoding(name, registry.getEncoding(EncodingType.CL100K_BASE),
                    Map.of("<|endoftext|>", 100257, "<|fim_prefix|>", 100258, "<|fim_middle|>", 100259, "<|fim_suffix|>", 100260,
                            "<|endofprompt|>", 100276), 100277);
            case "o200k_base" -> new TiktokenEncoding(name, registry.getEncoding(EncodingType.O200K_BASE),
                    Map.of("<|endoftext|>", 199999, "<|endofprompt|>", 200018), 200019);
            default -> throw new IllegalArgumentException("unknown tiktoken encoding '" + name + "'; known: " + String.join(", ", NAMES));
        };
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public int vocabSize() {
        return vocabSize;
    }

    @Override
    public int[] encode(String text) {
        IntArrayList ids = new IntArrayList(text.length() / 3 + 1);
        Matcher m = specialPattern.matcher(text);
        int from = 0;
        while (m.find()) {
            append(ids, encoding.encodeOrdinary(text.substring(from, m.start())));
            ids.add(specials.get(m.group()));
            from = m.end();
        }
        append(ids, encoding.encodeOrdinary(from == 0 ? text : text.substring(from)));
        return ids.toArray();
    }

    @Override
    public int[][] encodeAll(List<String> texts, java.util.concurrent.ExecutorService threads) throws java.io.IOException {
        List<java.util.concurrent.Future<int[]>> futures = new java.util.ArrayList<>(texts.size());
        for (String t : texts) futures.add(threads.submit(() -> encode(t)));
        int[][] out = new int[texts.size()][];
        try {
            for (int i = 0; i < out.length; i++) out[i] = futures.get(i).get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.IOException("interrupted while tokenizing", e);
        } catch (java.util.concurrent.ExecutionException e) {
            throw new java.io.IOException("tokenizing failed: " + e.getCause().getMessage(), e.getCause());
        }
        return out;
    }

    private static void append(IntArrayList to, IntArrayList from) {
        for (int i = 0; i < from.size(); i++) to.add(from.get(i));
    }

    @Override
    public String decode(int[] ids) {
        StringBuilder sb = new StringBuilder();
        IntArrayList ordinary = new IntArrayList();
        for (int id : ids) {
            String special = specialOf(id);
            if (special == null) {
                ordinary.add(id);
                continue;
            }
            sb.append(encoding.decode(ordinary)).append(special);
            ordinary.clear();
        }
        return sb.append(encoding.decode(ordinary)).toString();
    }

    private String specialOf(int id) {
        for (var e : specials.entrySet()) if (e.getValue() == id) return e.getKey();
        return null;
    }

    @Override
    public OptionalInt eos() {
        return OptionalInt.of(specials.get("<|endoftext|>"));
    }

    @Override
    public OptionalInt bos() {
        return OptionalInt.empty();
    }

    @Override
    public boolean cutsAfterNewlines() {
        return true;
    }

    @Override
    public void close() {
    }
}
