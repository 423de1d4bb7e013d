package dev.distillery.trainer.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The tokenizer against Hugging Face {@code tokenizers} on a hard text (NBSP, U+3000, U+2003,
 * U+2028, U+0085 and other Unicode spaces next to ASCII ones, emoji, CJK, Korean, literal
 * {@code <|endoftext|>}): the pre-tokenizer's pieces and the encoded ids equal those recorded
 * from {@code tokenizers} 0.23 by {@code src/test/python/hf_tokenizer_fixture.py} for a
 * tokenizer this trainer wrote. The pieces are what training counts, so equal pieces mean the
 * merges are learned on the text as {@code tokenizers} will split it.
 */
class BytePairTokenizerHuggingFaceTest {

    private static final String DIR = "/dev/distillery/trainer/tokenizer/";

    private static String resource(String name) throws IOException {
        try (InputStream in = BytePairTokenizerHuggingFaceTest.class.getResourceAsStream(DIR + name)) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    @Test
    void piecesAndIdsOfAHardTextAreThoseOfHuggingFaceTokenizers(@TempDir Path dir) throws IOException {
        Path json = dir.resolve("tokenizer.json");
        Files.writeString(json, resource("tokenizer-400.json"));
        BytePairTokenizer tok = BytePairTokenizer.load(json);
        String text = resource("hard-text.txt");
        JsonNode record = new ObjectMapper().readTree(resource("hf-record.json"));

        String[] segments = text.split(java.util.regex.Pattern.quote(BytePairTokenizer.END_OF_TEXT), -1);
        assertEquals(record.get("pieces").size(), segments.length);
        for (int s = 0; s < segments.length; s++) {
            List<String> expected = new ArrayList<>();
            record.get("pieces").get(s).forEach(p -> expected.add(p.asText()));
            List<String> actual = new ArrayList<>();
            for (String piece : BytePairTokenizer.pieces(segments[s])) actual.add(BytePairTokenizer.spell(piece.getBytes(StandardCharsets.UTF_8)));
            assertEquals(expected, actual, "pieces of segment " + s);
        }
        int[] expectedIds = new int[record.get("ids").size()];
        for (int i = 0; i < expectedIds.length; i++) expectedIds[i] = record.get("ids").get(i).asInt();
        int[] ids = tok.encode(text);
        assertArrayEquals(expectedIds, ids);
        assertEquals(text, tok.decode(ids), "decoding gives the text back");
    }
}
