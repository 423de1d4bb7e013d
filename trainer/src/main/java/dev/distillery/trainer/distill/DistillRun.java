package dev.distillery.trainer.distill;

import java.io.IOException;
import java.io.PrintWriter;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.distill.FeatureDistillation;
import dev.distillery.runtime.distill.InProcessTeacher;
import dev.distillery.runtime.distill.TeacherEnsemble;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Evaluator;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.Llama;
import dev.distillery.runtime.nn.LlamaConfig;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.runtime.parallel.Collective;
import dev.distillery.trainer.checkpoint.CheckpointStore;
import dev.distillery.trainer.data.Sequences;
import dev.distillery.trainer.data.ShardValues;
import dev.distillery.trainer.data.TeacherBatchStream;
import dev.distillery.trainer.data.TeacherManifest;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.data.TokenWindows;
import dev.distillery.trainer.io.FolderLock;
import dev.distillery.trainer.loop.TrainingLoop;

/**
 * A distillation run: its teachers (shards or a model run in the process) and data opened and
 * checked before step 1, the student made, read from init_from or resumed, and its steps
 * ({@link DistillSteps}: teacher batches, the chunked LM head + fused distillation loss, gradient
 * accumulation) run by {@link TrainingLoop} with clipping, AdamW on a warmup + cosine schedule,
 * held-out evaluation ({@link #evaluate}), crash-safe checkpoints, exact resume, and a NaN/Inf
 * guard that stops before a bad update so the last checkpoint stays good.
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

    /** How a run ended; {@code workspacePeak}: the bytes the student's passes held at most (activations and their gradients). */
    public record Result(int step, Path outDir, Path lastCheckpoint, Evaluation lastEval, double tokensPerSecond,
                         double dataWaitFraction, long parameters, long workspacePeak) {
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
        return run(cfg, kernels, new Collective.Single(), resume, stopAfter, out, err);
    }

    /**
     * As above as one rank of a data-parallel run ({@code mpirun}): every rank reads its share of
     * each global batch of {@code batch_size} sequences, the gradients are summed over the ranks
     * in rank order, rank 0 alone writes the run folder and evaluates; the others print nothing
     * but errors.
     */
    public static Result run(DistillConfig cfg, Kernels kernels, Collective collective, boolean resume, int stopAfter, PrintWriter out,
                             PrintWriter err) throws IOException {
        if (collective.rank() != 0) out = new PrintWriter(java.io.Writer.nullWriter());
        if (cfg.batchSize() % collective.size() != 0) {
            throw new IllegalArgumentException("'batch_size' " + cfg.batchSize() + " is the global batch and must be a multiple of the "
                    + collective.size() + " ranks, so that each reads as many sequences");
        }
        requireOneConfig(cfg, collective);
        Path outDir = Path.of(cfg.out());
        requireReadable(cfg.tokenizer(), "tokenizer");   // before step 1, not at the first checkpoint
        requireReadable(cfg.initFrom(), "init_from");
        requireReadable(cfg.teacher(), "teacher");
        requireReadable(cfg.evalTeacher(), "eval_teacher");
        // every input is opened and checked before the run folder is made: bad input writes nothing
        if (cfg.teacherModel() != null) return runWithTeacherModel(cfg, kernels, collective, resume, stopAfter, out, err);
        try (TeacherShards shards = TeacherShards.open(Path.of(cfg.teacher()), cfg.verifyChecksums());
             TeacherShards evalShards = cfg.evalTeacher() == null ? null : TeacherShards.open(Path.of(cfg.evalTeacher()), cfg.verifyChecksums());
             MoreTeachers more = openMoreTeachers(cfg, shards, shards.manifest().vocabSize(), shards.manifest().tokenizerSha256(),
                     shards.layout().kind() == TeacherTargets.Kind.DENSE, kernels, out, err);
             FolderLock lock = checkInputsThenLock(cfg, shards, evalShards, outDir, collective, out, err)) {
            TeacherManifest m = shards.manifest();
            String line = String.format("%s (%s, %d sequences of %d, vocab %d)", cfg.teacher(), m.targets(), shards.sequences(), m.seqLen(),
                    m.vocabSize());
            return train(cfg, kernels, collective, resume, stopAfter, new Source(shards, evalShards, null, m.vocabSize(), cfg.teacher(), line,
                    more.list()), out, err);
        }
    }

    /**
     * Where a run's sequences and teacher come from: shards (ids and stored targets), or token
     * windows scored by {@code model}, run in the process.
     */
    record Source(Sequences train, Sequences eval, LanguageModel model, int vocab, String name, String line, List<MoreTeacher> more) {
    }

    /** The teachers of 'teachers', closed together. */
    private record MoreTeachers(List<MoreTeacher> list) implements AutoCloseable {
        @Override
        public void close() {
            for (MoreTeacher t : list) t.close();
        }
    }

    /** A teacher of 'teachers' beyond the first: its shards, or its model run in the process (the other null). */
    record MoreTeacher(String name, TeacherShards shards, LanguageModel model) implements AutoCloseable {
        @Override
        public void close() {
            if (shards != null) shards.close();
            if (model != null) model.close();
        }
    }

    /**
     * Opens 'teachers' and checks each against the first teacher before step 1, naming the key:
     * one vocabulary, one tokenizer where recorded, the same windows (every sequence's ids), a
     * loss its targets allow, and the whole distribution where they are mixed.
     */
    private static MoreTeachers openMoreTeachers(DistillConfig cfg, Sequences first, int vocab, String tokenizerSha256, boolean firstDense,
                                                 Kernels kernels, PrintWriter out, PrintWriter err) throws IOException {
        List<MoreTeacher> more = new ArrayList<>();
        if (cfg.teachers() == null) return new MoreTeachers(more);
        if (cfg.combination() == TeacherEnsemble.Combination.MIXTURE && !firstDense) {
            throw new IllegalArgumentException("'teachers_combination' mixture needs each teacher's whole distribution, and the first teacher's shards ("
                    + cfg.teacher() + ") are " + first.layout().kind() + "; use dense shards, a model, or 'teachers_combination': \"mean\"");
        }
        try {
            for (int i = 0; i < cfg.teachers().size(); i++) {
                DistillConfig.MoreTeacher t = cfg.teachers().get(i);
                String key = "'teachers[" + i + "]." + (t.shards() != null ? "shards" : "model") + "' " + (t.shards() != null ? t.shards() : t.model());
                requireReadable(t.shards() != null ? t.shards() : t.model(), "teachers[" + i + "]." + (t.shards() != null ? "shards" : "model"));
                if (t.shards() != null) {
                    TeacherShards shards = TeacherShards.open(Path.of(t.shards()), cfg.verifyChecksums());
                    more.add(new MoreTeacher(t.shards(), shards, null));
                    TeacherManifest m = shards.manifest();
                    if (m.vocabSize() != vocab) {
                        throw new IOException(key + ": vocab_size " + m.vocabSize() + ", the first teacher's is " + vocab + "; teachers must share a vocabulary");
                    }
                    if (tokenizerSha256 != null && m.tokenizerSha256() != null && !tokenizerSha256.equals(m.tokenizerSha256())) {
                        throw new IOException(key + ": 'tokenizer_sha256' " + m.tokenizerSha256() + " differs from the first teacher's " + tokenizerSha256
                                + ": their ids come from two tokenizers");
                    }
                    if (cfg.combination() == TeacherEnsemble.Combination.MIXTURE && shards.layout().kind() != TeacherTargets.Kind.DENSE) {
                        throw new IllegalArgumentException("'teachers_combination' mixture needs each teacher's whole distribution, and " + key + " holds "
                                + shards.layout().kind() + " targets; use dense shards, a model, or 'teachers_combination': \"mean\"");
                    }
                    sameWindows(first, shards, key);
                    cfg.loss().requireCompatible(shards.layout(), Path.of(t.shards(), "manifest.json"));
                    if (cfg.checkValues()) checkValues(shards, t.shards(), out, err);
                } else {
                    LanguageModel model = ModelFiles.readTeacher(Path.of(t.model()), kernels);
                    more.add(new MoreTeacher(t.model(), null, model));
                    if (model.vocabSize() != vocab) {
                        throw new IOException(key + ": vocabulary " + model.vocabSize() + ", the first teacher's is " + vocab + "; teachers must share a vocabulary");
                    }
                    if (model.contextLength() < first.seqLen()) {
                        throw new IOException(key + ": context " + model.contextLength() + " is shorter than the windows of " + first.seqLen() + " tokens");
                    }
                    Path beside = Path.of(t.model(), "tokenizer.json");
                    if (tokenizerSha256 != null && Files.isRegularFile(beside) && !TeacherShards.sha256(beside).equals(tokenizerSha256)) {
                        throw new IOException(key + ": its tokenizer.json is not the first teacher's: their ids come from two tokenizers");
                    }
                }
            }
            return new MoreTeachers(more);
        } catch (IOException | RuntimeException e) {
            for (MoreTeacher m : more) m.close();
            throw e;
        }
    }

    /** Every sequence of {@code other} has the ids of the same sequence of {@code first}, or an error naming the first that differs. */
    private static void sameWindows(Sequences first, TeacherShards other, String key) throws IOException {
        if (other.seqLen() != first.seqLen() || other.sequences() != first.sequences()) {
            throw new IOException(key + ": " + other.sequences() + " sequences of " + other.seqLen() + " tokens, the first teacher's data has "
                    + first.sequences() + " of " + first.seqLen() + "; teachers must score the same windows");
        }
        try (Arena arena = Arena.ofConfined()) {
            long bytes = 4L * first.seqLen();
            MemorySegment a = arena.allocate(bytes), b = arena.allocate(bytes);
            for (int i = 0; i < first.sequences(); i++) {
                first.copyInputIds(i, a, 0);
                other.copyInputIds(i, b, 0);
                long at = a.mismatch(b);
                if (at >= 0) {
                    throw new IOException(key + ": " + other.where(i, (int) (at / 4)) + " holds token " + b.getAtIndex(ValueLayout.JAVA_INT, at / 4)
                            + " where the first teacher's data has " + a.getAtIndex(ValueLayout.JAVA_INT, at / 4) + "; teachers must score the same windows");
                }
            }
        }
    }

    /** A run whose teacher is a model run in the process on windows of token files ('teacher_model'). */
    private static Result runWithTeacherModel(DistillConfig cfg, Kernels kernels, Collective collective, boolean resume, int stopAfter,
                                              PrintWriter out, PrintWriter err) throws IOException {
        DistillConfig.TeacherModel tm = cfg.teacherModel();
        requireReadable(tm.path(), "teacher_model.path");
        requireReadable(tm.tokens(), "teacher_model.tokens");
        requireReadable(tm.evalTokens(), "teacher_model.eval_tokens");
        Path beside = Path.of(tm.path(), "tokenizer.json");
        if (cfg.tokenizer() != null && Files.isRegularFile(beside)) {
            String run = TeacherShards.sha256(Path.of(cfg.tokenizer())), teachers = TeacherShards.sha256(beside);
            if (!run.equals(teachers)) {
                throw new IOException("'tokenizer' " + cfg.tokenizer() + " (sha256 " + run + ") is not the teacher's " + beside + " (sha256 "
                        + teachers + "): the student would be saved with another tokenizer than the one its ids come from");
            }
        }
        try (LanguageModel teacher = ModelFiles.readTeacher(Path.of(tm.path()), kernels)) {
            int seqLen = tm.seqLen() != null ? tm.seqLen() : Math.min(teacher.contextLength(), 1024);
            if (seqLen > teacher.contextLength()) {
                throw new IllegalArgumentException("'teacher_model.seq_len' " + seqLen + " exceeds the teacher's context " + teacher.contextLength());
            }
            try (TokenWindows train = TokenWindows.open(Path.of(tm.tokens()), seqLen, teacher.vocabSize(), "the teacher's");
                 TokenWindows eval = tm.evalTokens() == null ? null : TokenWindows.open(Path.of(tm.evalTokens()), seqLen, teacher.vocabSize(),
                         "the teacher's")) {
                if (train.sequences() < cfg.batchSize()) {
                    throw new IOException(tm.tokens() + ": 'batch_size' " + cfg.batchSize() + " exceeds its " + train.sequences()
                            + " windows of " + seqLen + " tokens");
                }
                String line = String.format("%s, run in the process (%s), on %d windows of %d tokens of %s", tm.path(), teacher.describe(),
                        train.sequences(), seqLen, tm.tokens());
                requireFeatureSources(cfg, train, tm.path(), teacher.layers());
                String tokenizerSha256 = Files.isRegularFile(beside) ? TeacherShards.sha256(beside) : null;
                try (MoreTeachers more = openMoreTeachers(cfg, train, teacher.vocabSize(), tokenizerSha256, true, kernels, out, err);
                     FolderLock lock = collective.rank() == 0 ? FolderLock.acquire(Path.of(cfg.out()), "'out'") : null) {
                    return train(cfg, kernels, collective, resume, stopAfter, new Source(train, eval, teacher, teacher.vocabSize(), tm.path(), line,
                            more.list()), out, err);
                }
            }
        }
    }

    /** The student from the checkpoint, init_from or the config, its session, and the loop. */
    private static Result train(DistillConfig cfg, Kernels kernels, Collective collective, boolean resume, int stopAfter, Source src, PrintWriter out,
                                PrintWriter err) throws IOException {
        Path outDir = Path.of(cfg.out());
        DistillOptions options = cfg.loss().options();
        DifferentiableOps.Reduction reduction = cfg.loss().reductionMode();
        int seqLen = src.train().seqLen(), teacherVocab = src.vocab();
        CheckpointStore store = CheckpointStore.open(outDir.resolve("checkpoints"));
        Optional<CheckpointStore.Checkpoint> from = TrainingLoop.resumeFrom(store, outDir, resume, "'out'");
        collective.barrier();   // every rank has looked at the folder before rank 0 writes to it
        int perRank = cfg.batchSize() / collective.size();

        LanguageModel model = from.isPresent() ? ModelFiles.read(from.get().dir(), kernels)
                : cfg.initFrom() != null ? initialStudent(cfg, kernels) : newStudent(cfg, teacherVocab, seqLen, kernels);
        try {
            if (model.vocabSize() < teacherVocab) {
                throw new IOException("the student's vocabulary " + model.vocabSize() + " is smaller than the teacher's " + teacherVocab
                        + " (" + src.name() + "); a larger student vocabulary is allowed");
            }
            if (model.contextLength() < seqLen) {
                throw new IOException("the student's context " + model.contextLength() + " is shorter than the "
                        + (src.model() == null ? "shards' seq_len " : "windows of 'teacher_model.seq_len' ") + seqLen);
            }
            int chunkRows = cfg.loss().chunkRows() > 0 ? cfg.loss().chunkRows()
                    : ChunkedLinearDistillLoss.defaultChunkRows(Math.max(model.vocabSize(), teacherVocab));
            AdamW.Config adam = new AdamW.Config(cfg.beta1(), cfg.beta2(), 1e-8, cfg.weightDecay());
            LearningRateSchedule schedule = new LearningRateSchedule(cfg.lr(), cfg.minLr(), cfg.warmupSteps(), cfg.steps());
            try (TrainingSession session = new TrainingSession(model, kernels, adam, schedule, cfg.gradClip(), perRank, seqLen);
                 InProcessTeacher live = src.model() == null ? null : new InProcessTeacher(src.model(), kernels, chunkRows);
                 OnPolicyBatches onPolicy = cfg.onPolicy() == null ? null
                         : new OnPolicyBatches(cfg.onPolicy(), cfg.seed(), model, kernels, perRank, seqLen)) {
                session.recomputeAttention(cfg.recomputeAttention());
                if (cfg.hiddenStates() != null) enableFeatures(cfg, session, live, src, kernels, out);
                int epoch = 0, batchIndex = 0;
                Path lastCheckpoint = null;
                if (from.isPresent()) {
                    Map<String, String> meta = TrainingLoop.restore(session, from.get(), out);
                    String world = meta.get("world");
                    if (world != null && !world.equals(Integer.toString(collective.size()))) {
                        throw new IOException(from.get().dir() + " was written by a run of " + world + " ranks; this one has " + collective.size()
                                + ": resume with the same world size (the data position counts global batches of 'batch_size')");
                    }
                    epoch = TrainingLoop.intMeta(from.get().dir(), meta, "data.epoch");
                    batchIndex = TrainingLoop.intMeta(from.get().dir(), meta, "data.batch");
                    lastCheckpoint = from.get().dir();
                    for (String change : cfg.changesSince(meta.get("config"))) out.println("resume: note: " + change);
                }
                return loop(cfg, kernels, collective, session, src, live, onPolicy, store, options, reduction, chunkRows, epoch, batchIndex,
                        lastCheckpoint, stopAfter, outDir, out, err);
            }
        } finally {
            model.close();
        }
    }

    /**
     * Feature distillation from 'hidden_states': the projections (initialised from the seed, or
     * restored with the checkpoint), the teacher told which states to keep. An impossible pair is
     * refused here, before step 1, naming the key.
     */
    private static void enableFeatures(DistillConfig cfg, TrainingSession session, InProcessTeacher live, Source src, Kernels kernels,
                                       PrintWriter out) {
        FeatureDistillation.Spec spec = cfg.hiddenStates().spec();
        LanguageModel student = session.model();
        int teacherLayers, teacherWidth;
        if (live != null) {
            teacherLayers = live.model().layers();
            teacherWidth = live.model().width();
        } else {
            int[] kept = src.train().hiddenLayers();
            teacherLayers = Arrays.stream(kept).max().orElseThrow();
            teacherWidth = src.train().hiddenSize();
        }
        FeatureDistillation features;
        try {
            features = new FeatureDistillation(spec, student.layers(), student.width(), teacherLayers, teacherWidth, kernels);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("'hidden_states.pairs': " + e.getMessage(), e);
        }
        features.initialize(cfg.seed() + 1);
        session.enableFeatureDistillation(features);
        if (live != null) live.keepHiddenStates(spec.teacherLayers());
        out.printf("hidden states: %s of %d pairs (student width %d -> teacher width %d through a learned projection each), weight %.3g%n",
                cfg.hiddenStates().distance(), spec.pairs().size(), student.width(), teacherWidth, spec.weight());
    }

    /**
     * Whether 'hidden_states' can be had, checked before the run folder is made: the states each
     * pair reads exist in the teacher ({@code teacherLayers} blocks; or, with shards, among those
     * {@code train} carries) and, for a fresh student, in the student.
     */
    private static void requireFeatureSources(DistillConfig cfg, Sequences train, String name, int teacherLayers) {
        if (cfg.hiddenStates() == null) return;
        FeatureDistillation.Spec spec = cfg.hiddenStates().spec();
        if (teacherLayers < 0) {
            int[] kept = train.hiddenLayers();
            if (kept.length == 0) {
                throw new IllegalArgumentException("'hidden_states' needs the teacher's hidden states, and the shards of " + name
                        + " carry none: use 'teacher_model', or shards dumped with 'teacher dump-logits --hidden-layers'");
            }
            for (int l : spec.teacherLayers()) {
                if (Arrays.stream(kept).noneMatch(k -> k == l)) {
                    throw new IllegalArgumentException("'hidden_states.pairs' reads the teacher's hidden state " + l + ", but the shards of "
                            + name + " carry states " + Arrays.toString(kept));
                }
            }
        }
        for (FeatureDistillation.Pair p : spec.pairs()) {
            if (teacherLayers >= 0 && p.teacher() > teacherLayers) {
                throw new IllegalArgumentException("'hidden_states.pairs': teacher hidden state " + p.teacher() + " does not exist: the teacher has "
                        + teacherLayers + " blocks, so states 0.." + teacherLayers);
            }
            if (cfg.initFrom() == null && p.student() > cfg.student().layers()) {
                throw new IllegalArgumentException("'hidden_states.pairs': student hidden state " + p.student() + " does not exist: the student has "
                        + cfg.student().layers() + " blocks, so states 0.." + cfg.student().layers());
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
                                                  Collective collective, PrintWriter out, PrintWriter err) throws IOException {
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
        requireFeatureSources(cfg, shards, cfg.teacher(), -1);
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
        return collective.rank() == 0 ? FolderLock.acquire(outDir, "'out'") : null;
    }

    /** Every rank runs the same config: a rank that read another file (or another world size) is named before anything starts. */
    private static void requireOneConfig(DistillConfig cfg, Collective collective) throws IOException {
        if (collective.size() == 1) return;
        byte[] mine;
        try {
            mine = java.security.MessageDigest.getInstance("SHA-256").digest(cfg.toJson().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JDK", e);
        }
        List<byte[]> all = collective.allGather(mine);
        for (int r = 0; r < all.size(); r++) {
            if (!Arrays.equals(all.get(r), all.getFirst())) {
                throw new IOException("rank " + r + " runs another config than rank 0 (its settings differ); every rank must read the same file");
            }
        }
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

    private static Result loop(DistillConfig cfg, Kernels kernels, Collective collective, TrainingSession session, Source src, InProcessTeacher live,
                               OnPolicyBatches onPolicy, CheckpointStore store, DistillOptions options, DifferentiableOps.Reduction reduction, int chunkRows,
                               int epoch, int batchIndex, Path lastCheckpoint, int stopAfter, Path outDir, PrintWriter out, PrintWriter err) throws IOException {
        int startStep = session.optimizer().step();
        LanguageModel model = session.model();
        out.println("student: " + model.describe());
        String attention = TrainingLoop.attentionMemoryNote(session.keptAttentionBytes(), "'recompute_attention': true");
        if (attention != null) out.println(attention);
        DistillOptions last = cfg.loss().optionsAt(cfg.steps(), cfg.steps());
        String schedule = cfg.loss().scheduleKind() == DistillConfig.Loss.Schedule.CONSTANT ? ""
                : String.format(" (%s to T %.3g, alpha %.3g at step %d)", cfg.loss().schedule(), last.temperature(), last.alpha(), cfg.steps());
        out.printf("teacher: %s; loss: T %.3g, alpha %.3g%s, %s%s%n", src.line(), options.temperature(), options.alpha(), schedule,
                cfg.loss().divergence(), options.scaleByTemperatureSquared() ? ", T^2 on" : "");
        if (src.eval() == null) {
            out.println(live == null ? "no 'eval_teacher' given: no held-out evaluation" : "no 'teacher_model.eval_tokens' given: no held-out evaluation");
        }
        if (live != null) {
            out.printf("teacher in the process: %,d bytes of fp32 weights, no gradients, no moments; its logits %,d bytes at a time (%d rows)%n",
                    4 * live.model().parameters().parameterCount(), live.chunkBytes(), chunkRows);
        }
        out.flush();
        try (TeacherBatchStream stream = new TeacherBatchStream(src.train(), cfg.batchSize(), cfg.seed(), cfg.prefetch(), epoch, batchIndex,
                kernels::allocateStaging, collective.rank(), collective.size());
             DistillSteps.ExtraTeachers extras = new DistillSteps.ExtraTeachers(src.more(), cfg, kernels, collective, chunkRows, epoch, batchIndex)) {
            if (collective.size() > 1) {
                out.printf("data parallel: %s; each rank reads %d of every global batch of %d sequences; gradients summed %s%n",
                        collective.describe(), cfg.batchSize() / collective.size(), cfg.batchSize(), session.gradientSum(collective));
            }
            if (!src.more().isEmpty()) {
                float[] w = cfg.teacherWeights();
                StringBuilder b = new StringBuilder(String.format("teachers: %s of %d, weights %.3g (%s)", cfg.teachersCombination(), w.length, w[0], src.name()));
                for (int i = 1; i < w.length; i++) b.append(String.format(", %.3g (%s)", w[i], src.more().get(i - 1).name()));
                out.println(b.append("; held-out KL and agreement are to the first"));
            }
            DistillSteps steps = new DistillSteps(cfg, session, stream, src, live, onPolicy, reduction, chunkRows, epoch, batchIndex, err, extras, collective);
            TrainingLoop.Outcome o = TrainingLoop.run(session, store, steps, new TrainingLoop.Settings("distill", "distill", cfg.steps(),
                    stopAfter, cfg.evalEvery(), cfg.checkpointEvery(), cfg.keepCheckpoints(), outDir,
                    cfg.tokenizer() == null ? null : Path.of(cfg.tokenizer()), collective), lastCheckpoint, err);
            if (startStep >= cfg.steps()) out.println("nothing to do: the checkpoint is at step " + startStep + " of " + cfg.steps());
            out.printf("%s: step %d of %d, %,.0f tokens/s, %.2f%% of the time waiting for data; checkpoint %s; metrics %s%n",
                    o.step() < cfg.steps() ? "stopped (--stop-after)" : "done", o.step(), cfg.steps(), steps.tokensPerSecond,
                    100 * steps.waitFraction, o.lastCheckpoint(), o.metrics());
            out.printf("student: its workspace peaked at %,d bytes (activations and their gradients%s)%n", session.workspace().highWater(),
                    cfg.recomputeAttention() ? "; attention's probabilities made in bands, again in the backward" : "");
            if (live != null) {
                out.printf("teacher in the process: its forward's workspace peaked at %,d bytes (one block's activations and the hidden states)%n",
                        live.workspaceHighWater());
            }
            return new Result(o.step(), outDir, o.lastCheckpoint(), steps.lastEval, steps.tokensPerSecond, steps.waitFraction,
                    model.parameters().parameterCount(), session.workspace().highWater());
        }
    }

    /**
     * A kernel's bad row (row = sequence in the batch × seq_len + position), named as the shard file,
     * the sequence in it and the position, not as a row of a shuffled batch.
     */
    static IllegalArgumentException inShards(BadRowException e, Sequences shards, TeacherBatchStream.Batch b) {
        int t = shards.seqLen();
        int inBatch = (int) Math.min(e.row() / t, b.valid() - 1);   // rows past the valid ones repeat the last sequence
        return new IllegalArgumentException(shards.where(b.sequences()[inBatch], (int) (e.row() % t)) + ": " + e.problem(), e);
    }

    /**
     * Held-out CE (perplexity), forward KL to the teacher at its shard temperature (T = 1 for
     * dense) and top-1 agreement, over the rows training's loss counts (every position but each
     * sequence's last). {@code maxBatches} batches of a seed-0 permutation; when that covers the
     * shards, every sequence counts once (the last batch is padded and the padding ignored).
     */
    public static Evaluation evaluate(TrainingSession session, TeacherShards evalShards, int batchSize, int maxBatches,
                                      int chunkRows, int step) throws IOException {
        return evaluate(session, evalShards, null, batchSize, maxBatches, chunkRows, step);
    }

    /** As above on held-out sequences with stored targets, or on token windows scored by {@code live}. */
    public static Evaluation evaluate(TrainingSession session, Sequences eval, InProcessTeacher live, int batchSize, int maxBatches,
                               int chunkRows, int step) throws IOException {
        return evaluate(session, eval, live, batchSize, maxBatches, chunkRows, step, new Collective.Single());
    }

    /**
     * As above, split over the ranks of {@code collective}: rank r evaluates batches r, r + W, …
     * of the same permutation, and the sums are added over the ranks, so every rank returns the
     * evaluation of all of them.
     */
    public static Evaluation evaluate(TrainingSession session, Sequences eval, InProcessTeacher live, int batchSize, int maxBatches,
                                      int chunkRows, int step, Collective collective) throws IOException {
        TeacherTargets.Kind kind = live != null ? TeacherTargets.Kind.DENSE : eval.layout().kind();
        float t = kind == TeacherTargets.Kind.DENSE ? 1f : eval.layout().shardTemperature();
        DistillOptions klOptions = DistillOptions.of(t, 0f).withTemperatureSquared(false);   // forward KL, tail bucket, ignore -100
        Evaluator.Sums sums = Evaluator.Sums.zero();
        try (TeacherBatchStream stream = TeacherBatchStream.onePass(eval, batchSize, 0L)) {
            int batches = Math.min(maxBatches, stream.batchesPerEpoch());
            int[] top1 = new int[batchSize * eval.seqLen()];
            for (int i = 0; i < batches; i++) {
                TeacherBatchStream.Batch b = stream.next();
                if (i % collective.size() != collective.rank()) {
                    stream.release(b);
                    continue;
                }
                try {
                    session.inputs().setSequences(b.inputIds(), b.valid());
                    if (live != null) {
                        sums = sums.plus(session.evaluator().distill(live, klOptions, chunkRows));
                    } else {
                        for (int r = 0; r < top1.length; r++) top1[r] = b.targets().top1(r);
                        sums = sums.plus(session.evaluator().distill(b.targets(), top1, klOptions, chunkRows));
                    }
                } catch (BadRowException e) {
                    throw inShards(e, eval, b);
                }
                stream.release(b);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted during evaluation", e);
        }
        if (collective.size() > 1) {
            double[] all = collective.sum(sums.ce(), sums.divergence(), sums.agree(), sums.rows());
            sums = new Evaluator.Sums(all[0], all[1], (long) all[2], (long) all[3]);
        }
        double ce = sums.ce() / Math.max(1, sums.rows());
        return new Evaluation(step, ce, Math.exp(ce), sums.divergence() / Math.max(1, sums.rows()),
                (double) sums.agree() / Math.max(1, sums.rows()), sums.rows(), kind);
    }
}
