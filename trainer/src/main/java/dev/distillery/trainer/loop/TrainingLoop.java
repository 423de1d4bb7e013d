package dev.distillery.trainer.loop;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.parallel.Collective;
import dev.distillery.trainer.checkpoint.CheckpointStore;
import dev.distillery.trainer.io.FolderLock;
import dev.distillery.trainer.report.MetricsLog;
import dev.distillery.trainer.report.Progress;
import dev.distillery.trainer.tokenizer.HuggingFaceTokenizerFile;

/**
 * The training loop that {@code distill} and {@code teacher train} share: resume from the latest
 * checkpoint (or refuse to overwrite one), the steps from the optimizer's next to the end, the
 * NaN/Inf guard that stops before a bad update and names the last good checkpoint, the metrics
 * file, held-out evaluation at intervals and at the end, crash-safe checkpoints (pruned) with their
 * curves, and progress. What differs, the data and the loss of a step, its evaluation and the
 * data position a checkpoint keeps, is a {@link Task}.
 */
public final class TrainingLoop {

    /** The run stopped on purpose (a non-finite loss or bad data); the message says why and where the last good checkpoint is. */
    public static final class StoppedException extends IOException {
        public StoppedException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** The run stopped between steps on a signal (or its launcher's end), after writing a checkpoint; the message says where. */
    public static final class StoppedBySignalException extends IOException {
        public StoppedBySignalException(String message) {
            super(message);
        }
    }

    /** What one kind of training does in the loop. */
    public interface Task {
        /**
         * One optimizer step: its micro-batches through the session and {@code finishStep}.
         * Returns the train record's fields after "kind" and "step" (the loss first).
         */
        Map<String, Object> step(int step) throws IOException;

        /** The progress line's detail after a step. */
        String progress(Map<String, Object> record);

        /** A held-out evaluation: the eval record's fields after "kind" and "step", or null where there is none. */
        Map<String, Object> evaluate(int step) throws IOException;

        /** The checkpoint metadata beyond "kind" and "step": the data position, the config. */
        Map<String, String> checkpointMeta(int step);

        /** Writes the run's curves from the metrics so far. */
        void curves(Path outDir, List<Map<String, Object>> records) throws IOException;
    }

    /**
     * @param kind            the checkpoints' "kind" metadata: distill or lm
     * @param label           the progress line's label
     * @param steps           the schedule's steps
     * @param stopAfter       stop (with a checkpoint) after this step; 0 = run to the end
     * @param evalEvery       steps between evaluations, 0 = only at the end
     * @param checkpointEvery steps between checkpoints, 0 = only at the end
     * @param keep            checkpoints kept
     * @param tokenizer       copied into every checkpoint as tokenizer.json, or null
     */
    public record Settings(String kind, String label, int steps, int stopAfter, int evalEvery, int checkpointEvery, int keep,
                           Path outDir, Path tokenizer, Collective collective) {
        /** One process. */
        public Settings(String kind, String label, int steps, int stopAfter, int evalEvery, int checkpointEvery, int keep, Path outDir,
                        Path tokenizer) {
            this(kind, label, steps, stopAfter, evalEvery, checkpointEvery, keep, outDir, tokenizer, new Collective.Single());
        }

        int endStep() {
            return stopAfter > 0 ? Math.min(stopAfter, steps) : steps;
        }

        /** Rank 0 alone writes metrics, curves and checkpoints; the others wait for it. */
        boolean writes() {
            return collective.rank() == 0;
        }
    }

    /** How the loop ended: the step reached, the last checkpoint, the last eval record (or null). */
    public record Outcome(int step, Path lastCheckpoint, Map<String, Object> lastEval, Path metrics) {
    }

    private TrainingLoop() {
    }

    /** Attention's kept probabilities from this many bytes a step on get a line naming the option that keeps none. */
    static final long ATTENTION_NOTE_BYTES = 256L << 20;

    /**
     * The line for a run whose attention keeps {@code keptBytes} of probabilities a step
     * ({@link TrainingSession#keptAttentionBytes}), where that is {@link #ATTENTION_NOTE_BYTES} or
     * more: they grow with the square of the context, and {@code option} keeps none of them. Null
     * below it.
     */
    public static String attentionMemoryNote(long keptBytes, String option) {
        if (keptBytes < ATTENTION_NOTE_BYTES) return null;
        return String.format("attention: its probabilities take %,d MB a step (batch x heads x seq_len^2 floats a layer); %s keeps none"
                + " of them, for one more score product a layer", keptBytes >> 20, option);
    }

    /**
     * The checkpoint a run continues from: with {@code resume}, the latest in {@code store}, which
     * must exist; without, none, and {@code outDir} must hold no earlier run (its checkpoints,
     * metrics or curves are never overwritten).
     *
     * @param outOption what the user names the folder by ({@code --out}, {@code 'out'})
     */
    public static Optional<CheckpointStore.Checkpoint> resumeFrom(CheckpointStore store, Path outDir, boolean resume, String outOption)
            throws IOException {
        Optional<CheckpointStore.Checkpoint> from = store.latest();
        if (resume) {
            if (from.isEmpty()) {
                throw new IOException("--resume: " + store.root() + " holds no checkpoint to resume from; run without --resume to start"
                        + " a new run" + (earlierFiles(outDir).isEmpty() ? "" : " in another " + outOption));
            }
            return from;
        }
        if (from.isPresent()) {
            throw new IOException(store.root() + " already holds checkpoints (latest: step " + from.get().step()
                    + "); pass --resume to continue that run, or choose another " + outOption);
        }
        List<String> earlier = earlierFiles(outDir);
        if (!earlier.isEmpty()) {
            throw new IOException(outDir + " already holds a run's files (" + String.join(", ", earlier)
                    + ") but no checkpoint to resume from; choose another " + outOption + ", or remove them");
        }
        return from;
    }

    /** What a folder holds besides its lock file and an empty checkpoints folder. */
    private static List<String> earlierFiles(Path outDir) throws IOException {
        if (!Files.isDirectory(outDir)) return List.of();
        try (var entries = Files.list(outDir)) {
            return entries.filter(p -> !p.getFileName().toString().equals(FolderLock.FILE))
                    .filter(p -> !(p.getFileName().toString().equals("checkpoints") && isEmptyFolder(p)))
                    .map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    private static boolean isEmptyFolder(Path p) {
        try (var entries = Files.list(p)) {
            return entries.findAny().isEmpty();
        } catch (IOException e) {
            return false;
        }
    }

    /** Restores the optimizer of {@code session} from {@code from} and returns the checkpoint's metadata. */
    public static Map<String, String> restore(TrainingSession session, CheckpointStore.Checkpoint from, PrintWriter out) throws IOException {
        Map<String, String> meta = ModelFiles.readOptimizer(from.dir().resolve("trainer_state.safetensors"), session.optimizer(),
                session.model().parameters().blockElements(), session.featureOptimizer());
        out.println("resumed from " + from.dir() + " at step " + session.optimizer().step());
        String now = session.optimizer().kernels().describe(), then = meta.get("kernels");
        if (then != null && !then.equals(now)) {
            // Another thread count or BLAS sums in another order: the run goes on, but its bits part from an uninterrupted one's.
            out.println("resume: note: the checkpoint was written on " + then + "; this run uses " + now
                    + ", so it will not match an uninterrupted run bit for bit");
        }
        return meta;
    }

    /** A checkpoint metadata value that must be an integer, or an error naming the file and the key. */
    public static int intMeta(Path dir, Map<String, String> meta, String key) throws IOException {
        try {
            return Integer.parseInt(meta.get(key));
        } catch (NumberFormatException e) {
            throw new IOException(dir.resolve("trainer_state.safetensors") + ": metadata '" + key + "' must be an integer, got " + meta.get(key));
        }
    }

    /**
     * Runs the steps after the session's optimizer step through {@code s.endStep()}. A stop request
     * ({@link StopRequests}) ends the loop after the step in progress, with a checkpoint.
     */
    public static Outcome run(TrainingSession session, CheckpointStore store, Task task, Settings s, Path lastCheckpoint,
                              PrintWriter err) throws IOException {
        int startStep = session.optimizer().step(), endStep = s.endStep();
        Map<String, Object> lastEval = null;
        StopRequests.loopRunning(true);
        try (MetricsLog metrics = s.writes() ? MetricsLog.open(s.outDir().resolve("metrics.jsonl"), startStep > 0 ? startStep : -1) : null) {
            Progress progress = new Progress(s.writes() ? err : new PrintWriter(java.io.Writer.nullWriter()), s.label(), startStep, s.steps(), 5000);
            for (int step = startStep + 1; step <= endStep; step++) {
                Map<String, Object> fields;
                try {
                    fields = task.step(step);
                } catch (TrainingSession.NonFiniteException e) {
                    throw new StoppedException(e.getMessage() + stopNote(lastCheckpoint), e);
                } catch (IllegalArgumentException | ArithmeticException | java.io.UncheckedIOException e) {
                    throw new StoppedException("step " + step + ": " + e.getMessage() + stopNote(lastCheckpoint), e);
                }
                if (metrics != null) write(metrics, record("train", step, fields), step, lastCheckpoint);
                progress.update(step, task.progress(fields));
                boolean last = step == s.steps();
                // every rank stops at the same step: a signal reaches the ranks at different times
                boolean stop = s.collective().sum(StopRequests.requested() != null ? 1 : 0)[0] > 0;
                if (!stop && (last || (s.evalEvery() > 0 && step % s.evalEvery() == 0))) {
                    Map<String, Object> eval = task.evaluate(step);   // every rank evaluates its share; rank 0 writes it
                    if (eval != null) {
                        lastEval = eval;
                        if (metrics != null) write(metrics, record("eval", step, eval), step, lastCheckpoint);
                    }
                }
                if (stop || last || step == endStep || (s.checkpointEvery() > 0 && step % s.checkpointEvery() == 0)) {
                    if (s.writes()) {
                        try {
                            lastCheckpoint = save(store, session, task, s, step);
                        } catch (IOException e) {
                            throw new StoppedException("step " + step + ": writing its checkpoint under " + store.root() + " failed: "
                                    + e.getMessage() + stopNote(lastCheckpoint), e);
                        }
                        store.prune(s.keep());
                        task.curves(s.outDir(), metrics.records());
                    } else {
                        lastCheckpoint = store.root().resolve(CheckpointStore.dirName(step));
                    }
                    s.collective().barrier();   // the others wait until rank 0's checkpoint is on disk
                }
                if (stop && step < s.steps()) {
                    throw new StoppedBySignalException("stopped by " + StopRequests.requested() + " after step " + step + " of " + s.steps()
                            + "; checkpoint " + lastCheckpoint + "; continue with the same command and --resume");
                }
            }
            return new Outcome(Math.max(startStep, endStep), lastCheckpoint, lastEval, metrics == null ? null : metrics.file());
        } finally {
            StopRequests.loopRunning(false);
        }
    }

    /** A metrics record, or an error that names the file, the step and the last good checkpoint (a full disk says none of them). */
    private static void write(MetricsLog metrics, Map<String, Object> record, int step, Path lastCheckpoint) throws StoppedException {
        try {
            metrics.write(record);
        } catch (IOException e) {
            throw new StoppedException("step " + step + ": writing " + metrics.file() + " failed: " + e.getMessage() + stopNote(lastCheckpoint), e);
        }
    }

    private static String stopNote(Path lastCheckpoint) {
        return ". Stopped; the last good checkpoint is "
                + (lastCheckpoint == null ? "none (no checkpoint was written yet)" : lastCheckpoint + " (continue with --resume)");
    }

    private static Map<String, Object> record(String kind, int step, Map<String, Object> fields) {
        Map<String, Object> rec = new LinkedHashMap<>();
        rec.put("kind", kind);
        rec.put("step", step);
        rec.putAll(fields);
        return rec;
    }

    private static Path save(CheckpointStore store, TrainingSession session, Task task, Settings s, int step) throws IOException {
        return store.save(step, dir -> {
            ModelFiles.write(dir, session.model());
            if (s.tokenizer() != null) HuggingFaceTokenizerFile.copyInto(s.tokenizer(), dir);
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put("kind", s.kind());
            meta.put("step", Integer.toString(step));
            meta.put("kernels", session.optimizer().kernels().describe());
            meta.put("world", Integer.toString(s.collective().size()));
            meta.putAll(task.checkpointMeta(step));
            ModelFiles.writeOptimizer(dir.resolve("trainer_state.safetensors"), session.optimizer(),
                    session.model().parameters().blockElements(), session.featureOptimizer(), meta);
        }).dir();
    }
}
