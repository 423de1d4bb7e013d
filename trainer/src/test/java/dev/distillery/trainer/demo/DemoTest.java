package dev.distillery.trainer.demo;

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

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.trainer.corpus.Corpus;

/** The whole demo pipeline at toy sizes: every stage runs and the report has its three rows. */
class DemoTest {

    @Test
    void tinyDemoRunsEveryStageAndReports(@TempDir Path work) throws IOException {
        Corpus corpus = new Corpus("slice", Corpus.bundled().text().substring(0, 60_000));
        Demo.Settings tiny = new Demo.Settings(300, 16, 8, new Gpt2Config(300, 16, 2, 32, 2), 40, 3e-3,
                1, 16, 2, 30, 3e-3, 8, 0.5, 1.0, 4);
        StringWriter out = new StringWriter();
        List<Demo.Row> rows;
        try (CpuKernels k = new CpuKernels(2, "auto")) {
            rows = Demo.run(tiny, corpus, work, 1, k, new PrintWriter(out, true), new PrintWriter(new StringWriter(), true));
        }
        assertEquals(3, rows.size());
        for (Demo.Row r : rows) {
            assertTrue(Double.isFinite(r.perplexity()) && r.perplexity() > 1 && r.perplexity() < 300, r.toString());
            assertTrue(r.bytesOnDisk() > 4 * r.parameters(), r.toString());
            assertTrue(r.generationTokensPerSecond() > 0, r.toString());
        }
        assertTrue(rows.get(0).parameters() > rows.get(1).parameters());
        String report = Files.readString(work.resolve("report.md"));
        assertTrue(report.contains("| teacher |") && report.contains("| student, distilled |") && report.contains("hard labels only"), report);
        assertTrue(Files.size(work.resolve("curves.png")) > 1000);
        for (String p : new String[]{"data/tokenizer.json", "shards/train/manifest.json", "shards/val/manifest.json",
                "student-distilled/metrics.jsonl", "student-baseline/checkpoints/latest"}) {
            assertTrue(Files.exists(work.resolve(p)), p);
        }
        assertTrue(out.toString().contains("== 6/6 report"), out.toString());
    }
}
