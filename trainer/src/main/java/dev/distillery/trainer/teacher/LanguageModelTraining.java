package dev.distillery.trainer.teacher;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.nn.Transformer;
import dev.distillery.runtime.nn.TransformerConfig;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.trainer.checkpoint.CheckpointStore;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.report.Curves;
import dev.distillery.trainer.report.MetricsLog;
import dev.distillery.trainer.report.Progress;

/**
 * Plain next-token (cross-entropy) training of a GPT-2 model on an llm.c token file: how
 * {@code teacher train} makes a teacher. Each micro-batch is {@code batch} windows of
 * {@code context + 1} tokens at offsets drawn from a seeded {@link Rng} whose state is
 * checkpointed, so a resumed run draws exactly the windows an uninterrupted one would.
 */
public final class LanguageModelTraining {

    /**
     * @param tokens     training token file
     * @param validation held-out token file (optional)
     * @param out        run folder (metrics.jsonl, curves.png, checkpoints/)
     * @param tokenizer  tokenizer.json copied into checkpoints (optional)
     */
    public record Options(Path tokens, Path validation, Path out, Path tokenizer, TransformerConfig model, int batch,
                          int steps, double lr, double minLr, int warmup, double weightDecay, double gradClip,
                          int evalEvery, int evalBatches, int checkpointEvery, long seed) {
        public Options {
            if (batch < 1) throw new IllegalArgumentException("--batch must be >= 1, got " + batch);
            if (steps < 1) throw new IllegalArgumentException("--steps must be >= 1, got " + steps);
        }
    }

    /** The end of a run: its last checkpoint and held-out perplexity (NaN without validation tokens). */
    public record Result(Path checkpoint, double validationPerplexity, double tokensPerSecond) {
    }

    private LanguageModelTraining() {
    }

    public static Result run(Options o, Kernels kernels, boolean resume, PrintWriter out, PrintWriter err) throws IOException {
        return run(o, kernels, resume, 0, out, err);
    }

    /** @param stopAfter stop with a checkpoint after this step (the schedule still spans all steps); 0 = run to the end */
    public static Result run(Options o, Kernels kernels, boolean resume, int stopAfter, PrintWriter out, PrintWriter err) throws IOException {
        int t = o.model().contextLength();
        try (TokenFile train = TokenFile.open(o.tokens());
             TokenFile val = o.validation() == null ? null : TokenFile.open(o.validation())) {
            if (train.size() < t + 1) throw new IOException(o.tokens() + ": " + train.size() + " tokens, fewer than one window of " + (t + 1));
            CheckpointStore store = CheckpointStore.open(o.out().resolve("checkpoints"));
            Optional<CheckpointStore.Checkpoint> from = store.latest();
            if (from.isPresent() && !resume) {
                throw new IOException(store.root() + " already holds checkpoints (latest: step " + from.get().step()
                        + "); pass --resume to continue, or choose another --out");
            }
            Transformer model;
            if (from.isPresent()) {
                model = ModelFiles.read(from.get().dir(), kernels);
            } else {
                model = new Transformer(o.model(), kernels);
                model.initialize(o.seed());
            }
            try (model;
                 TrainingSession session = new TrainingSession(model, kernels, new AdamW.Config(0.9, 0.95, 1e-8, o.weightDecay()),
                         new LearningRateSchedule(o.lr(), o.minLr(), o.warmup(), o.steps()), o.gradClip(), o.batch(), t)) {
                Rng rng = new Rng(o.seed() ^ 0x5DEECE66DL);
                Path lastCheckpoint = null;
                if (from.isPresent()) {
                    Map<String, String> meta = ModelFiles.readOptimizer(from.get().dir().resolve("trainer_state.safetensors"),
                            session.optimizer(), model.parameters().blockElements());
                    rng.setState(Long.parseLong(meta.get("data.rng")));
                    lastCheckpoint = from.get().dir();
                    out.println("resumed from " + lastCheckpoint + " at step " + session.optimizer().step());
                }
                int start = session.optimizer().step();
                out.printf("model: %d layers, %d channels, %d heads, vocab %d, context %d: %,d parameters; %,d training tokens%n",
                        o.model().layers(), o.model().channels(), o.model().heads(), o.model().vocabSize(), t,
                        model.parameters().parameterCount(), train.size());
                out.flush();
                int[] windows = new int[o.batch() * (t + 1)];
                int[] one = new int[t + 1];
                double valPpl = Double.NaN, tokPerS = 0;
                long t0 = System.nanoTime();
                try (MetricsLog metrics = MetricsLog.open(o.out().resolve("metrics.jsonl"), start > 0 ? start : -1)) {
                    Progress progress = new Progress(err, "train", start, o.steps(), 5000);
                    int end = stopAfter > 0 ? Math.min(stopAfter, o.steps()) : o.steps();
                    for (int step = start + 1; step <= end; step++) {
                        long s0 = System.nanoTime();
                        for (int b = 0; b < o.batch(); b++) {
                            long offset = (long) (rng.nextDouble() * (train.size() - t));
                            train.read(offset, t + 1, one);
                            System.arraycopy(one, 0, windows, b * (t + 1), t + 1);
                        }
                        session.inputs().setWindows(windows);
                        TrainingSession.StepResult r;
                        try {
                            r = session.step();
                        } catch (TrainingSession.NonFiniteException e) {
                            throw new IOException(e.getMessage() + ". Stopped; the last good checkpoint is "
                                    + (lastCheckpoint == null ? "none" : lastCheckpoint + " (continue with --resume)"), e);
                        }
                        double seconds = (System.nanoTime() - s0) / 1e9;
                        tokPerS = (double) o.batch() * t * (step - start) / ((System.nanoTime() - t0) / 1e9);
                        Map<String, Object> rec = new LinkedHashMap<>();
                        rec.put("kind", "train");
                        rec.put("step", step);
                        rec.put("loss", r.loss());
                        rec.put("lr", r.lr());
                        rec.put("grad_norm", r.gradNorm());
                        rec.put("tokens_per_s", o.batch() * t / seconds);
                        metrics.write(rec);
                        progress.update(step, String.format("loss %.4f | %,.0f tok/s", r.loss(), tokPerS));
                        boolean last = step == o.steps();
                        if (val != null && (last || (o.evalEvery() > 0 && step % o.evalEvery() == 0))) {
                            valPpl = Math.exp(validationLoss(session, val, o.batch(), t, o.evalBatches()));
                            Map<String, Object> ev = new LinkedHashMap<>();
                            ev.put("kind", "eval");
                            ev.put("step", step);
                            ev.put("perplexity", valPpl);
                            metrics.write(ev);
                            err.printf("eval @ step %d: held-out perplexity %.3f%n", step, valPpl);
                            err.flush();
                        }
                        if (last || step == end || (o.checkpointEvery() > 0 && step % o.checkpointEvery() == 0)) {
                            long rngState = rng.state();
                            int at = step;
                            lastCheckpoint = store.save(step, dir -> {
                                ModelFiles.write(dir, model);
                                if (o.tokenizer() != null) Files.copy(o.tokenizer(), dir.resolve("tokenizer.json"), StandardCopyOption.REPLACE_EXISTING);
                                Map<String, String> meta = new LinkedHashMap<>();
                                meta.put("kind", "lm");
                                meta.put("step", Integer.toString(at));
                                meta.put("data.rng", Long.toString(rngState));
                                ModelFiles.writeOptimizer(dir.resolve("trainer_state.safetensors"), session.optimizer(),
                                        model.parameters().blockElements(), meta);
                            }).dir();
                            store.prune(3);
                            Curves.write(o.out().resolve("curves.png"), "teacher",
                                    List.of(Curves.Series.of("loss", metrics.records(), "train", "loss")),
                                    List.of(Curves.Series.of("held-out perplexity", metrics.records(), "eval", "perplexity")));
                        }
                    }
                }
                if (lastCheckpoint == null) lastCheckpoint = from.map(CheckpointStore.Checkpoint::dir).orElse(null);
                out.printf("done: checkpoint %s%s%n", lastCheckpoint, Double.isNaN(valPpl) ? "" : String.format(", held-out perplexity %.3f", valPpl));
                return new Result(lastCheckpoint, valPpl, tokPerS);
            }
        }
    }

    /** Mean CE over up to {@code maxBatches} batches of consecutive non-overlapping windows from the start of {@code val}. */
    public static double validationLoss(TrainingSession session, TokenFile val, int batch, int t, int maxBatches) throws IOException {
        long windowsAvailable = (val.size() - 1) / t;
        int batches = (int) Math.min(maxBatches, windowsAvailable / batch);
        if (batches < 1) throw new IOException(val.path() + ": " + val.size() + " tokens, fewer than one batch of " + batch + " windows of " + (t + 1));
        int[] windows = new int[batch * (t + 1)];
        int[] one = new int[t + 1];
        double sum = 0;
        for (int i = 0; i < batches; i++) {
            for (int b = 0; b < batch; b++) {
                val.read((long) (i * batch + b) * t, t + 1, one);
                System.arraycopy(one, 0, windows, b * (t + 1), t + 1);
            }
            session.inputs().setWindows(windows);
            sum += session.evaluator().crossEntropy();
        }
        return sum / batches;
    }
}
