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
import dev.distillery.runtime.io.AtomicFileWriter;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.distill.DistillConfig;
import dev.distillery.trainer.distill.DistillPipeline;
import dev.distillery.trainer.distill.DistillRun;
import dev.distillery.trainer.io.FolderLock;
import dev.distillery.trainer.report.Curves;
import dev.distillery.trainer.report.MetricsLog;
import dev.distillery.trainer.report.ModelComparison;
import dev.distillery.trainer.teacher.LanguageModelTraining;
import dev.distillery.trainer.teacher.LogitDump;
import dev.distillery.trainer.tokenizer.CorpusTokenization;

/**
 * The end-to-end demo on real text: tokenize, train a teacher, dump its top-k logits, distil a
 * student, train the same student on hard labels only with the same steps and data, and report
 * teacher vs student vs baseline on held-out text ({@code eval --compare}'s table). With
 * {@code methods}, the methods beyond stored soft targets too, each at the student's steps. Every
 * stage is the same code the separate commands run.
 */
public final class Demo {

    /** Sizes of one demo run. */
    public record Settings(int vocab, int context, int batch, Gpt2Config teacher, int teacherSteps, double teacherLr,
                           int studentLayers, int studentChannels, int studentHeads, int studentSteps, double studentLr,
                           int topK, double alpha, double temperature, int evalBatches) {

        /**
         * Under 5 minutes on 2 cores. Peak learning rates 1e-3 (teacher) and 1.5e-3 (students): at
         * 2e-3 the teacher's held-out perplexity after 600 steps depended on the seed by a factor of
         * two (the step at which it leaves a plateau near loss 5.3 varies), in PyTorch as here, and
         * at 3e-3 the students ended 40–70% above where 1.5e-3 takes them (docs/PERFORMANCE.md, "The demo").
         */
        public static Settings quick() {
            return new Settings(1024, 64, 16, new Gpt2Config(1024, 64, 4, 192, 6), 600, 1e-3,
                    2, 96, 4, 400, 1.5e-3, 32, 0.5, 1.0, 16);
        }

        /** The full sizes (teacher 6 layers × 384, student 2 × 128); about 40 minutes on 2 cores. */
        public static Settings full() {
            return new Settings(2048, 128, 16, new Gpt2Config(2048, 128, 6, 384, 6), 1000, 1e-3,
                    2, 128, 4, 1500, 2e-3, 64, 0.5, 1.0, 32);
        }
    }

    private Demo() {
    }

    /** One row of the methods table: a model of the comparison and the time its training took. */
    public record MethodRow(String method, ModelComparison.Row model, double trainSeconds) {
    }

    /** What a demo run measured: every model side by side, and with {@code --methods} each method's row. */
    public record Outcome(List<ModelComparison.Row> models, List<MethodRow> methods) {

        /** The distilled student's row (the second; the teacher is the first, the baseline the third). */
        public ModelComparison.Row distilled() {
            return models.get(1);
        }

        public ModelComparison.Row baseline() {
            return models.get(2);
        }
    }

    public static Outcome run(Settings s, Corpus corpus, Path work, long seed, Kernels kernels, PrintWriter out, PrintWriter err) throws IOException {
        return run(s, corpus, work, seed, false, kernels, out, err);
    }

    /** @param methods also run the distillation methods beyond stored soft targets, each at the student's steps */
    public static Outcome run(Settings s, Corpus corpus, Path work, long seed, boolean methods, Kernels kernels, PrintWriter out, PrintWriter err)
            throws IOException {
        long t0 = System.nanoTime();
        try (FolderLock lock = FolderLock.acquire(work, "--work")) {
            prepare(work);
            return stages(s, corpus, work, seed, methods, kernels, out, err, t0);
        }
    }

    private static Outcome stages(Settings s, Corpus corpus, Path work, long seed, boolean methods, Kernels kernels, PrintWriter out, PrintWriter err,
                                  long t0) throws IOException {
        int total = methods ? 7 : 6;
        out.printf("== 1/%d tokenize: %s (%,d characters), byte-level BPE to %d tokens%n", total, corpus.name(), corpus.text().length(), s.vocab());
        out.flush();
        CorpusTokenization.Result data = CorpusTokenization.run(corpus, s.vocab(), 0.1, work.resolve("data"));
        out.printf("   %,d training tokens, %,d held-out tokens (%s)%n", data.trainTokens(), data.valTokens(), elapsed(t0));

        out.printf("== 2/%d teacher: %d layers x %d channels, %d steps of %d x %d tokens%n", total, s.teacher().layers(), s.teacher().channels(),
                s.teacherSteps(), s.batch(), s.context());
        out.flush();
        LanguageModelTraining.Result teacher = trainTeacher(s, data, work.resolve("teacher"), seed, kernels, out, err);
        out.printf("   (%s)%n", elapsed(t0));

        out.printf("== 3/%d dump the teacher's top-%d logits (with the full logsumexp) for the training and held-out text%n", total, s.topK());
        out.flush();
        Path trainShards = work.resolve("shards/train"), valShards = work.resolve("shards/val");
        LogitDump.run(new LogitDump.Options(teacher.checkpoint(), data.train(), trainShards, TeacherTargets.Kind.TOP_K, s.topK(), DType.BF16,
                s.temperature(), s.context(), 2048, s.batch(), 0, seed, "distillery-bpe-" + s.vocab(), data.tokenizerFile(), false), kernels, out, err);
        LogitDump.run(new LogitDump.Options(teacher.checkpoint(), data.val(), valShards, TeacherTargets.Kind.TOP_K, s.topK(), DType.BF16,
                s.temperature(), s.context(), 2048, s.batch(), 0, seed, "distillery-bpe-" + s.vocab(), data.tokenizerFile(), false), kernels, out, err);
        out.printf("   (%s)%n", elapsed(t0));

        out.printf("== 4/%d distil the student (%d layers x %d channels): alpha %.2f, T %.1f, forward KL with a tail bucket, %d steps%n",
                total, s.studentLayers(), s.studentChannels(), s.alpha(), s.temperature(), s.studentSteps());
        out.flush();
        long d0 = System.nanoTime();
        DistillRun.Result distilled = DistillRun.run(studentConfig(s, work, "student-distilled", s.alpha(), seed, trainShards, valShards, data.tokenizerFile()),
                kernels, false, out, err);
        double distilledSeconds = seconds(d0);
        out.printf("   (%s)%n", elapsed(t0));

        out.printf("== 5/%d baseline: the same student, same steps and data, hard labels only (alpha 1)%n", total);
        out.flush();
        long b0 = System.nanoTime();
        DistillRun.Result baseline = DistillRun.run(studentConfig(s, work, "student-baseline", 1.0, seed, trainShards, valShards, data.tokenizerFile()),
                kernels, false, out, err);
        double baselineSeconds = seconds(b0);
        out.printf("   (%s)%n", elapsed(t0));

        List<String> names = new ArrayList<>(List.of("teacher", "student, distilled", "student, hard labels only"));
        List<Path> models = new ArrayList<>(List.of(distilled.lastCheckpoint(), baseline.lastCheckpoint()));
        List<Double> times = new ArrayList<>(List.of(distilledSeconds, baselineSeconds));
        if (methods) {
            out.printf("== 6/%d methods beyond stored soft targets, each %d student steps on the same windows, the teacher run in the process%n",
                    total, s.studentSteps());
            out.flush();
            for (Method m : methods(s, data, teacher.checkpoint(), work, seed, kernels, out, err)) {
                names.add(m.name());
                models.add(m.checkpoint());
                times.add(m.seconds());
                out.printf("   %s (%s)%n", m.name(), elapsed(t0));
                out.flush();
            }
        }

        out.printf("== %d/%d report: every model on the held-out text, the teacher run in the process (eval --compare)%n", total, total);
        out.flush();
        List<ModelComparison.Row> compared = ModelComparison.run(models, data.val(), teacher.checkpoint(), s.batch(), Integer.MAX_VALUE, s.context(),
                64, kernels, err);
        List<ModelComparison.Row> rows = new ArrayList<>();
        for (int i = 0; i < compared.size(); i++) rows.add(compared.get(i).withName(names.get(i)));
        ModelComparison.write(work.resolve("compare"), rows);
        String table = ModelComparison.markdown(rows);
        out.println(table);
        ModelComparison.Row d = rows.get(1), b = rows.get(2);
        String verdict = d.perplexity() < b.perplexity()
                ? String.format(Locale.ROOT, "The distilled student beats the baseline on held-out perplexity: %.3f vs %.3f (%.1f%% lower).",
                d.perplexity(), b.perplexity(), 100 * (1 - d.perplexity() / b.perplexity()))
                : String.format(Locale.ROOT, "The distilled student does NOT beat the baseline on held-out perplexity: %.3f vs %.3f.",
                d.perplexity(), b.perplexity());
        out.println(verdict);
        List<MethodRow> methodRows = new ArrayList<>();
        String methodTable = "";
        if (methods) {
            for (int i = 1; i < rows.size(); i++) methodRows.add(new MethodRow(rows.get(i).name(), rows.get(i), times.get(i - 1)));
            methodTable = methodTable(methodRows, b);
            out.println(methodTable);
        }
        writeCurves(work, distilled.outDir(), baseline.outDir());
        String report = "# Distillery demo\n\n" + String.format(Locale.ROOT, "Corpus: %s, %,d training and %,d held-out tokens, vocab %d. Took %s.%n%n",
                corpus.name(), data.trainTokens(), data.valTokens(), s.vocab(), elapsed(t0)) + table + "\n" + verdict + "\n"
                + (methods ? "\n" + methodTable : "");
        byte[] bytes = report.getBytes(StandardCharsets.UTF_8);
        AtomicFileWriter.write(work.resolve("report.md"), ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(bytes)));
        out.printf("report: %s; chart: %s; curves: %s; took %s%n", work.resolve("report.md"), work.resolve("compare/compare.png"),
                work.resolve("curves.png"), elapsed(t0));
        return new Outcome(rows, methodRows);
    }

    private static LanguageModelTraining.Result trainTeacher(Settings s, CorpusTokenization.Result data, Path out, long seed, Kernels kernels,
                                                             PrintWriter o, PrintWriter err) throws IOException {
        var opts = new LanguageModelTraining.Options(data.train(), data.val(), out, data.tokenizerFile(), s.teacher(), s.batch(), s.teacherSteps(),
                s.teacherLr(), s.teacherLr() / 10, Math.max(1, s.teacherSteps() / 20), 0.1, 1.0, 0, s.evalBatches(), 0, seed, false);
        return LanguageModelTraining.run(opts, kernels, false, o, err);
    }

    /** A method's student: its name, its last checkpoint, the seconds its training took (with any teacher it needed). */
    private record Method(String name, Path checkpoint, double seconds) {
    }

    /**
     * The methods beyond stored soft targets, each the student of the demo (but born-again) trained
     * for the student's steps on the training windows with the teacher run in the process: dense
     * soft targets (the base of the rest), plus hidden states, two teachers, on-policy, born-again
     * and progressive.
     */
    private static List<Method> methods(Settings s, CorpusTokenization.Result data, Path teacher, Path work, long seed, Kernels kernels,
                                        PrintWriter out, PrintWriter err) throws IOException {
        List<Method> done = new ArrayList<>();
        DistillConfig.Student student = DistillConfig.Student.gpt2(s.studentLayers(), s.studentChannels(), s.studentHeads(), s.context(), s.vocab());
        done.add(method("soft targets, dense, teacher in the process", live(s, data, teacher, work.resolve("method-dense"), student, seed, null, null,
                null), kernels, out, err));
        int lt = s.teacher().layers(), ls = s.studentLayers();
        List<List<Integer>> pairs = new ArrayList<>();
        for (int i = 1; i <= ls; i++) pairs.add(List.of(i, Math.round((float) i * lt / ls)));
        done.add(method("+ hidden states (cosine, pairs " + pairs + ")", live(s, data, teacher, work.resolve("method-hidden"), student, seed, null,
                new DistillConfig.HiddenStates(pairs, "cosine", 1.0), null), kernels, out, err));
        long t0 = System.nanoTime();
        Path second = trainTeacher(s, data, work.resolve("teacher-2"), seed + 7, kernels, out, err).checkpoint();
        double secondSeconds = seconds(t0);
        Method two = method("two teachers (mixture; the second trained from another seed)", live(s, data, teacher, work.resolve("method-two-teachers"),
                student, seed, null, null, List.of(new DistillConfig.MoreTeacher(null, second.toString(), 1.0))), kernels, out, err);
        done.add(new Method(two.name(), two.checkpoint(), two.seconds() + secondSeconds));
        done.add(method("on-policy (GKD: half the batches the student's own text, forward KL)", live(s, data, teacher, work.resolve("method-on-policy"),
                student, seed, new DistillConfig.OnPolicy(0.5, Math.max(1, s.context() / 4), 1.0, null, null), null, null), kernels, out, err));
        Gpt2Config tc = s.teacher();
        done.add(method("born-again (the teacher's size, from the teacher)", live(s, data, teacher, work.resolve("method-born-again"),
                DistillConfig.Student.gpt2(tc.layers(), tc.channels(), tc.heads(), s.context(), s.vocab()), seed, null, null, null), kernels, out, err));
        int mid = (tc.channels() + s.studentChannels()) / 2 / s.studentHeads() * s.studentHeads();
        DistillConfig assistant = live(s, data, teacher, work.resolve("method-progressive-assistant"),
                DistillConfig.Student.gpt2(Math.max(ls, (lt + ls) / 2), mid, s.studentHeads(), s.context(), s.vocab()), seed, null, null, null);
        DistillConfig last = live(s, data, teacher, work.resolve("method-progressive-student"), student, seed, null, null, null);
        long p0 = System.nanoTime();
        List<DistillRun.Result> stages = DistillPipeline.run(List.of(assistant, last), kernels, false, out, err);
        done.add(new Method("progressive (teacher -> assistant of " + assistant.student().layers() + " x " + mid + " -> student)",
                stages.getLast().lastCheckpoint(), seconds(p0)));
        return done;
    }

    private static Method method(String name, DistillConfig c, Kernels kernels, PrintWriter out, PrintWriter err) throws IOException {
        out.println("   -- " + name);
        out.flush();
        long t0 = System.nanoTime();
        DistillRun.Result r = DistillRun.run(c, kernels, false, out, err);
        return new Method(name, r.lastCheckpoint(), seconds(t0));
    }

    /** A student config taught by {@code teacher} run in the process on the demo's token files, with the demo's loss. */
    private static DistillConfig live(Settings s, CorpusTokenization.Result data, Path teacher, Path out, DistillConfig.Student student, long seed,
                                      DistillConfig.OnPolicy onPolicy, DistillConfig.HiddenStates hidden, List<DistillConfig.MoreTeacher> more) {
        return new DistillConfig(null, null, out.toString(), data.tokenizerFile().toString(), null, student, s.studentSteps(), s.batch(), 1,
                s.studentLr(), s.studentLr() / 10, Math.max(1, s.studentSteps() / 20), 0.1, null, null, 1.0,
                new DistillConfig.Loss(s.temperature(), s.alpha(), "forward_kl", null, true, "tail", null, "mean", null), 0, 0, 0, 1, seed + 1, 0, 2,
                true, null, null, new DistillConfig.TeacherModel(teacher.toString(), data.train().toString(), null, s.context()), onPolicy, hidden, more,
                null, more == null ? null : "mixture", null, null);
    }

    /** Each method's held-out perplexity against the baseline's, its KL and agreement, and its training time. */
    public static String methodTable(List<MethodRow> rows, ModelComparison.Row baseline) {
        StringBuilder b = new StringBuilder("| method | parameters | held-out perplexity | against the baseline | KL to teacher | top-1 agreement "
                + "| teacher's perplexity of its samples | training time |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (MethodRow r : rows) {
            ModelComparison.Row m = r.model();
            b.append(String.format(Locale.ROOT, "| %s | %,d | %.3f | %+.1f%% | %.4f | %.1f%% | %.2f | %.0f s |%n", r.method(), m.parameters(),
                    m.perplexity(), 100 * (m.perplexity() / baseline.perplexity() - 1), m.kl(), 100 * m.agreement(), m.samplePerplexity(),
                    r.trainSeconds()));
        }
        return b.toString();
    }

    private static double seconds(long t0) {
        return (System.nanoTime() - t0) / 1e9;
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
                Math.max(1, s.studentSteps() / 4), 0, 0, 1, seed + 1, 0, 2, true, null, null, null, null, null, null, null, null, null, null);   // every held-out sequence, as the report's table
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
