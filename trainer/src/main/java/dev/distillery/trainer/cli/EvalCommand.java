package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.io.Writer;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.trainer.data.StrictJson;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.distill.DistillRun;
import dev.distillery.trainer.report.ModelComparison;
import dev.distillery.trainer.teacher.LanguageModelTraining;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code eval}: held-out perplexity of a checkpoint, its KL and agreement with a teacher; or several models compared. */
@Command(name = "eval", mixinStandardHelpOptions = true,
        header = "Evaluates a checkpoint: perplexity, KL to the teacher, top-1 agreement.",
        description = "Evaluates a checkpoint: perplexity on a token file (--tokens), and/or perplexity, KL to the teacher "
                + "and top-1 agreement on held-out teacher shards (--teacher-shards).")
public final class EvalCommand implements Callable<Integer> {

    @Option(names = "--model", description = "Checkpoint folder.")
    Path model;
    @Option(names = "--compare", arity = "1..*", paramLabel = "MODEL",
            description = "Instead of --model: models side by side on --tokens (parameters, bytes, perplexity; with --teacher "
                    + "the KL, top-1 agreement and the teacher's perplexity of each model's samples; generation tokens/s, peak RSS).")
    List<Path> compare;
    @Option(names = "--teacher", description = "With --compare: the teacher model folder, run in the process, listed first.")
    Path teacher;
    @Option(names = "--out", description = "With --compare: write compare.md and compare.png here.")
    Path outDir;
    @Option(names = "--seq-len", defaultValue = "0", description = "With --compare: tokens per window, 0 = the shortest context, at most 1024 (default: ${DEFAULT-VALUE}).")
    int seqLen;
    @Option(names = "--generate", defaultValue = "128", description = "With --compare: greedy tokens timed per model (default: ${DEFAULT-VALUE}).")
    int generate;
    @Option(names = "--tokens", description = "Held-out token file.")
    Path tokens;
    @Option(names = "--teacher-shards", description = "Held-out teacher shard directory.")
    Path shards;
    @Option(names = "--batch", defaultValue = "8", description = "Sequences per batch (default: ${DEFAULT-VALUE}).")
    int batch;
    @Option(names = "--batches", defaultValue = "0",
            description = "At most this many batches, 0 = every held-out sequence (default: ${DEFAULT-VALUE}).")
    int batches;
    @Option(names = "--json", description = "Print one JSON object per input, at full precision.")
    boolean json;
    @Option(names = "--skip-value-check", description = "Do not check every teacher value before evaluating (the check reads the shards once).")
    boolean skipValueCheck;
    @Mixin
    DeviceOptions device;
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        if ((model == null) == (compare == null)) throw new CommandLine.ParameterException(spec.commandLine(), "give --model or --compare");
        if (compare != null) {
            if (tokens == null) throw new CommandLine.ParameterException(spec.commandLine(), "--compare needs --tokens (the held-out token file)");
            try (Kernels kernels = device.open(0, out)) {
                List<ModelComparison.Row> rows = ModelComparison.run(compare, tokens, teacher, batch, batches > 0 ? batches : Integer.MAX_VALUE,
                        seqLen, Math.max(1, generate), kernels, spec.commandLine().getErr());
                out.print(ModelComparison.markdown(rows));
                if (outDir != null) {
                    ModelComparison.write(outDir, rows);
                    out.println("wrote " + outDir.resolve("compare.md") + " and " + outDir.resolve("compare.png"));
                }
                return 0;
            }
        }
        if (teacher != null || outDir != null) throw new CommandLine.ParameterException(spec.commandLine(), "--teacher and --out go with --compare");
        if (tokens == null && shards == null) throw new CommandLine.ParameterException(spec.commandLine(), "give --tokens, --teacher-shards or both");
        try (Kernels kernels = device.open(0, out)) {
            if (tokens != null) {
                try (LanguageModel m = ModelFiles.readTeacher(model, kernels); TokenFile val = TokenFile.open(tokens, m.vocabSize(), "the model's")) {
                    printCrossEntropy(out, LanguageModelTraining.validationLoss(m, kernels, val, batch, m.contextLength(),
                            batches > 0 ? batches : Integer.MAX_VALUE));
                }
            }
            if (shards != null) {
                try (LanguageModel m = ModelFiles.read(model, kernels); TeacherShards ts = TeacherShards.open(shards, true);
                     TrainingSession s = new TrainingSession(m, kernels, AdamW.Config.defaults(), LearningRateSchedule.constant(1e-3), 0,
                             batch, ts.manifest().seqLen())) {
                    if (!skipValueCheck) DistillRun.checkValues(ts, shards.toString(), json ? new PrintWriter(Writer.nullWriter()) : out,
                            spec.commandLine().getErr());
                    DistillRun.Evaluation e = DistillRun.evaluate(s, ts, batch, batches > 0 ? batches : Integer.MAX_VALUE,
                            ChunkedLinearDistillLoss.defaultChunkRows(m.vocabSize()), 0);
                    requireFinite(e.ce(), "cross-entropy on " + shards);
                    requireFinite(e.divergence(), "divergence to the teacher on " + shards);
                    if (json) {
                        Map<String, Object> o = new LinkedHashMap<>();
                        o.put("teacher_shards", shards.toString());
                        o.put("cross_entropy", e.ce());
                        o.put("perplexity", e.perplexity());
                        o.put(e.divergenceKey(), e.divergence());
                        o.put("top1_agreement", e.agreement());
                        o.put("positions", e.rows());
                        out.println(StrictJson.MAPPER.writeValueAsString(o));
                    } else {
                        out.printf("%s: perplexity %.4f, %s %.6f, top-1 agreement %.2f%% (%,d positions)%n", shards,
                                e.perplexity(), e.divergenceName(), e.divergence(), 100 * e.agreement(), e.rows());
                    }
                }
            }
            return 0;
        }
    }

    /** The held-out cross-entropy on --tokens, one line or one JSON object. */
    private void printCrossEntropy(PrintWriter out, double ce) throws java.io.IOException {
        requireFinite(ce, "cross-entropy on " + tokens);
        if (json) {
            out.println(StrictJson.MAPPER.writeValueAsString(Map.of("tokens", tokens.toString(), "cross_entropy", ce, "perplexity", Math.exp(ce))));
        } else {
            out.printf("%s: cross-entropy %.6f, perplexity %.4f%n", tokens, ce, Math.exp(ce));
        }
    }

    /** NaN or infinity is an answer no one can use: an error naming what was measured, not a number printed with exit 0. */
    private static void requireFinite(double x, String what) {
        if (!Double.isFinite(x)) {
            throw new IllegalStateException(what + " is " + x + ": the checkpoint or the data holds non-finite values");
        }
    }
}
