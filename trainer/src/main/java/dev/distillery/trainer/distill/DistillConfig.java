package dev.distillery.trainer.distill;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.databind.JsonNode;

import dev.distillery.kernels.Precision;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.distill.FeatureDistillation;
import dev.distillery.runtime.distill.TeacherEnsemble;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.trainer.data.StrictJson;

/**
 * {@code distill --config run.json} (docs/CONFIG.md). Keys are snake_case; an unknown key is an
 * error that names it with its path; every absent key takes the default documented here. Paths
 * are relative to the working directory.
 *
 * @param teacher         teacher shard directory to train on (required)
 * @param evalTeacher     held-out teacher shard directory for evaluation (optional)
 * @param out             run folder: metrics.jsonl, curves.png, checkpoints/ (default "runs/distill")
 * @param tokenizer       tokenizer.json copied into every checkpoint (optional)
 * @param initFrom        a checkpoint folder to start the student from (optional; else a fresh GPT-2 init)
 * @param student         the student's architecture (ignored with init_from)
 * @param steps           optimizer steps (default 1000)
 * @param batchSize       sequences per micro-batch (default 8)
 * @param gradAccum       micro-batches per optimizer step (default 1)
 * @param lr              peak learning rate (default 1e-3) after warmup_steps (default 0), cosine to min_lr (default lr/10)
 * @param weightDecay     AdamW decoupled weight decay on matrices (default 0.1)
 * @param gradClip        global gradient-norm clip, 0 = off (default 1.0)
 * @param evalEvery       steps between evaluations, 0 = only at the end (default 0)
 * @param evalBatches     batches per evaluation, 0 = every held-out sequence (default 8)
 * @param checkpointEvery steps between checkpoints, 0 = only at the end (default 500; a stop by signal also checkpoints)
 * @param keepCheckpoints checkpoints kept (default 3)
 * @param seed            model init and data order (default 1234)
 * @param threads         CPU threads, 0 = all cores (default 0)
 * @param prefetch        batches prepared ahead (default 2)
 * @param verifyChecksums stream every shard through SHA-256 before the first step (default true)
 * @param checkValues     check every teacher value before the first step ({@code ShardValues}; default true)
 * @param initLayers      with init_from: the student is these blocks of that model, in this order, with its
 *                        embeddings and final layernorm (e.g. [0, 2, 4] of a 6-layer teacher); absent = all of it
 * @param teacherModel    instead of {@code teacher}: a model run in the process on token windows (optional)
 * @param onPolicy        with teacher_model: a share of batches continued by the student's own samples (optional)
 * @param hiddenStates    feature distillation: student and teacher hidden states compared layer pair by pair (optional)
 * @param teachers        more teachers on the same windows, each shards or a model, with weights (optional)
 * @param teacherWeight   with teachers: the weight of the first teacher ({@code teacher} or {@code teacher_model}; default 1)
 * @param teachersCombination with teachers: mean (of the teachers' losses, default) or mixture (of their distributions)
 * @param precision       fp32 (default) or bf16: mixed precision, every GEMM on bf16 operands with fp32 sums
 *                        where the device has bf16 arithmetic (docs/CONFIG.md#precision)
 * @param recomputeAttention none of attention's probabilities kept: made a band of rows at a time in the
 *                        forward and again in the backward; less memory, more time (default false)
 */
@JsonInclude(JsonInclude.Include.ALWAYS)
public record DistillConfig(String teacher, String evalTeacher, String out, String tokenizer, String initFrom,
                            Student student, Integer steps, Integer batchSize, Integer gradAccum,
                            Double lr, Double minLr, Integer warmupSteps, Double weightDecay, Double beta1, Double beta2,
                            Double gradClip, Loss loss, Integer evalEvery, Integer evalBatches, Integer checkpointEvery,
                            Integer keepCheckpoints, Long seed, Integer threads, Integer prefetch, Boolean verifyChecksums,
                            Boolean checkValues, java.util.List<Integer> initLayers, TeacherModel teacherModel, OnPolicy onPolicy,
                            HiddenStates hiddenStates, List<MoreTeacher> teachers, Double teacherWeight, String teachersCombination,
                            String precision, Boolean recomputeAttention) {

    /**
     * On-policy distillation (GKD): a {@code fraction} of the micro-batches (default 0.5, drawn from
     * the seed) keep their windows' first seq_len − max_new_tokens tokens as prompts and continue
     * them with the student's own samples at {@code temperature} (default 1, the full
     * distribution; 0 = greedy); the teacher run in the process scores them, and the loss is
     * {@code divergence} (forward_kl | reverse_kl | jsd with {@code jsd_beta}, default forward_kl:
     * docs/CONFIG.md says why) on the generated positions only, the prompt's masked.
     */
    public record OnPolicy(Double fraction, Integer maxNewTokens, Double temperature, String divergence, Double jsdBeta) {
        public OnPolicy {
            fraction = fraction == null ? 0.5 : fraction;
            temperature = temperature == null ? 1.0 : temperature;
            divergence = divergence == null ? "forward_kl" : divergence;
            jsdBeta = jsdBeta == null ? 0.5 : jsdBeta;
        }

        /** The divergence of the on-policy batches. */
        public Divergence divergenceKind() {
            return DistillConfig.divergence(divergence, jsdBeta, "on_policy");
        }
    }

    /** forward_kl, reverse_kl or jsd (with β in (0, 1)), as {@code section.divergence} and {@code section.jsd_beta} name it. */
    private static Divergence divergence(String name, double jsdBeta, String section) {
        return switch (name) {
            case "forward_kl" -> Divergence.forwardKl();
            case "reverse_kl" -> Divergence.reverseKl();
            case "jsd" -> {
                require(jsdBeta > 0 && jsdBeta < 1, section + ".jsd_beta", "must be in (0, 1) (the ends are the KLs), got " + jsdBeta);
                yield Divergence.jsd(jsdBeta);
            }
            default -> throw new IllegalArgumentException("'" + section + ".divergence' must be forward_kl, reverse_kl or jsd, got " + name);
        };
    }

    /**
     * One more teacher: a shard directory ({@code shards}) of the same windows, or a model folder
     * ({@code model}) run in the process on them; {@code weight} (default 1) against the others'.
     */
    public record MoreTeacher(String shards, String model, Double weight) {
        public MoreTeacher {
            weight = weight == null ? 1.0 : weight;
        }
    }

    /** The GEMMs' arithmetic, from 'precision'. */
    public Precision gemmPrecision() {
        return Precision.parse(precision, "'precision'");
    }

    /** The combination of several teachers, from 'teachers_combination'. */
    public TeacherEnsemble.Combination combination() {
        return switch (teachersCombination) {
            case "mean" -> TeacherEnsemble.Combination.MEAN_OF_LOSSES;
            case "mixture" -> TeacherEnsemble.Combination.MIXTURE;
            default -> throw new IllegalArgumentException("'teachers_combination' must be mean or mixture, got \"" + teachersCombination + "\"");
        };
    }

    /** Every teacher's weight, the first teacher's first, normalised to sum to 1. */
    public float[] teacherWeights() {
        double[] w = new double[1 + (teachers == null ? 0 : teachers.size())];
        w[0] = teacherWeight;
        for (int i = 1; i < w.length; i++) w[i] = teachers.get(i - 1).weight();
        return TeacherEnsemble.normalized(w);
    }

    /**
     * Feature (hidden-state) distillation: {@code pairs} of [student state, teacher state], numbered
     * as transformers' output_hidden_states (0 the embeddings, l after block l, the last the final
     * norm's output); {@code distance} mse | cosine (default mse); {@code weight} (default 1) on
     * the mean over pairs, added to the soft-target and hard-label loss. Each pair has a learned
     * projection from the student's width to the teacher's, kept in the trainer state. The
     * teacher's states come from the teacher run in the process, or from shards that carry them
     * ({@code teacher dump-logits --hidden-layers}).
     */
    public record HiddenStates(List<List<Integer>> pairs, String distance, Double weight) {
        public HiddenStates {
            distance = distance == null ? "mse" : distance;
            weight = weight == null ? 1.0 : weight;
        }

        public FeatureDistance distanceKind() {
            return switch (distance) {
                case "mse" -> FeatureDistance.MSE;
                case "cosine" -> FeatureDistance.COSINE;
                default -> throw new IllegalArgumentException("'hidden_states.distance' must be mse or cosine, got \"" + distance + "\"");
            };
        }

        /** The runtime's spec of these keys (validated). */
        public FeatureDistillation.Spec spec() {
            List<FeatureDistillation.Pair> out = new ArrayList<>();
            for (List<Integer> p : pairs) out.add(new FeatureDistillation.Pair(p.get(0), p.get(1)));
            return new FeatureDistillation.Spec(out, distanceKind(), weight);
        }
    }

    /**
     * A teacher run in the training process instead of stored shards: {@code path} (a model folder,
     * GPT-2 or Llama family) scores windows of {@code seq_len} tokens (default: its context, at most
     * 1024) cut from the token file {@code tokens}; {@code eval_tokens} (optional) is the held-out
     * file, scored the same way.
     */
    public record TeacherModel(String path, String tokens, String evalTokens, Integer seqLen) {
    }

    /**
     * The student; vocab_size defaults to the teacher's (larger is allowed: padding columns).
     * Defaults: architecture gpt2, 2 layers, 128 channels, 4 heads, context = the shards' sequence
     * length. The Llama architecture adds kv_heads (default: heads), intermediate (the SwiGLU
     * width, default 8/3 · channels rounded up to a multiple of 32), rope_theta (default 10000) and
     * tie_embeddings (default true).
     */
    public record Student(String architecture, Integer layers, Integer channels, Integer heads, Integer kvHeads, Integer intermediate,
                          Double ropeTheta, Boolean tieEmbeddings, Integer context, Integer vocabSize) {
        public Student {
            architecture = architecture == null ? "gpt2" : architecture;
            layers = layers == null ? 2 : layers;
            channels = channels == null ? 128 : channels;
            heads = heads == null ? 4 : heads;
        }

        /** The architectures a student can have. */
        public enum Architecture { GPT2, LLAMA }

        public Architecture family() {
            return switch (architecture) {
                case "gpt2" -> Architecture.GPT2;
                case "llama" -> Architecture.LLAMA;
                default -> throw new IllegalArgumentException("'student.architecture' must be gpt2 or llama, got \"" + architecture + "\"");
            };
        }

        /** A GPT-2 student of these sizes (context and vocab_size null: the shards'). */
        public static Student gpt2(int layers, int channels, int heads, Integer context, Integer vocabSize) {
            return new Student("gpt2", layers, channels, heads, null, null, null, null, context, vocabSize);
        }

        static Student defaults() {
            return new Student(null, null, null, null, null, null, null, null, null, null);
        }
    }

    /**
     * The loss (docs/KERNELS.md): temperature (default 1), alpha = weight of the hard-label CE
     * (default 0.5), divergence forward_kl | reverse_kl | jsd (jsd_beta, default 0.5),
     * temperature_squared (default true), topk tail | renormalize (default tail),
     * sparse_temperature require_match | rescale_topk (default require_match), reduction mean | sum
     * (default mean), chunk_rows of the fused LM head + loss (default: 32 MiB of logits);
     * schedule constant | linear | cosine (default constant) moves temperature and alpha from
     * their values at step 1 to temperature_end and alpha_end at the last step.
     */
    public record Loss(Double temperature, Double alpha, String divergence, Double jsdBeta, Boolean temperatureSquared,
                       String topk, String sparseTemperature, String reduction, Integer chunkRows, String schedule,
                       Double temperatureEnd, Double alphaEnd) {

        /** How temperature and alpha move over the steps. */
        public enum Schedule { CONSTANT, LINEAR, COSINE }

        public Loss {
            temperature = temperature == null ? 1.0 : temperature;
            alpha = alpha == null ? 0.5 : alpha;
            divergence = divergence == null ? "forward_kl" : divergence;
            jsdBeta = jsdBeta == null ? 0.5 : jsdBeta;
            temperatureSquared = temperatureSquared == null || temperatureSquared;
            topk = topk == null ? "tail" : topk;
            sparseTemperature = sparseTemperature == null ? "require_match" : sparseTemperature;
            reduction = reduction == null ? "mean" : reduction;
            chunkRows = chunkRows == null ? 0 : chunkRows;
            schedule = schedule == null ? "constant" : schedule;
        }

        /** The loss with only the keys that existed before schedules (the rest default). */
        public Loss(Double temperature, Double alpha, String divergence, Double jsdBeta, Boolean temperatureSquared, String topk,
                    String sparseTemperature, String reduction, Integer chunkRows) {
            this(temperature, alpha, divergence, jsdBeta, temperatureSquared, topk, sparseTemperature, reduction, chunkRows, null, null, null);
        }

        public Schedule scheduleKind() {
            return switch (schedule) {
                case "constant" -> Schedule.CONSTANT;
                case "linear" -> Schedule.LINEAR;
                case "cosine" -> Schedule.COSINE;
                default -> throw new IllegalArgumentException("'loss.schedule' must be constant, linear or cosine, got \"" + schedule + "\"");
            };
        }

        /** The temperature at the last step (the schedule's end; the start where there is no end). */
        public double lastTemperature() {
            return temperatureEnd == null ? temperature : temperatureEnd;
        }

        /**
         * The loss's options at {@code step} (1-based) of {@code steps}: temperature and alpha at
         * fraction f of the way from their start to their end values, f = 0 (constant),
         * x (linear) or (1 − cos πx)/2 (cosine), x = (step − 1)/(steps − 1).
         */
        public DistillOptions optionsAt(int step, int steps) {
            double x = steps <= 1 ? 1 : Math.min(1, Math.max(0, (step - 1) / (double) (steps - 1)));
            double f = switch (scheduleKind()) {
                case CONSTANT -> 0;
                case LINEAR -> x;
                case COSINE -> (1 - Math.cos(Math.PI * x)) / 2;
            };
            double t = temperature + (lastTemperature() - temperature) * f;
            double a = alpha + ((alphaEnd == null ? alpha : alphaEnd) - alpha) * f;
            return options(t, a);
        }

        /** The options at the schedule's start. */
        public DistillOptions options() {
            if (scheduleKind() == Schedule.CONSTANT && (temperatureEnd != null || alphaEnd != null)) {
                throw new IllegalArgumentException("'loss." + (temperatureEnd != null ? "temperature_end" : "alpha_end")
                        + "' needs 'loss.schedule' linear or cosine (the schedule is constant)");
            }
            options(lastTemperature(), alphaEnd == null ? alpha : alphaEnd);   // the end is checked as the start is
            return options(temperature, alpha);
        }

        private DistillOptions options(double temperature, double alpha) {
            Divergence d = DistillConfig.divergence(divergence, jsdBeta, "loss");
            DistillOptions.TopKMode mode = switch (topk) {
                case "tail" -> DistillOptions.TopKMode.TAIL_BUCKET;
                case "renormalize" -> DistillOptions.TopKMode.RENORMALIZE;
                default -> throw new IllegalArgumentException("'loss.topk' must be tail or renormalize, got " + topk);
            };
            DistillOptions.SparseTemperature st = switch (sparseTemperature) {
                case "require_match" -> DistillOptions.SparseTemperature.REQUIRE_MATCH;
                case "rescale_topk" -> DistillOptions.SparseTemperature.RESCALE_TOPK;
                default -> throw new IllegalArgumentException("'loss.sparse_temperature' must be require_match or rescale_topk, got " + sparseTemperature);
            };
            try {
                return new DistillOptions((float) temperature, (float) alpha, d, temperatureSquared, mode, st,
                        DifferentiableOps.IGNORE_INDEX);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("'loss': " + e.getMessage(), e);
            }
        }

        /**
         * Whether this loss can train on shards of {@code layout}, said in the config's keys
         * (the kernels say it in their own terms, and only at step 1).
         *
         * @throws IllegalArgumentException naming the keys to change, and {@code manifest}
         */
        public void requireCompatible(TeacherLayout layout, Path manifest) {
            double shardT = layout.shardTemperature();
            switch (layout.kind()) {
                case SAMPLED -> {
                    if (!divergence.equals("forward_kl")) {
                        throw new IllegalArgumentException("'loss.divergence' is " + divergence + ", but sampled shards (" + manifest
                                + ") estimate the teacher only where it was sampled, which forward_kl alone needs; use forward_kl");
                    }
                    if (temperature != shardT || lastTemperature() != shardT) {
                        throw new IllegalArgumentException("'loss.temperature' is " + temperature + (lastTemperature() != temperature
                                ? " to " + lastTemperature() : "") + ", but the sampled shards were drawn at "
                                + shardT + " (" + manifest + ") and samples cannot be reweighted; set 'loss.temperature' to " + shardT);
                    }
                }
                case TOP_K -> {
                    if ((temperature != shardT || lastTemperature() != shardT) && topk.equals("tail") && sparseTemperature.equals("require_match")) {
                        throw new IllegalArgumentException("'loss.temperature' is " + temperature + (lastTemperature() != temperature
                                ? " to " + lastTemperature() : "") + ", but the top-k shards' logsumexp is at "
                                + shardT + " (" + manifest + "); set 'loss.temperature' to " + shardT + ", or 'loss.sparse_temperature': "
                                + "\"rescale_topk\" (keeps the shards' tail mass, an approximation), or 'loss.topk': \"renormalize\"");
                    }
                }
                case DENSE -> {
                }
            }
        }

        public DifferentiableOps.Reduction reductionMode() {
            return switch (reduction) {
                case "mean" -> DifferentiableOps.Reduction.MEAN;
                case "sum" -> DifferentiableOps.Reduction.SUM;
                default -> throw new IllegalArgumentException("'loss.reduction' must be mean or sum, got " + reduction);
            };
        }
    }

    public DistillConfig {
        out = out == null ? "runs/distill" : out;
        student = student == null ? Student.defaults() : student;
        steps = steps == null ? 1000 : steps;
        batchSize = batchSize == null ? 8 : batchSize;
        gradAccum = gradAccum == null ? 1 : gradAccum;
        lr = lr == null ? 1e-3 : lr;
        minLr = minLr == null ? lr / 10 : minLr;
        warmupSteps = warmupSteps == null ? 0 : warmupSteps;
        weightDecay = weightDecay == null ? 0.1 : weightDecay;
        beta1 = beta1 == null ? 0.9 : beta1;
        beta2 = beta2 == null ? 0.95 : beta2;
        gradClip = gradClip == null ? 1.0 : gradClip;
        loss = loss == null ? new Loss(null, null, null, null, null, null, null, null, null) : loss;
        evalEvery = evalEvery == null ? 0 : evalEvery;
        evalBatches = evalBatches == null ? 8 : evalBatches;
        checkpointEvery = checkpointEvery == null ? 500 : checkpointEvery;
        keepCheckpoints = keepCheckpoints == null ? 3 : keepCheckpoints;
        seed = seed == null ? 1234L : seed;
        threads = threads == null ? 0 : threads;
        prefetch = prefetch == null ? 2 : prefetch;
        verifyChecksums = verifyChecksums == null || verifyChecksums;
        checkValues = checkValues == null || checkValues;
        teacherWeight = teacherWeight == null ? 1.0 : teacherWeight;
        teachersCombination = teachersCombination == null ? "mean" : teachersCombination;
        precision = precision == null ? "fp32" : precision;
        recomputeAttention = recomputeAttention != null && recomputeAttention;
    }

    /** This config with another step count (the schedule's length changes with it). */
    public DistillConfig withSteps(int n) {
        return new DistillConfig(teacher, evalTeacher, out, tokenizer, initFrom, student, n, batchSize, gradAccum, lr, minLr, warmupSteps,
                weightDecay, beta1, beta2, gradClip, loss, evalEvery, evalBatches, checkpointEvery, keepCheckpoints, seed, threads,
                prefetch, verifyChecksums, checkValues, initLayers, teacherModel, onPolicy, hiddenStates, teachers, teacherWeight,
                teachersCombination, precision, recomputeAttention);
    }

    /** This config taught by the model in {@code path}, run in the process (a pipeline's later stage). */
    public DistillConfig withTeacherModelPath(String path) {
        TeacherModel tm = teacherModel == null ? new TeacherModel(path, null, null, null)
                : new TeacherModel(path, teacherModel.tokens(), teacherModel.evalTokens(), teacherModel.seqLen());
        return new DistillConfig(teacher, evalTeacher, out, tokenizer, initFrom, student, steps, batchSize, gradAccum, lr, minLr, warmupSteps,
                weightDecay, beta1, beta2, gradClip, loss, evalEvery, evalBatches, checkpointEvery, keepCheckpoints, seed, threads,
                prefetch, verifyChecksums, checkValues, initLayers, tm, onPolicy, hiddenStates, teachers, teacherWeight,
                teachersCombination, precision, recomputeAttention);
    }

    /** Checks what can be checked without opening the data; problems name the key. */
    public void validate() {
        require(teacher != null || teacherModel != null, "teacher",
                "is required: a teacher shard directory, or 'teacher_model' for a model run in the process");
        require(teacher == null || teacherModel == null, "teacher_model", "and 'teacher' name two teachers; give one");
        require(teacher == null || !teacher.isBlank(), "teacher", "must name a shard directory, got \"\"");
        if (teacherModel != null) {
            require(teacherModel.path() != null && !teacherModel.path().isBlank(), "teacher_model.path", "is required (a model folder)");
            require(teacherModel.tokens() != null && !teacherModel.tokens().isBlank(), "teacher_model.tokens",
                    "is required (the token file the teacher and the student read)");
            require(teacherModel.seqLen() == null || teacherModel.seqLen() >= 2, "teacher_model.seq_len", "must be >= 2, got " + teacherModel.seqLen());
            require(evalTeacher == null, "eval_teacher", "holds stored shards; with 'teacher_model' the held-out file is 'teacher_model.eval_tokens'");
        }
        if (onPolicy != null) {
            require(teacherModel != null, "on_policy", "needs 'teacher_model': the student's samples are scored by a teacher run in the process");
            require(onPolicy.maxNewTokens() != null && onPolicy.maxNewTokens() >= 1, "on_policy.max_new_tokens",
                    "is required, >= 1 (the sampled continuation of each window), got " + onPolicy.maxNewTokens());
            require(onPolicy.fraction() > 0 && onPolicy.fraction() <= 1, "on_policy.fraction", "must be in (0, 1], got " + onPolicy.fraction());
            require(onPolicy.temperature() >= 0, "on_policy.temperature", "must be >= 0 (0 = greedy), got " + onPolicy.temperature());
            onPolicy.divergenceKind();
        }
        if (hiddenStates != null) {
            require(hiddenStates.pairs() != null && !hiddenStates.pairs().isEmpty(), "hidden_states.pairs",
                    "is required: a list of [student state, teacher state] pairs, e.g. [[1, 2], [2, 4]]");
            for (List<Integer> p : hiddenStates.pairs()) {
                require(p != null && p.size() == 2 && p.get(0) != null && p.get(1) != null && p.get(0) >= 0 && p.get(1) >= 0,
                        "hidden_states.pairs", "must hold pairs [student state, teacher state] of numbers >= 0, got " + p);
            }
            hiddenStates.distanceKind();
            require(hiddenStates.weight() >= 0 && !hiddenStates.weight().isInfinite(), "hidden_states.weight",
                    "must be finite and >= 0, got " + hiddenStates.weight());
            require(onPolicy == null, "hidden_states", "and 'on_policy' cannot be combined: the student's own samples have no stored states to match");
        }
        if (teachers != null) {
            require(!teachers.isEmpty(), "teachers", "must list at least one more teacher, or be left out");
            for (int i = 0; i < teachers.size(); i++) {
                MoreTeacher t = teachers.get(i);
                require(t != null && (t.shards() == null) != (t.model() == null), "teachers[" + i + "]",
                        "must give exactly one of 'shards' (a shard directory of the same windows) and 'model' (a model folder run in the process)");
                require(t.weight() > 0 && !t.weight().isInfinite(), "teachers[" + i + "].weight", "must be positive and finite, got " + t.weight());
            }
            require(teacherWeight > 0 && !teacherWeight.isInfinite(), "teacher_weight", "must be positive and finite, got " + teacherWeight);
            require(combination() != TeacherEnsemble.Combination.MIXTURE || teachers.size() + 1 <= TeacherTargets.Mixture.MAX_TEACHERS,
                    "teachers", "lists " + teachers.size() + " more teachers, and 'teachers_combination' mixture takes at most "
                            + TeacherTargets.Mixture.MAX_TEACHERS + " in all; use \"mean\" for more");
            require(onPolicy == null, "teachers", "and 'on_policy' cannot be combined: the student's samples are scored by the one teacher run in the process");
        } else {
            require(teacherWeight == 1.0 && teachersCombination.equals("mean"), teacherWeight != 1.0 ? "teacher_weight" : "teachers_combination",
                    "applies to several teachers; 'teachers' lists none");
        }
        require(out != null && !out.isBlank(), "out", "must name a folder, got \"" + out + "\"");
        require(evalTeacher == null || !evalTeacher.isBlank(), "eval_teacher", "must name a shard directory or be left out, got \"\"");
        require(tokenizer == null || !tokenizer.isBlank(), "tokenizer", "must name a tokenizer.json or be left out, got \"\"");
        require(initLayers == null || initFrom != null, "init_layers", "needs init_from (the model whose blocks it names)");
        require(initLayers == null || !initLayers.isEmpty() && initLayers.stream().allMatch(l -> l != null && l >= 0), "init_layers",
                "must list block numbers >= 0, got " + initLayers);
        require(steps >= 1, "steps", "must be >= 1, got " + steps);
        require(batchSize >= 1, "batch_size", "must be >= 1, got " + batchSize);
        require(gradAccum >= 1, "grad_accum", "must be >= 1, got " + gradAccum);
        require(lr > 0, "lr", "must be positive, got " + lr);
        require(minLr >= 0 && minLr <= lr, "min_lr", "must be in [0, lr], got " + minLr);
        require(warmupSteps >= 0, "warmup_steps", "must be >= 0, got " + warmupSteps);
        require(gradClip >= 0, "grad_clip", "must be >= 0, got " + gradClip);
        require(evalEvery >= 0, "eval_every", "must be >= 0, got " + evalEvery);
        require(evalBatches >= 0, "eval_batches", "must be >= 0 (0 = every held-out sequence), got " + evalBatches);
        require(checkpointEvery >= 0, "checkpoint_every", "must be >= 0, got " + checkpointEvery);
        require(keepCheckpoints >= 1, "keep_checkpoints", "must be >= 1, got " + keepCheckpoints);
        require(threads >= 0, "threads", "must be >= 0, got " + threads);
        require(precision.equals("fp32") || precision.equals("bf16"), "precision", "must be fp32 or bf16, got \"" + precision + "\"");
        require(prefetch >= 1, "prefetch", "must be >= 1, got " + prefetch);
        require(loss.chunkRows() >= 0, "loss.chunk_rows", "must be >= 0, got " + loss.chunkRows());
        loss.options();
        loss.reductionMode();
        // the student's sizes, bounded before anything is allocated (the rest once the shards give vocabulary and context)
        require(student.layers() >= 1 && student.layers() <= LanguageModel.MAX_LAYERS, "student.layers",
                "must be in [1, " + LanguageModel.MAX_LAYERS + "], got " + student.layers());
        require(student.channels() >= 1 && student.channels() <= LanguageModel.MAX_CHANNELS, "student.channels",
                "must be in [1, " + LanguageModel.MAX_CHANNELS + "], got " + student.channels());
        require(student.heads() >= 1 && student.channels() % student.heads() == 0, "student.heads",
                "must divide student.channels (" + student.channels() + "), got " + student.heads());
        if (student.family() == Student.Architecture.GPT2) {
            for (var key : java.util.Map.of("kv_heads", student.kvHeads() == null, "intermediate", student.intermediate() == null,
                    "rope_theta", student.ropeTheta() == null, "tie_embeddings", student.tieEmbeddings() == null).entrySet()) {
                require(key.getValue(), "student." + key.getKey(), "applies to the llama architecture, not to gpt2 (set 'student.architecture')");
            }
        } else {
            int kv = student.kvHeads() == null ? student.heads() : student.kvHeads();
            require(kv >= 1 && student.heads() % kv == 0, "student.kv_heads", "must divide student.heads (" + student.heads() + "), got " + kv);
            require((student.channels() / student.heads()) % 2 == 0, "student.heads",
                    "must leave an even head size for the rotary embedding: channels " + student.channels() + " / heads " + student.heads() + " is odd");
            require(student.intermediate() == null || student.intermediate() >= 1 && student.intermediate() <= 4 * LanguageModel.MAX_CHANNELS,
                    "student.intermediate", "must be in [1, " + 4 * LanguageModel.MAX_CHANNELS + "], got " + student.intermediate());
            require(student.ropeTheta() == null || student.ropeTheta() > 1, "student.rope_theta", "must be above 1, got " + student.ropeTheta());
        }
        require(student.context() == null || student.context() >= 1 && student.context() <= LanguageModel.MAX_CONTEXT,
                "student.context", "must be in [1, " + LanguageModel.MAX_CONTEXT + "], got " + student.context());
        require(student.vocabSize() == null || student.vocabSize() >= 1 && student.vocabSize() <= LanguageModel.MAX_VOCAB,
                "student.vocab_size", "must be in [1, " + LanguageModel.MAX_VOCAB + "], got " + student.vocabSize());
    }

    private static void require(boolean ok, String key, String problem) {
        if (!ok) throw new IllegalArgumentException("'" + key + "' " + problem);
    }

    /** Reads and validates a config file; every problem names the file and the key. */
    public static DistillConfig read(Path file) throws IOException {
        if (!java.nio.file.Files.exists(file)) throw new IOException(file + ": no such config file");
        DistillConfig c = StrictJson.read(file, DistillConfig.class);
        try {
            c.validate();
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": " + e.getMessage(), e);
        }
        return c;
    }

    /** The config as JSON, every default written out (stored with each checkpoint). */
    public String toJson() {
        try {
            return StrictJson.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsString(this);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    public static DistillConfig fromJson(String json) throws IOException {
        return StrictJson.MAPPER.readValue(json, DistillConfig.class);
    }

    /**
     * What differs between the config a checkpoint was written with ({@code storedJson}) and this
     * one: a changed schedule or loss is allowed on resume, but never silent; the student comes
     * from the checkpoint.
     */
    public List<String> changesSince(String storedJson) throws IOException {
        if (storedJson == null) return List.of("the checkpoint stores no config to compare with");
        JsonNode before = StrictJson.MAPPER.readTree(storedJson), after = StrictJson.MAPPER.readTree(toJson());
        List<String> out = new ArrayList<>();
        diff("", before, after, out);
        return out;
    }

    private static void diff(String path, JsonNode a, JsonNode b, List<String> out) {
        if (a.isObject() && b.isObject()) {
            Set<String> keys = new TreeSet<>();
            a.fieldNames().forEachRemaining(keys::add);
            b.fieldNames().forEachRemaining(keys::add);
            for (String k : keys) diff(path.isEmpty() ? k : path + "." + k, a.path(k), b.path(k), out);
        } else if (!a.equals(b)) {
            out.add("'" + path + "' was " + a + " when the checkpoint was written, is " + b + " now"
                    + (path.startsWith("student") ? " (ignored: the student comes from the checkpoint)" : ""));
        }
    }
}
