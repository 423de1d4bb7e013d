package dev.distillery.trainer.demo;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.io.AtomicFileWriter;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.TextGenerator;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.distill.DistillConfig;
import dev.distillery.trainer.distill.DistillRun;
import dev.distillery.trainer.io.FolderLock;
import dev.distillery.trainer.report.Curves;
import dev.distillery.trainer.report.MetricsLog;
import dev.distillery.trainer.teacher.LanguageModelTraining;
import dev.distillery.trainer.teacher.LogitDump;
import dev.distillery.trainer.tokenizer.CorpusTokenization;

/**
 * The end-to-end demo on real text: tokenize, train a teacher, dump its top-k logits, distil a
 * student, train the same student on hard labels only with the same steps and data, and report
 * teacher vs student vs baseline on held-out text. Every stage is the same code the separate
 * commands run.
 */
public final class Demo {

    /** Sizes of one demo run. */
    public record Settings(int vocab, int context, int batch, Gpt2Config teacher, int teacherSteps, double teacherLr,
                           int studentLayers, int studentChannels, int studentHeads, int studentSteps, double studentLr,
                           int topK, double alpha, double temperature, int evalBatches) {

        /** Under 5 minutes on 2 cores. */
        public static Settings quick() {
            return new Settings(1024, 64, 16, new Gpt2Config(1024, 64, 4, 192, 6), 600, 2e-3,
                    2, 96, 4, 400, 3e-3, 32, 0.5, 1.0, 16);
        }

        /** The full sizes (teacher 6 layers × 384, student 2 × 128); about 40 minutes on 2 cores. */
        public static Settings full() {
            return new Settings(2048, 128, 16, new Gpt2Config(2048, 128, 6, 384, 6), 1000, 1e-3,
                    2, 128, 4, 1500, 2e-3, 64, 0.5, 1.0, 32);
        }
    }

    /** One row of the final table. */
    public record Row(String model, long parameters, long bytesOnDisk, double perplexity, double kl, double agreement, double generationTokensPerSecond) {
    }

    private Demo() {
    }

    public static List<Row> run(Settings s, Corpus corpus, Path work, long seed, Kernels kernels, PrintWriter out, PrintWriter err) throws IOException {
        long t0 = System.nanoTime();
        try (FolderLock lock = FolderLock.acquire(work, "--work")) {
            prepare(work);
            return stages(s, corpus, work, seed, kernels, out, err, t0);
        }
    }

    private static List<Row> stages(Settings s, Corpus corpus, Path work, long seed, Kernels kernels, PrintWriter out, PrintWriter err,
                                    long t0) throws IOException {
        out.printf("== 1/6 tokenize: %s (%,d characters), byte-level BPE to %d tokens%n", corpus.name(), corpus.text().length(), s.vocab());
        out.flush();
        CorpusTokenization.Result data = CorpusTokenization.run(corpus, s.vocab(), 0.1, work.resolve("data"));
        out.printf("   %,d training tokens, %,d held-out tokens (%s)%n", data.trainTokens(), data.valTokens(), elapsed(t0));

        out.printf("== 2/6 teacher: %d layers x %d channels, %d steps of %d x %d tokens%n", s.teacher().layers(), s.teacher().channels(),
                s.teacherSteps(), s.batch(), s.context());
        out.flush();
        var teacherOpts = new LanguageModelTraining.Options(data.train(), data.val(), work.resolve("teacher"), data.tokenizerFile(),
                s.teacher(), s.batch(), s.teacherSteps(), s.teacherLr(), s.teacherLr() / 10, Math.max(1, s.teacherSteps() / 20), 0.1, 1.0,
                0, s.evalBatches(), 0, seed);
        LanguageModelTraining.Result teacher = LanguageModelTraining.run(teacherOpts, kernels, false, out, err);
        out.printf("   (%s)%n", elapsed(t0));

        out.printf("== 3/6 dump the teacher's top-%d logits (with the full logsumexp) for the training and held-out text%n", s.topK());
        out.flush();
        Path trainShards = work.resolve("shards/train"), valShards = work.resolve("shards/val");
        LogitDump.run(new LogitDump.Options(teacher.checkpoint(), data.train(), trainShards, TeacherTargets.Kind.TOP_K, s.topK(), DType.BF16,
                s.temperature(), s.context(), 2048, s.batch(), 0, seed, "distillery-bpe-" + s.vocab(), data.tokenizerFile(), false), kernels, out, err);
        LogitDump.run(new LogitDump.Options(teacher.checkpoint(), data.val(), valShards, TeacherTargets.Kind.TOP_K, s.topK(), DType.BF16,
                s.temperature(), s.context(), 2048, s.batch(), 0, seed, "distillery-bpe-" + s.vocab(), data.tokenizerFile(), false), kernels, out, err);
        out.printf("   (%s)%n", elapsed(t0));

        out.printf("== 4/6 distil the student (%d layers x %d channels): alpha %.2f, T %.1f, forward KL with a tail bucket, %d steps%n",
                s.studentLayers(), s.studentChannels(), s.alpha(), s.temperature(), s.studentSteps());
        out.flush();
        DistillRun.Result distilled = DistillRun.run(studentConfig(s, work, "student-distilled", s.alpha(), seed, trainShards, valShards, data.tokenizerFile()),
                kernels, false, out, err);
        out.printf("   (%s)%n", elapsed(t0));

        out.printf("== 5/6 baseline: the same student, same steps and data, hard labels only (alpha 1)%n");
        out.flush();
        DistillRun.Result baseline = DistillRun.run(studentConfig(s, work, "student-baseline", 1.0, seed, trainShards, valShards, data.tokenizerFile()),
                kernels, false, out, err);
        out.printf("   (%s)%n", elapsed(t0));

        out.println("== 6/6 report");
        out.flush();
        List<Row> rows = new ArrayList<>();
        rows.add(row("teacher", teacher.checkpoint(), valShards, s, kernels));
        rows.add(row("student, distilled", distilled.lastCheckpoint(), valShards, s, kernels));
        rows.add(row("student, hard labels only", baseline.lastCheckpoint(), valShards, s, kernels));
        String table = table(rows);
        out.println(table);
        Row d = rows.get(1), b = rows.get(2);
        String verdict = d.perplexity() < b.perplexity()
                ? String.format(Locale.ROOT, "The distilled student beats the baseline on held-out perplexity: %.3f vs %.3f (%.1f%% lower).",
                d.perplexity(), b.perplexity(), 100 * (1 - d.perplexity() / b.perplexity()))
                : String.format(Locale.ROOT, "The distilled student does NOT beat the baseline on held-out perplexity: %.3f vs %.3f.",
                d.perplexity(), b.perplexity());
        out.println(verdict);
        writeCurves(work, distilled.outDir(), baseline.outDir());
        String report = "# Distillery demo\n\n" + String.format(Locale.ROOT, "Corpus: %s, %,d training and %,d held-out tokens, vocab %d. Took %s.%n%n",
                corpus.name(), data.trainTokens(), data.valTokens(), s.vocab(), elapsed(t0)) + table + "\n" + verdict + "\n";
        byte[] bytes = report.getBytes(StandardCharsets.UTF_8);
        AtomicFileWriter.write(work.resolve("report.md"), ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(bytes)));
        out.printf("report: %s; curves: %s; took %s%n", work.resolve("report.md"), work.resolve("curves.png"), elapsed(t0));
        return rows;
    }

    private static final String MARKER = ".distillery-demo";

    /** An empty or earlier demo folder is (re)used; anything else is refused rather than overwritten. */
    private static void prepare(Path work) throws IOException {
        if (Files.isDirectory(work)) {
            if (FolderLock.holdsFiles(work) && !Files.exists(work.resolve(MARKER))) {
                throw new IOException(work + " exists and is not a demo folder (no " + MARKER + "); choose another --work");
            }
            Path lockFile = work.resolve(FolderLock.FILE);
            try (var s = Files.walk(work)) {
                for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) {
                    if (!p.equals(work) && !p.equals(lockFile)) Files.delete(p);
                }
            }
        }
        Files.createDirectories(work);
        Files.writeString(work.resolve(MARKER), "a Distillery demo folder: the next demo run clears it\n");
    }

    private static DistillConfig studentConfig(Settings s, Path work, String name, double alpha, long seed, Path train, Path val, Path tokenizer) {
        return new DistillConfig(train.toString(), val.toString(), work.resolve(name).toString(), tokenizer.toString(), null,
                DistillConfig.Student.gpt2(s.studentLayers(), s.studentChannels(), s.studentHeads(), s.context(), s.vocab()),
                s.studentSteps(), s.batch(), 1, s.studentLr(), s.studentLr() / 10, Math.max(1, s.studentSteps() / 20), 0.1, null, null, 1.0,
                new DistillConfig.Loss(s.temperature(), alpha, "forward_kl", null, true, "tail", null, "mean", null),
                Math.max(1, s.studentSteps() / 4), 0, 0, 1, seed + 1, 0, 2, true, null, null, null, null, null, null, null, null);   // every held-out sequence, as the report's table
    }

    private static Row row(String name, Path checkpoint, Path valShards, Settings s, Kernels kernels) throws IOException {
        try (LanguageModel m = ModelFiles.read(checkpoint, kernels); TeacherShards shards = TeacherShards.open(valShards, false);
             TrainingSession session = new TrainingSession(m, kernels, AdamW.Config.defaults(), LearningRateSchedule.constant(1e-3), 0,
                     s.batch(), shards.manifest().seqLen())) {
            DistillRun.Evaluation e = DistillRun.evaluate(session, shards, s.batch(), Integer.MAX_VALUE,
                    ChunkedLinearDistillLoss.chunkRowsFor(32L << 20, m.vocabSize()), 0);
            double tps;
            try (TextGenerator gen = new TextGenerator(m, kernels)) {
                int n = Math.min(64, m.contextLength() - 1);
                gen.generate(new int[]{0}, 8, 1.0, 0, new Rng(1)); // warm up the JIT
                long t0 = System.nanoTime();
                gen.generate(new int[]{0}, n, 1.0, 0, new Rng(2));
                tps = n / ((System.nanoTime() - t0) / 1e9);
            }
            return new Row(name, m.parameters().parameterCount(), Files.size(checkpoint.resolve(ModelFiles.MODEL)), e.perplexity(), e.divergence(),
                    e.agreement(), tps);
        }
    }

    public static String table(List<Row> rows) {
        StringBuilder sb = new StringBuilder();
        sb.append("| model | parameters | bytes on disk | held-out perplexity | KL to teacher (top-k + tail) | top-1 agreement | generation tokens/s |\n");
        sb.append("|---|---:|---:|---:|---:|---:|---:|\n");
        for (Row r : rows) {
            sb.append(String.format(Locale.ROOT, "| %s | %,d | %,d | %.3f | %.4f | %.1f%% | %.0f |%n", r.model(), r.parameters(),
                    r.bytesOnDisk(), r.perplexity(), r.kl(), 100 * r.agreement(), r.generationTokensPerSecond()));
        }
        return sb.toString();
    }

    private static void writeCurves(Path work, Path distilled, Path baseline) throws IOException {
        List<Map<String, Object>> d, b;
        try (MetricsLog ld = MetricsLog.open(distilled.resolve("metrics.jsonl"), Integer.MAX_VALUE);
             MetricsLog lb = MetricsLog.open(baseline.resolve("metrics.jsonl"), Integer.MAX_VALUE)) {
            d = ld.records();
            b = lb.records();
        }
        Curves.write(work.resolve("curves.png"), "demo",
                List.of(Curves.Series.of("distilled: hard-label CE", d, "train", "ce"), Curves.Series.of("baseline: hard-label CE", b, "train", "ce")),
                List.of(Curves.Series.of("distilled", d, "eval", "perplexity"), Curves.Series.of("baseline", b, "eval", "perplexity")));
    }

    private static String elapsed(long t0) {
        return String.format(Locale.ROOT, "%.1f s elapsed", (System.nanoTime() - t0) / 1e9);
    }
}
