package dev.distillery.trainer.tokenizer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.trainer.corpus.Corpus;

class BytePairTokenizerTest {

    private static final String TEXT = """
            The Congress shall have power to lay and collect taxes, duties, imposts and excises, to pay the debts
            and provide for the common defence and general welfare of the United States; but all duties, imposts
            and excises shall be uniform throughout the United States. The the the there then these those 1789 1790.
            """;

    @Test
    void encodeThenDecodeGivesBackAnyTextIncludingUnseenUnicode() {
        BytePairTokenizer tok = BytePairTokenizer.train(TEXT, 300);
        for (String s : new String[]{TEXT, "", " ", "naïve café — 東京 🚀 \t\n  tabs", "the United States' debts, 2024!"}) {
            assertEquals(s, tok.decode(tok.encode(s)));
        }
    }

    @Test
    void learnsExactlyTheRequestedVocabularyAndMergesFrequentPairs() {
        BytePairTokenizer tok = BytePairTokenizer.train(TEXT, 300);
        assertEquals(300, tok.vocabSize());
        assertEquals(299, tok.endOfText());
        int[] ids = tok.encode(" the the the");
        assertTrue(ids.length < " the the the".length(), "merges shorten frequent text: " + ids.length);
        assertEquals(ids[0], ids[1], "the same piece encodes the same way");
    }

    @Test
    void savedTokenizerJsonLoadsBackToTheSameEncoding(@TempDir Path dir) throws IOException {
        BytePairTokenizer tok = BytePairTokenizer.train(Corpus.bundled().text().substring(0, 200_000), 600);
        Path file = dir.resolve("tokenizer.json");
        tok.save(file);
        BytePairTokenizer back = BytePairTokenizer.load(file);
        String probe = Corpus.bundled().text().substring(300_000, 320_000);
        assertArrayEquals(tok.encode(probe), back.encode(probe));
        assertEquals(tok.vocabSize(), back.vocabSize());
        assertEquals(tok.endOfText(), back.endOfText());
        String json = Files.readString(file);
        assertTrue(json.contains("\"type\" : \"BPE\"") && json.contains("\"ByteLevel\"") && json.contains("<|endoftext|>"));
    }

    @Test
    void trainingIsDeterministic() {
        assertArrayEquals(BytePairTokenizer.train(TEXT, 280).encode(TEXT), BytePairTokenizer.train(TEXT, 280).encode(TEXT));
    }

    @Test
    void malformedTokenizerFilesNameTheProblem(@TempDir Path dir) throws IOException {
        Path f = dir.resolve("tokenizer.json");
        Files.writeString(f, "{\"model\": {\"type\": \"WordPiece\"}}");
        assertTrue(assertThrows(IOException.class, () -> BytePairTokenizer.load(f)).getMessage().contains("model.type"));
        Files.writeString(f, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"<|endoftext|>\": 2}, \"merges\": []}}");
        assertTrue(assertThrows(IOException.class, () -> BytePairTokenizer.load(f)).getMessage().contains("no token with id 1"));
        Files.writeString(f, "{not json");
        assertTrue(assertThrows(IOException.class, () -> BytePairTokenizer.load(f)).getMessage().contains("not valid JSON"));
        assertThrows(IllegalArgumentException.class, () -> BytePairTokenizer.train(TEXT, 100));
    }
}
