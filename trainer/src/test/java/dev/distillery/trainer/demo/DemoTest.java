package dev.distillery.trainer.demo;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.report.MetricsLog;
import dev.distillery.trainer.report.ModelComparison;

/** The whole demo pipeline at toy sizes: every stage runs and the report has its three rows. */
class DemoTest {

    private static final Demo.Settings TINY = new Demo.Settings(300, 16, 8, new Gpt2Config(300, 16, 2, 32, 2), 40, 3e-3,
            1, 16, 2, 30, 3e-3, 8, 0.5, 1.0, 4);

    private static Corpus slice() throws IOException {
        return new Corpus("slice", Corpus.bundled().text().substring(0, 60_000));
    }

    @Test
    void tinyDemoRunsEveryStageAndReports(@TempDir Path work) throws IOException {
        StringWriter out = new StringWriter();
        Demo.Outcome o;
        try (CpuKernels k = new CpuKernels(2, "auto")) {
            o = Demo.run(TINY, slice(), work, 1, k, new PrintWriter(out, true), new PrintWriter(new StringWriter(), true));
        }
        List<ModelComparison.Row> rows = o.models();
        assertEquals(3, rows.size());
        for (ModelComparison.Row r : rows) {
            assertTrue(Double.isFinite(r.perplexity()) && r.perplexity() > 1 && r.perplexity() < 300, r.toString());
            assertTrue(r.bytesOnDisk() > 4 * r.parameters(), r.toString());
            assertTrue(r.generationTokensPerSecond() > 0, r.toString());
            assertTrue(Double.isFinite(r.kl()) && r.agreement() > 0, r.toString());
        }
        assertEquals(0, rows.get(0).kl(), 1e-6, "the teacher against itself");
        assertTrue(rows.get(0).parameters() > rows.get(1).parameters());
        String report = Files.readString(work.resolve("report.md"));
        assertTrue(report.contains("| teacher |") && report.contains("| student, distilled |") && report.contains("hard labels only"), report);
        assertTrue(Files.size(work.resolve("curves.png")) > 1000 && Files.size(work.resolve("compare/compare.png")) > 1000);
        for (String p : new String[]{"data/tokenizer.json", "shards/train/manifest.json", "shards/val/manifest.json",
                "student-distilled/metrics.jsonl", "student-baseline/checkpoints/latest", "compare/compare.md"}) {
            assertTrue(Files.exists(work.resolve(p)), p);
        }
        assertTrue(out.toString().contains("== 6/6 report"), out.toString());
    }

    /**
     * --methods at toy sizes: every method trains a student that the report lists, with its time,
     * beside the baseline; the loss each optimises falls, and each writes text the teacher finds
     * likelier than the baseline's (the teacher's perplexity of samples from held-out prompts).
     * Held-out perplexity does not separate at these sizes, where the teacher itself is barely
     * better than the students; the quick sizes' table in docs/PERFORMANCE.md does.
     */
    @Test
    void tinyDemoWithMethodsRunsEveryMethod(@TempDir Path work) throws IOException {
        StringWriter out = new StringWriter();
        Demo.Outcome o;
        try (CpuKernels k = new CpuKernels(2, "auto")) {
            o = Demo.run(TINY, slice(), work, 1, true, k, new PrintWriter(out, true), new PrintWriter(new StringWriter(), true));
        }
        assertEquals(3 + 6, o.models().size());
        assertEquals(2 + 6, o.methods().size());
        for (Demo.MethodRow r : o.methods()) {
            assertTrue(Double.isFinite(r.model().perplexity()) && r.model().perplexity() < 300 && r.trainSeconds() > 0, r.toString());
        }
        String report = Files.readString(work.resolve("report.md"));
        for (String m : new String[]{"| soft targets, dense, teacher in the process |", "| + hidden states (cosine, pairs [[1, 2]]) |",
                "| two teachers (mixture", "| on-policy (GKD", "| born-again (the teacher's size", "| progressive (teacher -> assistant of 1 x 24"}) {
            assertTrue(report.contains(m), m + " in " + report);
        }
        assertTrue(out.toString().contains("== 7/7 report"), out.toString());
        double baseline = o.baseline().samplePerplexity();
        for (Demo.MethodRow r : o.methods().subList(2, o.methods().size())) {
            assertTrue(r.model().samplePerplexity() < baseline, r.method() + ": " + r.model().samplePerplexity() + " against the baseline's " + baseline);
        }
        for (String run : new String[]{"method-dense", "method-hidden", "method-two-teachers", "method-on-policy", "method-born-again",
                "method-progressive-assistant", "method-progressive-student"}) {
            lossFalls(work.resolve(run));
        }
    }

    /**
     * The mean loss of the last quarter of a run's steps is below that of the first quarter, for
     * on-policy steps and the others apart (each optimises its own loss).
     */
    private static void lossFalls(Path run) throws IOException {
        for (boolean onPolicy : new boolean[]{false, true}) {
            List<Double> losses = new java.util.ArrayList<>();
            try (MetricsLog log = MetricsLog.open(run.resolve("metrics.jsonl"), Integer.MAX_VALUE)) {
                for (Map<String, Object> r : log.records()) {
                    if ("train".equals(r.get("kind")) && (r.get("on_policy_batches") instanceof Number b && b.intValue() > 0) == onPolicy) {
                        losses.add(((Number) r.get("loss")).doubleValue());
                    }
                }
            }
            if (losses.isEmpty() && onPolicy) continue;
            int q = Math.max(1, losses.size() / 4);
            double first = losses.subList(0, q).stream().mapToDouble(Double::doubleValue).average().orElseThrow();
            double last = losses.subList(losses.size() - q, losses.size()).stream().mapToDouble(Double::doubleValue).average().orElseThrow();
            assertTrue(last < first, run.getFileName() + (onPolicy ? " on-policy" : "") + " steps: loss " + first + " -> " + last);
        }
    }
}
