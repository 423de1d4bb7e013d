package dev.distillery.trainer.report;

import java.io.IOException;
import java.io.PrintWriter;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;

import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.distill.InProcessTeacher;
import dev.distillery.runtime.io.AtomicFileWriter;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.LanguageModelForward;
import dev.distillery.runtime.nn.TextGenerator;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.data.TokenWindows;
import dev.distillery.trainer.distill.DistillRun;
import dev.distillery.trainer.teacher.LanguageModelTraining;

/**
 * {@code eval --compare}: models side by side on one held-out token file. Per model: parameters
 * and bytes on disk; held-out perplexity (windows of seqLen + 1 tokens, as {@code eval --tokens});
 * with a teacher, the forward KL to it and top-1 agreement over windows of seqLen (the teacher run
 * in the process, as {@code distill} evaluates) and the teacher's perplexity of the model's own
 * samples ({@link #samplePerplexity}); greedy generation tokens/s through the KV cache
 * (at most context − 1 tokens, so that no window slides; {@link #generationRate});
 * and the process's peak resident memory while the model was evaluated (Linux: the high-water
 * mark is reset before each model).
 */
public final class ModelComparison {

    /**
     * One model's figures; kl, agreement and samplePerplexity are NaN without a teacher, peakRss −1
     * where it cannot be read.
     */
    public record Row(String name, long parameters, long bytesOnDisk, double perplexity, double kl, double agreement,
                      double samplePerplexity, double generationTokensPerSecond, long peakRss) {

        /** This row under another name (a report's label instead of the folder). */
        public Row withName(String label) {
            return new Row(label, parameters, bytesOnDisk, perplexity, kl, agreement, samplePerplexity, generationTokensPerSecond, peakRss);
        }
    }

    /** Held-out prompts the models continue for {@link #samplePerplexity}. */
    static final int SAMPLES = 32;
    static final long SAMPLE_SEED = 20_240_520;

    private ModelComparison() {
    }

    /**
     * @param teacher    a model folder, or null; listed first when given
     * @param seqLen     tokens per window; 0 = the shortest context among the models, at most 1024
     * @param generate   greedy tokens to time (at most each model's context − 1)
     */
    public static List<Row> run(List<Path> models, Path tokens, Path teacher, int batch, int maxBatches, int seqLen, int generate,
                                Kernels kernels, PrintWriter err) throws IOException {
        List<Path> all = new ArrayList<>();
        if (teacher != null) all.add(teacher);
        all.addAll(models);
        int t = seqLen;
        if (t == 0) {
            t = 1024;
            for (Path m : all) t = Math.min(t, ModelFiles.contextLength(m));
        }
        List<Row> rows = new ArrayList<>();
        try (LanguageModel teacherModel = teacher == null ? null : ModelFiles.readTeacher(teacher, kernels)) {
            for (Path m : all) {
                resetPeakRss();
                rows.add(row(m, tokens, teacherModel, batch, maxBatches, t, generate, kernels));
                Row r = rows.getLast();
                err.printf(Locale.ROOT, "compare: %s: perplexity %.3f%s, %.1f tokens/s%n", r.name(), r.perplexity(),
                        Double.isNaN(r.kl()) ? "" : String.format(Locale.ROOT, ", KL %.4f, top-1 agreement %.1f%%", r.kl(), 100 * r.agreement()),
                        r.generationTokensPerSecond());
                err.flush();
            }
        }
        return rows;
    }

    private static Row row(Path dir, Path tokens, LanguageModel teacher, int batch, int maxBatches, int t, int generate, Kernels kernels)
            throws IOException {
        try (LanguageModel m = ModelFiles.read(dir, kernels); TokenFile val = TokenFile.open(tokens, m.vocabSize(), "the model's")) {
            double ce = LanguageModelTraining.validationLoss(m, kernels, val, batch, t, maxBatches);
            double kl = Double.NaN, agreement = Double.NaN, samples = Double.NaN;
            if (teacher != null) {
                int chunk = ChunkedLinearDistillLoss.defaultChunkRows(Math.max(m.vocabSize(), teacher.vocabSize()));
                try (TokenWindows w = TokenWindows.open(tokens, t, teacher.vocabSize(), "the teacher's");
                     TrainingSession s = new TrainingSession(m, kernels, AdamW.Config.defaults(), LearningRateSchedule.constant(1e-3), 0,
                             Math.min(batch, w.sequences()), t);
                     InProcessTeacher live = new InProcessTeacher(teacher, kernels, chunk)) {
                    DistillRun.Evaluation e = DistillRun.evaluate(s, w, live, Math.min(batch, w.sequences()), maxBatches, chunk, 0);
                    kl = e.divergence();
                    agreement = e.agreement();
                }
                samples = samplePerplexity(m, teacher, val, t, kernels);
            }
            double rate;
            try (TextGenerator g = new TextGenerator(m, kernels)) {
                int n = Math.max(1, Math.min(generate, m.contextLength() - 1));   // within the context: every token through the cache
                rate = generationRate(g, new int[]{val.get(0)}, n);
            }
            return new Row(dir.toString(), m.parameters().parameterCount(), bytesOnDisk(dir), Math.exp(ce), kl, agreement, samples, rate, peakRss());
        }
    }

    /** Untimed passes of generation before the timed ones, for at least this long (and one pass). */
    static final long WARM_UP_NANOS = 1_000_000_000L;
    /** Timed passes for at least this long (and one pass; a large model's passes take seconds each); their median is the rate. */
    static final long TIMED_NANOS = 500_000_000L;

    /**
     * Greedy tokens per second through the KV cache: the median of timed passes of n tokens, after
     * untimed passes for {@link #WARM_UP_NANOS}. The JIT compiles the kernels over the first
     * second or so of passes, and the first model compared (the teacher) would pay for it: timed
     * after a single untimed pass it read several times slower than when timed again after its
     * students (docs/PERFORMANCE.md, the demo). The median leaves out a pass that met a collection.
     */
    static double generationRate(TextGenerator g, int[] prompt, int n) {
        long start = System.nanoTime();
        do {
            g.generate(prompt, n, 0, 0, new Rng(1));
        } while (System.nanoTime() - start < WARM_UP_NANOS);
        List<Double> rates = new ArrayList<>();
        start = System.nanoTime();
        while (rates.isEmpty() || System.nanoTime() - start < TIMED_NANOS) {
            long t0 = System.nanoTime();
            g.generate(prompt, n, 0, 0, new Rng(1));
            rates.add(n / ((System.nanoTime() - t0) / 1e9));
        }
        rates.sort(null);
        return rates.get(rates.size() / 2);
    }

    /**
     * The teacher's perplexity of the model's own text: {@link #SAMPLES} held-out prompts (the first
     * t/2 tokens of consecutive windows of {@code val}) are each continued by t − t/2 tokens sampled
     * from the model's whole distribution (temperature 1, one seeded generator per prompt, the same
     * for every model; the prompts decoded together), and the teacher scores the continuations: exp of its mean negative
     * log-likelihood per sampled token. Held-out perplexity scores the model on real text; this
     * scores the text the model writes, which is what on-policy distillation trains. NaN when the
     * model's vocabulary is larger than the teacher's (a sampled id it cannot score).
     */
    static double samplePerplexity(LanguageModel m, LanguageModel teacher, TokenFile val, int t, Kernels kernels) throws IOException {
        if (m.vocabSize() > teacher.vocabSize()) return Double.NaN;
        int prompt = t / 2, windows = (int) Math.min(SAMPLES, val.size() / t);
        if (windows < 1 || prompt < 1) return Double.NaN;
        try (TextGenerator g = new TextGenerator(m, kernels, windows); LanguageModelForward scorer = new LanguageModelForward(teacher, kernels, windows, t);
             Arena host = Arena.ofConfined()) {
            MemorySegment ids = host.allocate(4L * windows * t, 64);
            int[][] starts = new int[windows][prompt];
            int[] targets = new int[windows * t];
            Rng[] sampling = new Rng[windows];
            for (int b = 0; b < windows; b++) {
                val.read((long) b * t, prompt, starts[b]);
                sampling[b] = new Rng(SAMPLE_SEED + b);
            }
            int[][] seqs = g.generate(starts, t - prompt, 1.0, 0, sampling);   // the prompts decoded together
            for (int b = 0; b < windows; b++) {
                int[] seq = seqs[b];
                for (int p = 0; p < t; p++) {
                    ids.setAtIndex(ValueLayout.JAVA_INT, (long) b * t + p, seq[p]);
                    // position p predicts token p + 1: scored where that token was sampled
                    targets[b * t + p] = p >= prompt - 1 && p < t - 1 ? seq[p + 1] : DifferentiableOps.IGNORE_INDEX;
                }
            }
            return Math.exp(scorer.negativeLogLikelihood(ids, targets) / ((long) windows * (t - prompt)));
        }
    }

    /** The model's weights on disk: its *.safetensors but the trainer state. */
    private static long bytesOnDisk(Path dir) throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            long sum = 0;
            for (Path f : files.filter(f -> f.getFileName().toString().endsWith(".safetensors")
                    && !f.getFileName().toString().equals("trainer_state.safetensors")).toList()) {
                sum += Files.size(f);
            }
            return sum;
        }
    }

    private static void resetPeakRss() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
        } catch (IOException | UnsupportedOperationException | SecurityException e) {
            // not Linux, or not allowed: the peak then covers the process so far, and reads as such
        }
    }

    /** VmHWM of /proc/self/status in bytes, or −1. */
    private static long peakRss() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) return 1024 * Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        } catch (IOException | NumberFormatException e) {
            return -1;
        }
        return -1;
    }

    /** The table in markdown. */
    public static String markdown(List<Row> rows) {
        StringBuilder b = new StringBuilder("| model | parameters | bytes on disk | held-out perplexity | KL to teacher | top-1 agreement "
                + "| teacher's perplexity of its samples | generation tokens/s | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (Row r : rows) {
            b.append(String.format(Locale.ROOT, "| %s | %,d | %,d | %.3f | %s | %s | %s | %,.0f | %s |%n", r.name(), r.parameters(), r.bytesOnDisk(),
                    r.perplexity(), Double.isNaN(r.kl()) ? "–" : String.format(Locale.ROOT, "%.4f", r.kl()),
                    Double.isNaN(r.agreement()) ? "–" : String.format(Locale.ROOT, "%.1f%%", 100 * r.agreement()),
                    Double.isNaN(r.samplePerplexity()) ? "–" : String.format(Locale.ROOT, "%.2f", r.samplePerplexity()), r.generationTokensPerSecond(),
                    r.peakRss() < 0 ? "–" : String.format(Locale.ROOT, "%.0f MB", r.peakRss() / 1e6)));
        }
        return b.toString();
    }

    /** A folder's last name, or a label as it is (cut to fit under its bar). */
    private static String label(String name) {
        String l = name.contains("/") ? Path.of(name).getFileName().toString() : name;
        return l.length() > 26 ? l.substring(0, 25) + "…" : l;
    }

    /** compare.md and compare.png (held-out perplexity per model) in {@code dir}. */
    public static void write(Path dir, List<Row> rows) throws IOException {
        Files.createDirectories(dir);
        byte[] md = markdown(rows).getBytes(StandardCharsets.UTF_8);
        AtomicFileWriter.write(dir.resolve("compare.md"), ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(md)));
        System.setProperty("java.awt.headless", "true");
        CategoryChart chart = new CategoryChartBuilder().width(160 + 140 * rows.size()).height(480).title("held-out perplexity")
                .xAxisTitle("model").yAxisTitle("perplexity").build();
        chart.getStyler().setLegendVisible(false);
        chart.getStyler().setXAxisLabelRotation(20);
        chart.addSeries("perplexity", rows.stream().map(r -> label(r.name())).toList(),
                rows.stream().map(Row::perplexity).toList());
        byte[] png = BitmapEncoder.getBitmapBytes(chart, BitmapEncoder.BitmapFormat.PNG);
        AtomicFileWriter.write(dir.resolve("compare.png"), ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(png)));
    }
}
