package dev.distillery.trainer.corpus;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A corpus folder is read in natural order, and a file repeating another's text is named. */
class CorpusTest {

    private static String chapter(int n) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 5; i++) sb.append("Chapter ").append(n).append(", line ").append(i).append(": some words to make it long enough.\n");
        return sb.toString();
    }

    @Test
    void chaptersAreJoinedInNaturalOrderAndABookBesideThemIsNamed(@TempDir Path dir) throws IOException {
        for (int n : new int[]{1, 2, 10, 100}) Files.writeString(dir.resolve("chapter-" + n + ".txt"), chapter(n));
        StringWriter warnings = new StringWriter();
        Corpus c = Corpus.load(dir, new PrintWriter(warnings, true));
        assertEquals(String.join("\n\n", chapter(1), chapter(2), chapter(10), chapter(100)), c.text());
        assertEquals("", warnings.toString(), "distinct chapters overlap nothing");

        Files.writeString(dir.resolve("whole-book.txt"), chapter(1) + chapter(2) + chapter(10) + chapter(100));
        warnings = new StringWriter();
        Corpus.load(dir, new PrintWriter(warnings, true));
        List<String> lines = warnings.toString().lines().toList();
        assertEquals(4, lines.size(), warnings.toString());   // each chapter is wholly in the book; the book is a quarter in each
        assertTrue(lines.get(0).startsWith("warning: chapter-1.txt: 5 of its 5 long lines are also in whole-book.txt"), lines.get(0));
    }

    @Test
    void naturalOrderComparesDigitRunsAsNumbers() {
        List<Path> names = List.of(Path.of("b.txt"), Path.of("a10.txt"), Path.of("a2.txt"), Path.of("a02.txt"), Path.of("a1b.txt"),
                Path.of("a99999999999999999999.txt"));
        assertEquals(List.of("a1b.txt", "a02.txt", "a2.txt", "a10.txt", "a99999999999999999999.txt", "b.txt"),
                names.stream().sorted(Corpus.NATURAL_ORDER).map(Path::toString).toList());
    }
}
