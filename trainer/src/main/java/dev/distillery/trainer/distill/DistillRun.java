package dev.distillery.trainer.distill;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Evaluator;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.Llama;
import dev.distillery.runtime.nn.LlamaConfig;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.trainer.checkpoint.CheckpointStore;
import dev.distillery.trainer.data.ShardValues;
import dev.distillery.trainer.data.TeacherBatchStream;
import dev.distillery.trainer.data.TeacherManifest;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.io.FolderLock;
import dev.distillery.trainer.loop.TrainingLoop;
import dev.distillery.trainer.report.Curves;

/**
 * The distillation loop: teacher batches streamed from shards, the student's chunked LM head +
 * fused distillation loss, gradient accumulation, clipping, AdamW on a warmup + cosine schedule,
 * held-out evaluation, crash-safe checkpoints, exact resume, and a NaN/Inf guard that stops
 * before a bad update so the last checkpoint stays good.
 *
 * <p>Resume is exact on the CPU: the checkpoint holds the parameters, both AdamW moments and its
 * step, and the data position (epoch, batch); the data order is a function of the seed and the
 * kernels are bit-reproducible, so an interrupted and resumed run ends bit-identical to an
 * uninterrupted one (tested).
 */
public final class DistillRun {

    /**
     * One evaluation on held-out shards of {@code teacherKind}; {@code divergence} is the forward
     * KL the shards allow, named by {@link #divergenceName()}.
     */
    public record Evaluation(int step, double ce, double perplexity, double divergence, double agreement, long rows,
                             TeacherTargets.Kind teacherKind) {

        /**
         * What {@code divergence} measures, in words: the true KL only for dense shards. Top-k
         * shards give the KL between the teacher's top-k plus one tail bucket and the student's
         * mass on the same ids plus the rest, a lower bound on the true KL (merging categories
         * never raises a KL); sampled shards give the cross-entropy to the teacher's samples,
         * which is the KL plus the teacher's entropy, and that entropy is not in the shards.
         */
        public String divergenceName() {
            return switch (teacherKind) {
                case DENSE -> "KL to teacher";
                case TOP_K -> "KL to teacher over top-k + tail (a lower bound on the KL)";
                case SAMPLED -> "cross-entropy to teacher samples (not a KL)";
            };
        }

        /** The key {@link #divergenceName()} goes by in JSON: {@code kl}, {@code kl_topk_tail} or {@code ce_to_samples}. */
        public String divergenceKey() {
            return switch (teacherKind) {
                case DENSE -> "kl";
                case TOP_K -> "kl_topk_tail";
                case SAMPLED -> "ce_to_samples";
            };
        }
    }

    /** How a run ended. */
    public record Result(int step, Path outDir, Path lastCheckpoint, Evaluation lastEval, double tokensPerSecond,
                         double dataWaitFraction, long parameters) {
    }

    private DistillRun() {
    }

    public static Result run(DistillConfig cfg, Kernels kernels, boolean resume, PrintWriter out, PrintWriter err) throws IOException {
        return run(cfg, kernels, resume, 0, out, err);
    }

    /**
     * @param stopAfter stop (with a checkpoint) once this step is done, though the schedule runs to
     *                  {@code steps}: one way to split a run over jobs with time limits; 0 = run to the end
     */
    public static Result run(DistillConfig cfg, Kernels kernels, boolean resume, int stopAfter, PrintWriter out, PrintWriter err) throws IOException {
        Path outDir = Path.of(cfg.out());
        DistillOptions options = cfg.loss().options();
        DifferentiableOps.Reduction reduction = cfg.loss().reductionMode();
        requireReadable(cfg.tokenizer(), "tokenizer");   // before step 1, not at the first checkpoint
        requireReadable(cfg.initFrom(), "init_from");
        // every input is opened and checked before the run folder is made: bad input writes nothing
        try (TeacherShards shards = TeacherShards.open(Path.of(cfg.teacher()), cfg.verifyChecksums());
             TeacherShards evalShards = cfg.evalTeacher() == null ? null : TeacherShards.open(Path.of(cfg.evalTeacher()), cfg.verifyChecksums());
             FolderLock lock = checkInputsThenLock(cfg, shards, evalShards, outDir, out, err)) {
            int seqLen = shards.manifest().seqLen(), teacherVocab = shards.manifest().vocabSize();
            CheckpointStore store = CheckpointStore.open(outDir.resolve("checkpoints"));
            Optional<CheckpointStore.Checkpoint> from = TrainingLoop.resumeFrom(store, outDir, resume, "'out'");

            LanguageModel model = from.isPresent() ? ModelFiles.read(from.get().dir(), kernels)
                    : cfg.initFrom() != null ? initialStudent(cfg, kernels) : newStudent(cfg, teacherVocab, seqLen, kernels);
            try {
                if (model.vocabSize() < teacherVocab) {
                    throw new IOException("the student's vocabulary " + model.vocabSize() + " is smaller than the teacher's " + teacherVocab
                            + " (" + cfg.teacher() + "); a larger student vocabulary is allowed");
                }
                if (model.contextLength() < seqLen) {
                    throw new IOException("the student's context " + model.contextLength() + " is shorter than the shards' seq_len " + seqLen);
                }
                int chunkRows = cfg.loss().chunkRows() > 0 ? cfg.loss().chunkRows()
                        : ChunkedLinearDistillLoss.chunkRowsFor(32L << 20, model.vocabSize());
                AdamW.Config adam = new AdamW.Config(cfg.beta1(), cfg.beta2(), 1e-8, cfg.weightDecay());
                LearningRateSchedule schedule = new LearningRateSchedule(cfg.lr(), cfg.minLr(), cfg.warmupSteps(), cfg.steps());
                try (TrainingSession session = new TrainingSession(model, kernels, adam, schedule, cfg.gradClip(), cfg.batchSize(), seqLen)) {
                    int epoch = 0, batchIndex = 0;
                    Path lastCheckpoint = null;
                    if (from.isPresent()) {
                        Map<String, String> meta = TrainingLoop.restore(session, from.get(), out);
                        epoch = TrainingLoop.intMeta(from.get().dir(), meta, "data.epoch");
                        batchIndex = TrainingLoop.intMeta(from.get().dir(), meta, "data.batch");
                        lastCheckpoint = from.get().dir();
                        for (String change : cfg.changesSince(meta.get("config"))) out.println("resume: note: " + change);
                    }
                    return loop(cfg, kernels, session, shards, evalShards, store, options, reduction, chunkRows, epoch, batchIndex,
                            lastCheckpoint, stopAfter, outDir, out, err);
                }
            } finally {
                model.close();
            }
        }
    }

    /** The student read from init_from: all of it, or the init_layers blocks (an IllegalArgumentException names the key). */
    private static LanguageModel initialStudent(DistillConfig cfg, Kernels kernels) throws IOException {
        if (cfg.initLayers() == null) return ModelFiles.read(Path.of(cfg.initFrom()), kernels);
        try {
            return ModelFiles.readLayers(Path.of(cfg.initFrom()), cfg.initLayers().stream().mapToInt(Integer::intValue).toArray(), kernels);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("'init_layers': " + e.getMessage(), e);
        }
    }

    /** The run's {@code tokenizer} (its SHA-256 {@code actual}) against the one a manifest records, when it records one. */
    private static void requireTheShardsTokenizer(String tokenizer, String actual, TeacherManifest manifest, Path manifestFile) throws IOException {
        String recorded = manifest.tokenizerSha256();
        if (recorded == null) return;
        if (!actual.equals(recorded)) {
            throw new IOException("'tokenizer' " + tokenizer + " (sha256 " + actual + ") is not the tokenizer the teacher's ids were made with: "
                    + manifestFile + " records 'tokenizer_sha256' " + recorded + " ('" + manifest.tokenizer() + "')");
        }
    }

    /** The checks of the shards against each other, the loss and their values; then the run folder's lock. */
    private static FolderLock checkInputsThenLock(DistillConfig cfg, TeacherShards shards, TeacherShards evalShards, Path outDir,
                                                  PrintWriter out, PrintWriter err) throws IOException {
        int seqLen = shards.manifest().seqLen(), teacherVocab = shards.manifest().vocabSize();
        if (evalShards != null && (evalShards.manifest().vocabSize() != teacherVocab || evalShards.manifest().seqLen() != seqLen)) {
            throw new IOException(cfg.evalTeacher() + ": vocab_size " + evalShards.manifest().vocabSize() + " and seq_len "
                    + evalShards.manifest().seqLen() + " must equal the training shards' " + teacherVocab + " and " + seqLen
                    + " (" + cfg.teacher() + ")");
        }
        String trainTokenizer = shards.manifest().tokenizerSha256(), evalTokenizer = evalShards == null ? null : evalShards.manifest().tokenizerSha256();
        if (trainTokenizer != null && evalTokenizer != null && !trainTokenizer.equals(evalTokenizer)) {
            throw new IOException(Path.of(cfg.evalTeacher(), "manifest.json") + ": 'tokenizer_sha256' " + evalTokenizer
                    + " differs from the training shards' " + trainTokenizer + " (" + cfg.teacher() + "): their ids come from two tokenizers");
        }
        if (cfg.tokenizer() != null && (trainTokenizer != null || evalTokenizer != null)) {
            String actual = TeacherShards.sha256(Path.of(cfg.tokenizer()));
            requireTheShardsTokenizer(cfg.tokenizer(), actual, shards.manifest(), Path.of(cfg.teacher(), "manifest.json"));
            if (evalShards != null) requireTheShardsTokenizer(cfg.tokenizer(), actual, evalShards.manifest(), Path.of(cfg.evalTeacher(), "manifest.json"));
        }
        cfg.loss().requireCompatible(shards.layout(), Path.of(cfg.teacher(), "manifest.json"));
        if (shards.sequences() < cfg.batchSize()) {
            throw new IOException(cfg.teacher() + ": 'batch_size' " + cfg.batchSize() + " exceeds the " + shards.sequences() + " sequences in the shards");
        }
        if (cfg.checkValues()) {
            checkValues(shards, cfg.teacher(), out, err);
            if (evalShards != null) checkValues(evalShards, cfg.evalTeacher(), out, err);
        }
        if (cfg.loss().alpha() == 0 && shards.layout().kind() == TeacherTargets.Kind.TOP_K) {
            err.println("warning: alpha 0 on top-k shards: nothing but the tail bucket constrains the student outside the teacher's "
                    + "top-" + shards.manifest().k() + ", and the reported KL over top-k + tail can understate the true KL many times; "
                    + "a small alpha (0.1) or dense shards avoid both");
            err.flush();
        }
        return FolderLock.acquire(outDir, "'out'");
    }

    /** {@link ShardValues#check} with a line saying what it covered, and its warning if any. */
    public static void checkValues(TeacherShards shards, String dir, PrintWriter out, PrintWriter err) throws IOException {
        ShardValues.Summary s = ShardValues.check(shards, Runtime.getRuntime().availableProcessors(), err);
        out.printf("checked every teacher value of %s: %,d positions, %.1f MB in %.2f s%n", dir, s.rows(),
                shards.bytesOfSequences(shards.sequences()) / 1e6, s.seconds());
        String warning = ShardValues.warning(s, shards.layout(), dir);
        if (warning != null) err.println("warning: " + warning);
        out.flush();
        err.flush();
    }

    private static void requireReadable(String path, String key) throws IOException {
        if (path != null && !Files.isReadable(Path.of(path))) {
            throw new IOException("'" + key + "' " + path + ": no such file or folder, or not readable");
        }
    }

    /** A fresh student of the config's architecture, initialised from the run's seed. */
    private static LanguageModel newStudent(DistillConfig cfg, int teacherVocab, int seqLen, Kernels kernels) {
        DistillConfig.Student s = cfg.student();
        int vocab = s.vocabSize() == null ? teacherVocab : s.vocabSize(), context = s.context() == null ? seqLen : s.context();
        LanguageModel model;
        try {
            model = switch (s.family()) {
                case GPT2 -> new Gpt2(new Gpt2Config(vocab, context, s.layers(), s.channels(), s.heads()), kernels);
                case LLAMA -> new Llama(new LlamaConfig(LlamaConfig.Family.LLAMA, vocab, context, s.layers(), s.channels(), s.heads(),
                        s.kvHeads() == null ? s.heads() : s.kvHeads(), s.channels() / s.heads(),
                        s.intermediate() == null ? (8 * s.channels() / 3 + 31) / 32 * 32 : s.intermediate(), 1e-5f,
                        LlamaConfig.Rope.plain(s.ropeTheta() == null ? 10000 : s.ropeTheta()), s.tieEmbeddings() == null || s.tieEmbeddings()), kernels);
            };
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("'student': " + e.getMessage(), e);
        }
        model.initialize(cfg.seed());
        return model;
    }

    private static Result loop(DistillConfig cfg, Kernels kernels, TrainingSession session, TeacherShards shards, TeacherShards evalShards,
                               CheckpointStore store, DistillOptions options, DifferentiableOps.Reduction reduction, int chunkRows,
                               int epoch, int batchIndex, Path lastCheckpoint, int stopAfter, Path outDir, PrintWriter out, PrintWriter err) throws IOException {
        int startStep = session.optimizer().step();
        LanguageModel model = session.model();
        out.println("student: " + model.describe());
        out.printf("teacher: %s (%s, %d sequences of %d, vocab %d); loss: T %.3g, alpha %.3g, %s%s%n", cfg.teacher(),
                shards.manifest().targets(), shards.sequences(), shards.manifest().seqLen(), shards.manifest().vocabSize(),
                options.temperature(), options.alpha(), cfg.loss().divergence(), options.scaleByTemperatureSquared() ? ", T^2 on" : "");
        if (evalShards == null) out.println("no 'eval_teacher' given: no held-out evaluation");
        out.flush();
        try (TeacherBatchStream stream = new TeacherBatchStream(shards, cfg.batchSize(), cfg.seed(), cfg.prefetch(), epoch, batchIndex,
                kernels::allocateStaging)) {
            Steps steps = new Steps(cfg, session, stream, shards, evalShards, options, reduction, chunkRows, epoch,
                    batchIndex, err);
            TrainingLoop.Outcome o = TrainingLoop.run(session, store, steps, new TrainingLoop.Settings("distill", "distill", cfg.steps(),
                    stopAfter, cfg.evalEvery(), cfg.checkpointEvery(), cfg.keepCheckpoints(), outDir,
                    cfg.tokenizer() == null ? null : Path.of(cfg.tokenizer())), lastCheckpoint, err);
            if (startStep >= cfg.steps()) out.println("nothing to do: the checkpoint is at step " + startStep + " of " + cfg.steps());
            out.printf("%s: step %d of %d, %,.0f tokens/s, %.2f%% of the time waiting for data; checkpoint %s; metrics %s%n",
                    o.step() < cfg.steps() ? "stopped (--stop-after)" : "done", o.step(), cfg.steps(), steps.tokensPerSecond,
                    100 * steps.waitFraction, o.lastCheckpoint(), o.metrics());
            return new Result(o.step(), outDir, o.lastCheckpoint(), steps.lastEval, steps.tokensPerSecond, steps.waitFraction,
                    model.parameters().parameterCount());
        }
    }

    /** The distillation's steps in the shared loop: teacher batches, gradient accumulation, held-out evaluation, the data position. */
    private static final class Steps implements TrainingLoop.Task {
        private final DistillConfig cfg;
        private final TrainingSession session;
        private final TeacherBatchStream stream;
        private final TeacherShards shards, evalShards;
        private final DistillOptions options;
        private final DifferentiableOps.Reduction reduction;
        private final int chunkRows, startStep;
        private final long tokensPerStep, loopStart, waitStart;
        private final PrintWriter err;
        private int epoch, batchIndex;
        double tokensPerSecond, waitFraction;
        Evaluation lastEval;

        Steps(DistillConfig cfg, TrainingSession session, TeacherBatchStream stream, TeacherShards shards, TeacherShards evalShards,
              DistillOptions options, DifferentiableOps.Reduction reduction, int chunkRows, int epoch, int batchIndex, PrintWriter err) {
            this.cfg = cfg;
            this.session = session;
            this.stream = stream;
            this.shards = shards;
            this.evalShards = evalShards;
            this.options = options;
            this.reduction = reduction;
            this.chunkRows = chunkRows;
            this.epoch = epoch;
            this.batchIndex = batchIndex;
            this.err = err;
            this.startStep = session.optimizer().step();
            this.tokensPerStep = (long) cfg.batchSize() * shards.manifest().seqLen() * cfg.gradAccum();
            this.loopStart = System.nanoTime();
            this.waitStart = stream.waitNanos();
        }

        @Override
        public Map<String, Object> step(int step) throws IOException {
            long t0 = System.nanoTime(), w0 = stream.waitNanos();
            double loss = 0, ce = 0, div = 0;
            session.beginStep();
            for (int a = 0; a < cfg.gradAccum(); a++) {
                TeacherBatchStream.Batch batch;
                try {
                    batch = stream.next();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while waiting for teacher batches", e);
                }
                DifferentiableOps.DistillLoss l;
                try {
                    session.inputs().setSequences(batch.inputIds());
                    l = session.backwardDistill(batch.targets(), options, reduction, chunkRows, 1f / cfg.gradAccum());
                } catch (BadRowException e) {
                    throw inShards(e, shards, batch);
                }
                loss += l.total() / cfg.gradAccum();
                ce += l.ce() / cfg.gradAccum();
                div += l.divergence() / cfg.gradAccum();
                epoch = batch.epoch();
                batchIndex = batch.index() + 1;
                if (batchIndex == stream.batchesPerEpoch()) {
                    epoch++;
                    batchIndex = 0;
                }
                stream.release(batch);
            }
            TrainingSession.StepResult r = session.finishStep(loss);
            long t1 = System.nanoTime();
            double stepSeconds = (t1 - t0) / 1e9;
            double stepWait = (stream.waitNanos() - w0) / 1e9;
            tokensPerSecond = tokensPerStep * (step - startStep) / ((t1 - loopStart) / 1e9);
            waitFraction = (stream.waitNanos() - waitStart) / (double) (t1 - loopStart);
            Map<String, Object> rec = new LinkedHashMap<>();
            rec.put("loss", loss);
            rec.put("ce", ce);
            rec.put("divergence", div);
            rec.put("lr", r.lr());
            rec.put("grad_norm", r.gradNorm());
            rec.put("tokens", tokensPerStep * step);
            rec.put("step_ms", stepSeconds * 1e3);
            rec.put("tokens_per_s", tokensPerStep / stepSeconds);
            rec.put("data_wait_fraction", stepWait / stepSeconds);
            return rec;
        }

        @Override
        public String progress(Map<String, Object> record) {
            return String.format("loss %.4f | %,.0f tok/s | data wait %.1f%%", (double) record.get("loss"), tokensPerSecond, 100 * waitFraction);
        }

        @Override
        public Map<String, Object> evaluate(int step) throws IOException {
            if (evalShards == null) return null;
            lastEval = DistillRun.evaluate(session, evalShards, cfg.batchSize(), cfg.evalBatches() > 0 ? cfg.evalBatches() : Integer.MAX_VALUE,
                    chunkRows, step);
            Map<String, Object> ev = new LinkedHashMap<>();
            ev.put("ce", lastEval.ce());
            ev.put("perplexity", lastEval.perplexity());
            ev.put(lastEval.divergenceKey(), lastEval.divergence());
            ev.put("agreement", lastEval.agreement());
            ev.put("rows", lastEval.rows());
            err.printf("eval @ step %d: ce %.4f, perplexity %.3f, %s %.4f, top-1 agreement %.1f%%%n", step,
                    lastEval.ce(), lastEval.perplexity(), lastEval.divergenceName(), lastEval.divergence(), 100 * lastEval.agreement());
            err.flush();
            return ev;
        }

        @Override
        public Map<String, String> checkpointMeta(int step) {
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put("data.epoch", Integer.toString(epoch));
            meta.put("data.batch", Integer.toString(batchIndex));
            meta.put("config", cfg.toJson());
            return meta;
        }

        @Override
        public void curves(Path outDir, List<Map<String, Object>> records) throws IOException {
            Curves.write(outDir.resolve("curves.png"), "distill",
                    List.of(Curves.Series.of("loss", records, "train", "loss"), Curves.Series.of("hard-label CE", records, "train", "ce")),
                    List.of(Curves.Series.of("held-out perplexity", records, "eval", "perplexity")));
        }
    }

    /**
     * Held-out CE (perplexity), forward KL to the teacher at its shard temperature (T = 1 for
     * dense) and top-1 agreement, over the rows training's loss counts (every position but each
     * sequence's last). {@code maxBatches} batches of a seed-0 permutation; when that covers the
     * shards, every sequence counts once (the last batch is padded and the padding ignored).
     */
    /**
     * A kernel's bad row (row = sequence in the batch × seq_len + position), named as the shard file,
     * the sequence in it and the position, not as a row of a shuffled batch.
     */
    private static IllegalArgumentException inShards(BadRowException e, TeacherShards shards, TeacherBatchStream.Batch b) {
        int t = shards.manifest().seqLen();
        int inBatch = (int) Math.min(e.row() / t, b.valid() - 1);   // rows past the valid ones repeat the last sequence
        return new IllegalArgumentException(shards.where(b.sequences()[inBatch], (int) (e.row() % t)) + ": " + e.problem(), e);
    }

    public static Evaluation evaluate(TrainingSession session, TeacherShards evalShards, int batchSize, int maxBatches,
                                      int chunkRows, int step) throws IOException {
        boolean dense = evalShards.layout().kind() == TeacherTargets.Kind.DENSE;
        float t = dense ? 1f : (float) evalShards.manifest().temperature();
        DistillOptions klOptions = DistillOptions.of(t, 0f).withTemperatureSquared(false);   // forward KL, tail bucket, ignore -100
        Evaluator.Sums sums = Evaluator.Sums.zero();
        try (TeacherBatchStream stream = TeacherBatchStream.onePass(evalShards, batchSize, 0L)) {
            int batches = Math.min(maxBatches, stream.batchesPerEpoch());
            int[] top1 = new int[batchSize * evalShards.manifest().seqLen()];
            for (int i = 0; i < batches; i++) {
                TeacherBatchStream.Batch b = stream.next();
                try {
                    session.inputs().setSequences(b.inputIds(), b.valid());
                    for (int r = 0; r < top1.length; r++) top1[r] = b.targets().top1(r);
                    sums = sums.plus(session.evaluator().distill(b.targets(), top1, klOptions, chunkRows));
                } catch (BadRowException e) {
                    throw inShards(e, evalShards, b);
                }
                stream.release(b);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted during evaluation", e);
        }
        double ce = sums.ce() / Math.max(1, sums.rows());
        return new Evaluation(step, ce, Math.exp(ce), sums.divergence() / Math.max(1, sums.rows()),
                (double) sums.agree() / Math.max(1, sums.rows()), sums.rows(), evalShards.layout().kind());
    }
}
