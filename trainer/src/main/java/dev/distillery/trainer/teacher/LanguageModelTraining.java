package dev.distillery.trainer.teacher;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.LanguageModelForward;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;
import dev.distillery.trainer.checkpoint.CheckpointStore;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.io.FolderLock;
import dev.distillery.trainer.loop.TrainingLoop;
import dev.distillery.trainer.report.Curves;

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
     * @param recomputeAttention none of attention's probabilities kept: made a band of rows at a time, and again in the backward (less memory, more time)
     */
    public record Options(Path tokens, Path validation, Path out, Path tokenizer, Gpt2Config model, int batch,
                          int steps, double lr, double minLr, int warmup, double weightDecay, double gradClip,
                          int evalEvery, int evalBatches, int checkpointEvery, long seed, boolean recomputeAttention) {
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
        int v = o.model().vocabSize();
        try (TokenFile train = TokenFile.open(o.tokens(), v, "the model's");    // inputs before the folder: bad input writes nothing
             TokenFile val = o.validation() == null ? null : TokenFile.open(o.validation(), v, "the model's");
             FolderLock lock = FolderLock.acquire(o.out(), "--out")) {
            if (train.size() < t + 1) throw new IOException(o.tokens() + ": " + train.size() + " tokens, fewer than one window of " + (t + 1));
            CheckpointStore store = CheckpointStore.open(o.out().resolve("checkpoints"));
            Optional<CheckpointStore.Checkpoint> from = TrainingLoop.resumeFrom(store, o.out(), resume, "--out");
            LanguageModel model;
            if (from.isPresent()) {
                model = ModelFiles.read(from.get().dir(), kernels);
            } else {
                model = new Gpt2(o.model(), kernels);
                model.initialize(o.seed());
            }
            try (model;
                 TrainingSession session = new TrainingSession(model, kernels, new AdamW.Config(0.9, 0.95, 1e-8, o.weightDecay()),
                         new LearningRateSchedule(o.lr(), o.minLr(), o.warmup(), o.steps()), o.gradClip(), o.batch(), t)) {
                session.recomputeAttention(o.recomputeAttention());
                Rng rng = new Rng(o.seed() ^ 0x5DEECE66DL);
                Path lastCheckpoint = null;
                if (from.isPresent()) {
                    Map<String, String> meta = TrainingLoop.restore(session, from.get(), out);
                    rng.setState(Long.parseLong(meta.get("data.rng")));
                    lastCheckpoint = from.get().dir();
                }
                out.printf("model: %d layers, %d channels, %d heads, vocab %d, context %d: %,d parameters; %,d training tokens%n",
                        o.model().layers(), o.model().channels(), o.model().heads(), o.model().vocabSize(), t,
                        model.parameters().parameterCount(), train.size());
                String attention = TrainingLoop.attentionMemoryNote(session.keptAttentionBytes(), "--recompute-attention");
                if (attention != null) out.println(attention);
                out.flush();
                Steps steps = new Steps(o, session, train, val, rng, err);
                TrainingLoop.Outcome outcome = TrainingLoop.run(session, store, steps, new TrainingLoop.Settings("lm", "train", o.steps(),
                        stopAfter, o.evalEvery(), o.checkpointEvery(), 3, o.out(), o.tokenizer()), lastCheckpoint, err);
                Path checkpoint = outcome.lastCheckpoint() != null ? outcome.lastCheckpoint() : from.map(CheckpointStore.Checkpoint::dir).orElse(null);
                out.printf("done: checkpoint %s%s%n", checkpoint,
                        Double.isNaN(steps.validationPerplexity) ? "" : String.format(", held-out perplexity %.3f", steps.validationPerplexity));
                return new Result(checkpoint, steps.validationPerplexity, steps.tokensPerSecond);
            }
        }
    }

    /** Next-token training's steps in the shared loop: windows at seeded offsets, held-out perplexity, the sampler's state. */
    private static final class Steps implements TrainingLoop.Task {
        private final Options o;
        private final TrainingSession session;
        private final TokenFile train, val;
        private final Rng rng;
        private final PrintWriter err;
        private final int t, startStep;
        private final int[] windows, one;
        private final long loopStart = System.nanoTime();
        double validationPerplexity = Double.NaN, tokensPerSecond;

        Steps(Options o, TrainingSession session, TokenFile train, TokenFile val, Rng rng, PrintWriter err) {
            this.o = o;
            this.session = session;
            this.train = train;
            this.val = val;
            this.rng = rng;
            this.err = err;
            this.t = o.model().contextLength();
            this.startStep = session.optimizer().step();
            this.windows = new int[o.batch() * (t + 1)];
            this.one = new int[t + 1];
        }

        @Override
        public Map<String, Object> step(int step) throws IOException {
            long s0 = System.nanoTime();
            for (int b = 0; b < o.batch(); b++) {
                long offset = (long) (rng.nextDouble() * (train.size() - t));
                train.read(offset, t + 1, one);
                System.arraycopy(one, 0, windows, b * (t + 1), t + 1);
            }
            session.inputs().setWindows(windows);
            TrainingSession.StepResult r = session.step();
            double seconds = (System.nanoTime() - s0) / 1e9;
            tokensPerSecond = (double) o.batch() * t * (step - startStep) / ((System.nanoTime() - loopStart) / 1e9);
            Map<String, Object> rec = new LinkedHashMap<>();
            rec.put("loss", r.loss());
            rec.put("lr", r.lr());
            rec.put("grad_norm", r.gradNorm());
            rec.put("tokens_per_s", o.batch() * t / seconds);
            return rec;
        }

        @Override
        public String progress(Map<String, Object> record) {
            return String.format("loss %.4f | %,.0f tok/s", (double) record.get("loss"), tokensPerSecond);
        }

        @Override
        public Map<String, Object> evaluate(int step) throws IOException {
            if (val == null) return null;
            validationPerplexity = Math.exp(validationLoss(session, val, o.batch(), t, o.evalBatches()));
            err.printf("eval @ step %d: held-out perplexity %.3f%n", step, validationPerplexity);
            err.flush();
            Map<String, Object> ev = new LinkedHashMap<>();
            ev.put("perplexity", validationPerplexity);
            return ev;
        }

        @Override
        public Map<String, String> checkpointMeta(int step) {
            return Map.of("data.rng", Long.toString(rng.state()));
        }

        @Override
        public void curves(Path outDir, List<Map<String, Object>> records) throws IOException {
            Curves.write(outDir.resolve("curves.png"), "teacher",
                    List.of(Curves.Series.of("loss", records, "train", "loss")),
                    List.of(Curves.Series.of("held-out perplexity", records, "eval", "perplexity")));
        }
    }

    /**
     * {@link #validationLoss(TrainingSession, TokenFile, int, int, int)} for a model run forward only
     * (a teacher, a checkpoint being compared), up to {@code batch} windows at a time (fewer when
     * {@code val} holds fewer): the same windows, each row's CE = logsumexp − the logit of the next token.
     */
    public static double validationLoss(LanguageModel m, Kernels kernels, TokenFile val, int batch, int t, int maxBatches) throws IOException {
        int windows = (int) Math.max(1, Math.min(batch, (val.size() - 1) / t));
        try (LanguageModelForward f = new LanguageModelForward(m, kernels, windows, t)) {
            return validationLoss(f, val, windows, t, maxBatches);
        }
    }

    private static double validationLoss(LanguageModelForward model, TokenFile val, int batch, int t, int maxBatches) throws IOException {
        long windowsAvailable = (val.size() - 1) / t;
        int batches = (int) Math.min(maxBatches, windowsAvailable / batch);
        if (batches < 1) throw new IOException(val.path() + ": " + val.size() + " tokens, fewer than one batch of " + batch + " windows of " + (t + 1));
        int[] one = new int[t + 1], targets = new int[batch * t];
        double sum = 0;
        try (java.lang.foreign.Arena host = java.lang.foreign.Arena.ofConfined()) {
            java.lang.foreign.MemorySegment ids = host.allocate(4L * batch * t, 64);
            for (int i = 0; i < batches; i++) {
                for (int b = 0; b < batch; b++) {
                    val.read((long) (i * batch + b) * t, t + 1, one);
                    for (int p = 0; p < t; p++) {
                        ids.setAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, (long) b * t + p, one[p]);
                        targets[b * t + p] = one[p + 1];
                    }
                }
                sum += model.negativeLogLikelihood(ids, targets) / (batch * t);
            }
        }
        return sum / batches;
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
