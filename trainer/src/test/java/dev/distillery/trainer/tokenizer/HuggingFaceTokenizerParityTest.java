package dev.distillery.trainer.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.GZIPInputStream;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.distillery.trainer.data.TokenFile;

/**
 * Existing tokenizers give the ids Hugging Face {@code tokenizers} gives, on a text that mixes prose,
 * code, long numbers, runs of spaces, tabs and newlines, accents, CJK, emoji and special tokens
 * ({@code mixed-text.txt}); the ids were recorded with tokenizers 0.23.2 by
 * {@code src/test/python/tokenizer_parity_fixture.py}. Then {@code tokenize}'s streaming encoder,
 * cutting documents into small pieces on two threads, writes the ids of encoding each document whole.
 */
class HuggingFaceTokenizerParityTest {

    private static final String RESOURCES = "/dev/distillery/trainer/tokenizer/";

    @TempDir
    static Path dir;
    private static String text;
    private static JsonNode recorded;
    private static Path gpt2Json, spJson;

    @BeforeAll
    static void fixtures() throws IOException {
        text = new String(resource("mixed-text.txt").readAllBytes(), StandardCharsets.UTF_8);
        recorded = new ObjectMapper().readTree(resource("parity-ids.json")).get("ids");
        gpt2Json = dir.resolve("gpt2/tokenizer.json");
        Files.createDirectories(gpt2Json.getParent());
        try (InputStream in = new GZIPInputStream(resource("gpt2-tokenizer.json.gz"))) {
            Files.copy(in, gpt2Json);
        }
        spJson = dir.resolve("sp/tokenizer.json");
        Files.createDirectories(spJson.getParent());
        try (InputStream in = resource("sp-tokenizer.json")) {
            Files.copy(in, spJson);
        }
    }

    private static InputStream resource(String name) {
        return HuggingFaceTokenizerParityTest.class.getResourceAsStream(RESOURCES + name);
    }

    private static int[] recorded(String name) {
        JsonNode a = recorded.get(name);
        int[] ids = new int[a.size()];
        for (int i = 0; i < ids.length; i++) ids[i] = a.get(i).asInt();
        return ids;
    }

    @Test
    void gpt2ByteLevelBpeFromTheR50kRanksMatchesTokenizersThroughBothLibraries() throws IOException {
        try (TextTokenizer json = TextTokenizer.open(gpt2Json.toString()); TextTokenizer tiktoken = TextTokenizer.open("gpt2")) {
            assertArrayEquals(recorded("gpt2"), json.encode(text), "tokenizer.json through tokenizers (DJL)");
            assertArrayEquals(recorded("gpt2"), tiktoken.encode(text), "r50k_base through jtokkit");
            assertEquals(50257, json.vocabSize());
            assertEquals(50256, json.eos().orElseThrow());
            assertTrue(json.cutsAfterNewlines());
            assertEquals(text, json.decode(json.encode(text)));
        }
    }

    @Test
    void cl100kAndO200kMatchTokenizersWithTheirSpecialTokens() throws IOException {
        for (String name : List.of("cl100k_base", "o200k_base")) {
            try (TextTokenizer t = TextTokenizer.open(name)) {
                int[] ids = t.encode(text);
                assertArrayEquals(recorded(name), ids, name);
                assertEquals(text, t.decode(ids), name);
            }
        }
    }

    @Test
    void aSentencePieceStyleTokenizerWithByteFallbackMatchesTokenizersAndIsNeverCut() throws IOException {
        try (TextTokenizer sp = TextTokenizer.open(spJson.getParent().toString())) {
            int[] ids = sp.encode(text);
            assertArrayEquals(recorded("sp"), ids);
            assertTrue(java.util.Arrays.stream(ids).anyMatch(id -> id >= 3 && id < 259), "bytes the vocabulary lacks fall back to <0xXX>");
            assertFalse(sp.cutsAfterNewlines(), "a \u2581 prefix starts every piece it is given");
            assertEquals(2, sp.eos().orElseThrow(), "</s>");
            assertEquals(1, sp.bos().orElseThrow(), "<s>");
        }
    }

    /** Documents: two .txt files and a .jsonl of two, in natural file order. */
    private static List<String> corpus(Path folder) throws IOException {
        Files.createDirectories(folder);
        List<String> docs = List.of(text, text.substring(200) + "\n\nmore\n", "short one", text.substring(0, 500));
        Files.writeString(folder.resolve("doc-2.txt"), docs.get(0));
        Files.writeString(folder.resolve("doc-10.txt"), docs.get(1));
        ObjectMapper json = new ObjectMapper();
        Files.writeString(folder.resolve("more.jsonl"), "{\"text\": " + json.writeValueAsString(docs.get(2)) + "}\n\n{\"text\": "
                + json.writeValueAsString(docs.get(3)) + ", \"id\": 7}\n");
        return docs;
    }

    private static int[] tokens(Path file) throws IOException {
        try (TokenFile f = TokenFile.open(file)) {
            int[] ids = new int[(int) f.size()];
            f.read(0, ids.length, ids);
            return ids;
        }
    }

    private static int[] joined(TextTokenizer t, List<String> docs, CorpusEncoder.Delimiter d) {
        List<Integer> all = new ArrayList<>();
        for (String doc : docs) {
            if (d == CorpusEncoder.Delimiter.BOS) all.add(t.bos().orElseThrow());
            for (int id : t.encode(doc)) all.add(id);
            if (d == CorpusEncoder.Delimiter.EOS) all.add(t.eos().orElseThrow());
        }
        return all.stream().mapToInt(Integer::intValue).toArray();
    }

    @Test
    void theStreamingEncoderWritesTheIdsOfEachDocumentEncodedWhole() throws IOException {
        Path folder = dir.resolve("corpus");
        List<String> docs = corpus(folder);
        for (String spec : List.of(gpt2Json.toString(), "o200k_base", spJson.toString())) {
            try (TextTokenizer t = TextTokenizer.open(spec)) {
                CorpusEncoder.Delimiter d = t.bos().isPresent() ? CorpusEncoder.Delimiter.BOS : CorpusEncoder.Delimiter.EOS;
                Path out = dir.resolve("out-" + Math.abs(spec.hashCode()));
                // 64-character pieces: the documents are cut many times, where the tokenizer allows it
                CorpusEncoder.Result r = CorpusEncoder.run(t, new CorpusEncoder.Options(List.of(folder), out, 0.3, d, 2, false, 64),
                        new PrintWriter(new StringWriter()));
                int[] train = tokens(r.train()), val = tokens(r.val());
                int[] all = new int[train.length + val.length];
                System.arraycopy(train, 0, all, 0, train.length);
                System.arraycopy(val, 0, all, train.length, val.length);
                assertArrayEquals(joined(t, docs, d), all, spec);
                assertEquals(4, r.documents());
                assertTrue(val.length > 0 && train.length > val.length, spec + ": " + train.length + " / " + val.length);
                assertEquals(t.vocabSize() > 65536 ? 4 : 2, TokenFile.open(r.train()).tokenWidth(), spec);
            }
        }
    }

    /** A tokenizer.json travels with the files AutoTokenizer reads beside it (BOS, EOS, the class), and onto itself as a no-op. */
    @Test
    void aTokenizerIsCopiedWithItsCompanionFiles() throws IOException {
        Path teacher = java.nio.file.Files.createDirectories(dir.resolve("teacher")), out = dir.resolve("copied");
        java.nio.file.Files.copy(spJson, teacher.resolve("tokenizer.json"));
        java.nio.file.Files.writeString(teacher.resolve("tokenizer_config.json"), "{\"bos_token\": \"<s>\"}");
        java.nio.file.Files.createDirectories(out);
        HuggingFaceTokenizerFile.copyInto(teacher.resolve("tokenizer.json"), out);
        assertEquals(-1, java.nio.file.Files.mismatch(spJson, out.resolve("tokenizer.json")));
        assertEquals("{\"bos_token\": \"<s>\"}", java.nio.file.Files.readString(out.resolve("tokenizer_config.json")));
        assertTrue(!java.nio.file.Files.exists(out.resolve("special_tokens_map.json")), "only what is there is copied");
        HuggingFaceTokenizerFile.copyInto(out.resolve("tokenizer.json"), out);
        assertEquals(-1, java.nio.file.Files.mismatch(spJson, out.resolve("tokenizer.json")));
    }

    @Test
    void badInputIsNamedWithItsFileAndPlace() throws IOException {
        Path bad = dir.resolve("bad");
        Files.createDirectories(bad);
        Path latin1 = bad.resolve("latin1.txt");
        Files.write(latin1, "caf\u00e9 au lait".getBytes(StandardCharsets.ISO_8859_1));
        try (TextTokenizer t = TextTokenizer.open("gpt2")) {
            String m = assertThrows(IOException.class, () -> CorpusEncoder.run(t, new CorpusEncoder.Options(List.of(latin1), bad.resolve("o1"),
                    0, CorpusEncoder.Delimiter.EOS, 1, false, 64), new PrintWriter(new StringWriter()))).getMessage();
            assertEquals(latin1 + ": invalid UTF-8 at byte offset 3 (pass --invalid-utf8 replace to read such bytes as U+FFFD)", m);
            CorpusEncoder.Result r = CorpusEncoder.run(t, new CorpusEncoder.Options(List.of(latin1), bad.resolve("o2"), 0,
                    CorpusEncoder.Delimiter.EOS, 1, true, 64), new PrintWriter(new StringWriter()));
            assertArrayEquals(joined(t, List.of("caf\uFFFD au lait"), CorpusEncoder.Delimiter.EOS), tokens(r.train()));
            Path jsonl = bad.resolve("docs.jsonl");
            Files.writeString(jsonl, "{\"text\": \"fine\"}\n{\"content\": \"no text key\"}\n");
            m = assertThrows(IOException.class, () -> CorpusEncoder.run(t, new CorpusEncoder.Options(List.of(jsonl), bad.resolve("o3"),
                    0, CorpusEncoder.Delimiter.EOS, 1, false, 64), new PrintWriter(new StringWriter()))).getMessage();
            assertEquals(jsonl + ":2: each line must be a JSON object with a \"text\" string", m);
            m = assertThrows(IOException.class, () -> CorpusEncoder.run(t, new CorpusEncoder.Options(List.of(jsonl), bad.resolve("o4"),
                    0, CorpusEncoder.Delimiter.BOS, 1, false, 64), new PrintWriter(new StringWriter()))).getMessage();
            assertEquals("gpt2 has no BOS token; join documents with --delimiter eos", m);
        }
        assertEquals("cl200k_base: neither a tokenizer.json (or a folder holding one) nor a tiktoken encoding "
                + "(gpt2, r50k_base, p50k_base, cl100k_base, o200k_base)", assertThrows(IOException.class, () -> TextTokenizer.open("cl200k_base")).getMessage());
        Path odd = bad.resolve("odd.json");
        ObjectMapper json = new ObjectMapper();
        var tree = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(spJson.toFile());
        ((com.fasterxml.jackson.databind.node.ObjectNode) tree.get("normalizer").get("normalizers").get(0)).put("type", "Rot13");
        json.writeValue(odd.toFile(), tree);
        String m = assertThrows(IOException.class, () -> TextTokenizer.open(odd.toString())).getMessage();
        assertTrue(m.startsWith(odd + ": 'normalizer.normalizers[0].type' Rot13 is not a normalizer this build's tokenizers runs ("), m);
    }

    /** Cut at every point the encoder may cut: the two halves' ids, joined, are the whole text's. */
    @Test
    void everyCutPointLeavesTheIdsOfAByteLevelBpeAsTheyAre() throws IOException {
        String corpus = text + " " + new String(resource("hard-text.txt").readAllBytes(), StandardCharsets.UTF_8);
        for (String spec : List.of(gpt2Json.toString(), "gpt2", "cl100k_base", "o200k_base")) {
            try (TextTokenizer t = TextTokenizer.open(spec)) {
                assertTrue(t.cutsAfterNewlines(), spec);
                int[] whole = t.encode(corpus);
                int cuts = 0;
                for (int near = corpus.length(); near > 2; ) {
                    int cut = CorpusEncoder.cutPointOf(corpus, near);
                    if (cut < 0) break;
                    int[] left = t.encode(corpus.substring(0, cut)), right = t.encode(corpus.substring(cut));
                    int[] joined = java.util.stream.IntStream.concat(java.util.Arrays.stream(left), java.util.Arrays.stream(right)).toArray();
                    assertArrayEquals(whole, joined, spec + ": cut at " + cut + " ..." + corpus.substring(Math.max(0, cut - 8), Math.min(corpus.length(), cut + 8)));
                    cuts++;
                    near = cut - 1;
                }
                assertTrue(cuts > 50, spec + ": " + cuts + " cut points");
            }
        }
    }
}
