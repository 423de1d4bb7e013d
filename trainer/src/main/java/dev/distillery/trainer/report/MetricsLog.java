package dev.distillery.trainer.report;

import java.io.IOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * {@code metrics.jsonl}: one JSON object per line, {@code {"kind": "train"|"eval", "step": n, ...}}.
 * Each line is flushed as it is written; when a run resumes, the lines of steps after the
 * checkpoint (work the resumed run repeats) are dropped first, so the file reads as one run.
 */
public final class MetricsLog implements AutoCloseable {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path file;
    private final Writer out;
    private final List<Map<String, Object>> records = new ArrayList<>();

    private MetricsLog(Path file, Writer out) {
        this.file = file;
        this.out = out;
    }

    /** Opens {@code file}; keeps its records up to and including {@code keepThroughStep} (-1: start empty). */
    public static MetricsLog open(Path file, int keepThroughStep) throws IOException {
        List<Map<String, Object>> kept = new ArrayList<>();
        if (keepThroughStep >= 0 && Files.isRegularFile(file)) {
            for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
                if (line.isBlank()) continue;
                JsonNode n;
                try {
                    n = JSON.readTree(line);
                } catch (com.fasterxml.jackson.core.JacksonException e) {
                    break; // a line torn by a crash ends the usable log
                }
                if (n.path("step").asInt() <= keepThroughStep) {
                    @SuppressWarnings("unchecked")
                    Map<String, Object> m = JSON.convertValue(n, LinkedHashMap.class);
                    kept.add(m);
                }
            }
        }
        Files.createDirectories(file.toAbsolutePath().getParent());
        StringBuilder sb = new StringBuilder();
        for (Map<String, Object> m : kept) sb.append(JSON.writeValueAsString(m)).append('\n');
        Files.writeString(file, sb, StandardCharsets.UTF_8);
        Writer w = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.APPEND);
        MetricsLog log = new MetricsLog(file, w);
        log.records.addAll(kept);
        return log;
    }

    public Path file() {
        return file;
    }

    public void write(Map<String, Object> record) throws IOException {
        records.add(record);
        out.write(JSON.writeValueAsString(record));
        out.write('\n');
        out.flush();
    }

    /** Every record of this run so far (kept ones included), oldest first. */
    public List<Map<String, Object>> records() {
        return records;
    }

    @Override
    public void close() throws IOException {
        out.close();
    }
}
