package dev.distillery.trainer.distill;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.distill.InProcessTeacher;
import dev.distillery.runtime.distill.TeacherSource;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.parallel.Collective;
import dev.distillery.trainer.data.TeacherBatchStream;
import dev.distillery.trainer.loop.TrainingLoop;
import dev.distillery.trainer.report.Curves;

/**
 * The distillation's steps in the shared loop ({@link TrainingLoop}): teacher batches, gradient
 * accumulation over micro-batches (and ranks), the step's record, held-out evaluation and the data
 * position a checkpoint keeps. {@link DistillRun} checks the inputs and builds the run; this is
 * what it runs.
 */
final class DistillSteps implements TrainingLoop.Task {
    private final DistillConfig cfg;
    private final TrainingSession session;
    private final TeacherBatchStream stream;
    private final DistillRun.Source src;
    private final InProcessTeacher live;
    private final OnPolicyBatches onPolicy;
    private final DifferentiableOps.Reduction reduction;
    private final int chunkRows, startStep;
    private final long tokensPerStep, loopStart, waitStart;
    private final PrintWriter err;
    private final ExtraTeachers extras;
    private final Collective collective;
    private int epoch, batchIndex;
    double tokensPerSecond, waitFraction;
    DistillRun.Evaluation lastEval;

    DistillSteps(DistillConfig cfg, TrainingSession session, TeacherBatchStream stream, DistillRun.Source src, InProcessTeacher live,
          OnPolicyBatches onPolicy, DifferentiableOps.Reduction reduction, int chunkRows, int epoch, int batchIndex, PrintWriter err,
          ExtraTeachers extras, Collective collective) {
        this.cfg = cfg;
        this.session = session;
        this.stream = stream;
        this.src = src;
        this.live = live;
        this.onPolicy = onPolicy;
        this.reduction = reduction;
        this.chunkRows = chunkRows;
        this.epoch = epoch;
        this.batchIndex = batchIndex;
        this.err = err;
        this.extras = extras;
        this.collective = collective;
        this.startStep = session.optimizer().step();
        this.tokensPerStep = (long) cfg.batchSize() * src.train().seqLen() * cfg.gradAccum();
        this.loopStart = System.nanoTime();
        this.waitStart = stream.waitNanos();
    }

    @Override
    public Map<String, Object> step(int step) throws IOException {
        long t0 = System.nanoTime(), w0 = stream.waitNanos();
        double loss = 0, ce = 0, div = 0, feature = 0;
        int sampled = 0, sampledRows = 0;
        DistillOptions options = cfg.loss().optionsAt(step, cfg.steps());
        session.beginStep();
        int world = collective.size(), accumulated = cfg.gradAccum() * world;
        float scale = 1f / accumulated;   // every rank's micro-batches make one global step
        long summingNanos = 0;   // the micro-batches' sums (every rank's, with ranks): part of reduce_ms
        for (int a = 0; a < cfg.gradAccum(); a++) {
            int micro = a * world + collective.rank();   // the micro-batch one process would number it, with batch_size / world
            TeacherBatchStream.Batch batch;
            try {
                batch = stream.next();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while waiting for teacher batches", e);
            }
            DifferentiableOps.DistillLoss l;
            try {
                if (onPolicy != null && onPolicy.chooses(step, micro)) {
                    onPolicy.fill(batch.inputIds(), session.inputs(), step, micro);
                    l = session.backwardDistill(live, onPolicy.options(options), reduction, chunkRows, scale);
                    sampled++;
                    sampledRows += l.rows();
                } else {
                    session.inputs().setSequences(batch.inputIds());
                    TeacherSource first = live != null ? new TeacherSource.Live(live) : new TeacherSource.Stored(batch.targets());
                    l = session.backwardDistill(extras.sources(first, batch), cfg.teacherWeights(), cfg.combination(), batch.hiddenStates(),
                            options, reduction, chunkRows, scale);
                    extras.release();
                }
            } catch (BadRowException e) {
                throw DistillRun.inShards(e, src.train(), batch);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while waiting for teacher batches", e);
            }
            long e0 = System.nanoTime();
            if (accumulated > 1) session.endMicroBatch(collective);
            summingNanos += System.nanoTime() - e0;
            loss += l.total() / accumulated;
            ce += l.ce() / accumulated;
            div += l.divergence() / accumulated;
            feature += l.feature() / accumulated;
            epoch = batch.epoch();
            batchIndex = batch.index() + 1;
            if (batchIndex == stream.batchesPerEpoch()) {
                epoch++;
                batchIndex = 0;
            }
            stream.release(batch);
        }
        long r0 = System.nanoTime();
        if (accumulated > 1) session.reduceGradients(collective);
        double reduceMs = (summingNanos + System.nanoTime() - r0) / 1e6;
        if (world > 1) {
            double[] all = collective.sum(loss, ce, div, feature);
            loss = all[0];
            ce = all[1];
            div = all[2];
            feature = all[3];
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
        if (session.features() != null) rec.put("feature", feature);
        if (world > 1) rec.put("reduce_ms", reduceMs);
        rec.put("lr", r.lr());
        rec.put("grad_norm", r.gradNorm());
        rec.put("tokens", tokensPerStep * step);
        rec.put("step_ms", stepSeconds * 1e3);
        rec.put("tokens_per_s", tokensPerStep / stepSeconds);
        rec.put("data_wait_fraction", stepWait / stepSeconds);
        if (onPolicy != null) {
            rec.put("on_policy_batches", sampled);
            rec.put("on_policy_rows", sampledRows);
        }
        if (cfg.loss().scheduleKind() != DistillConfig.Loss.Schedule.CONSTANT) {
            rec.put("temperature", (double) options.temperature());
            rec.put("alpha", (double) options.alpha());
        }
        return rec;
    }

    @Override
    public String progress(Map<String, Object> record) {
        return String.format("loss %.4f | %,.0f tok/s | data wait %.1f%%", (double) record.get("loss"), tokensPerSecond, 100 * waitFraction);
    }

    @Override
    public Map<String, Object> evaluate(int step) throws IOException {
        if (src.eval() == null) return null;
        lastEval = DistillRun.evaluate(session, src.eval(), live, cfg.batchSize() / collective.size(),
                cfg.evalBatches() > 0 ? cfg.evalBatches() * collective.size() : Integer.MAX_VALUE, chunkRows, step, collective);
        Map<String, Object> ev = new LinkedHashMap<>();
        ev.put("ce", lastEval.ce());
        ev.put("perplexity", lastEval.perplexity());
        ev.put(lastEval.divergenceKey(), lastEval.divergence());
        ev.put("agreement", lastEval.agreement());
        ev.put("rows", lastEval.rows());
        if (collective.rank() == 0) {
            err.printf("eval @ step %d: ce %.4f, perplexity %.3f, %s %.4f, top-1 agreement %.1f%%%n", step,
                    lastEval.ce(), lastEval.perplexity(), lastEval.divergenceName(), lastEval.divergence(), 100 * lastEval.agreement());
        }
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

    /**
     * The teachers of 'teachers' during training: a batch stream per shard teacher, in step with
     * the first teacher's (same sequences, seed and position), or the model run in the process.
     */
    static final class ExtraTeachers implements AutoCloseable {
        private final List<DistillRun.MoreTeacher> more;
        private final List<TeacherBatchStream> streams = new ArrayList<>();
        private final List<InProcessTeacher> models = new ArrayList<>();
        private final List<TeacherBatchStream.Batch> held = new ArrayList<>();

        ExtraTeachers(List<DistillRun.MoreTeacher> more, DistillConfig cfg, Kernels kernels, Collective collective, int chunkRows, int epoch, int batchIndex) {
            this.more = more;
            try {
                for (DistillRun.MoreTeacher t : more) {
                    streams.add(t.shards() == null ? null : new TeacherBatchStream(t.shards(), cfg.batchSize(), cfg.seed(), cfg.prefetch(), epoch,
                            batchIndex, kernels::allocateStaging, collective.rank(), collective.size()));
                    models.add(t.model() == null ? null : new InProcessTeacher(t.model(), kernels, chunkRows));
                }
            } catch (RuntimeException e) {
                close();
                throw e;
            }
        }

        /** Every teacher of one micro-batch, the first ({@code first}) first; the shard teachers' batches are held until {@link #release()}. */
        List<TeacherSource> sources(TeacherSource first, TeacherBatchStream.Batch batch) throws InterruptedException {
            List<TeacherSource> all = new ArrayList<>(List.of(first));
            for (int i = 0; i < more.size(); i++) {
                if (models.get(i) != null) {
                    all.add(new TeacherSource.Live(models.get(i)));
                    continue;
                }
                TeacherBatchStream.Batch b = streams.get(i).next();
                held.add(b);
                if (b.epoch() != batch.epoch() || b.index() != batch.index() || !Arrays.equals(b.sequences(), batch.sequences())) {
                    throw new IllegalStateException(more.get(i).name() + ": batch " + b.index() + " of epoch " + b.epoch()
                            + " is out of step with the first teacher's batch " + batch.index() + " of epoch " + batch.epoch());
                }
                all.add(new TeacherSource.Stored(b.targets()));
            }
            return all;
        }

        void release() {
            for (int i = 0, h = 0; i < more.size(); i++) {
                if (streams.get(i) != null && h < held.size()) streams.get(i).release(held.get(h++));
            }
            held.clear();
        }

        @Override
        public void close() {
            for (TeacherBatchStream s : streams) if (s != null) s.close();
            for (InProcessTeacher m : models) if (m != null) m.close();
        }
    }
}
