package dev.distillery.trainer.distill;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import dev.distillery.kernels.Kernels;
import dev.distillery.trainer.data.StrictJson;

/**
 * {@code distill --pipeline stages.json}: progressive distillation. The stages are distill configs
 * run in order; the first has its own teacher (shards or a model), and each later one is taught
 * by the last checkpoint of the stage before it, run in the process (teacher → assistant →
 * student). A later stage gives its {@code teacher_model} without {@code path}: the pipeline sets
 * it. Every stage is checked before the first step of the first.
 */
public final class DistillPipeline {

    /** The file: {@code {"stages": [config, config, ...]}}. */
    public record Stages(List<DistillConfig> stages) {
    }

    private DistillPipeline() {
    }

    /** Reads and checks every stage; problems name the file, the stage and the key. */
    public static List<DistillConfig> read(Path file) throws IOException {
        if (!Files.exists(file)) throw new IOException(file + ": no such pipeline file");
        List<DistillConfig> stages = StrictJson.read(file, Stages.class).stages();
        if (stages == null || stages.isEmpty()) throw new IOException(file + ": 'stages' must list at least one distill config");
        Set<Path> outs = new HashSet<>();
        for (int k = 0; k < stages.size(); k++) {
            DistillConfig c = stages.get(k);
            String at = file + ": 'stages[" + k + "].";
            if (c == null) throw new IOException(at.substring(0, at.length() - 1) + "' is null");
            if (k > 0) {
                if (c.teacher() != null) {
                    throw new IOException(at + "teacher': a later stage is taught by the stage before it; leave out 'teacher'");
                }
                if (c.teacherModel() == null) {
                    throw new IOException(at + "teacher_model' is required: the token files the stage before it teaches on ('tokens', 'eval_tokens')");
                }
                if (c.teacherModel().path() != null) {
                    throw new IOException(at + "teacher_model.path' is set by the pipeline (the stage before's last checkpoint); leave it out");
                }
                c = c.withTeacherModelPath(stages.get(k - 1).out());   // a stand-in until that stage has run
            }
            if (!outs.add(Path.of(c.out()).toAbsolutePath().normalize())) throw new IOException(at + "out' " + c.out() + " is another stage's too");
            try {
                c.validate();
            } catch (IllegalArgumentException e) {
                throw new IOException(file + ": stage " + k + ": " + e.getMessage(), e);
            }
        }
        return stages;
    }

    /**
     * Runs the stages in order. With {@code resume}, a stage whose folder holds a checkpoint
     * continues from it (one that had finished does nothing) and the others start afresh.
     */
    public static List<DistillRun.Result> run(List<DistillConfig> stages, Kernels kernels, boolean resume, PrintWriter out, PrintWriter err)
            throws IOException {
        List<DistillRun.Result> results = new ArrayList<>();
        for (int k = 0; k < stages.size(); k++) {
            DistillConfig c = k == 0 ? stages.get(0) : stages.get(k).withTeacherModelPath(results.get(k - 1).lastCheckpoint().toString());
            out.printf("== stage %d of %d: %s%s%n", k + 1, stages.size(), c.out(), k == 0 ? "" : ", taught by " + c.teacherModel().path());
            out.flush();
            boolean started = Files.exists(Path.of(c.out(), "checkpoints", "latest"));
            DistillRun.Result r = DistillRun.run(c, kernels, resume && started, out, err);
            if (r.lastCheckpoint() == null) throw new IOException("stage " + k + " (" + c.out() + ") ended with no checkpoint to teach the next");
            results.add(r);
        }
        return results;
    }
}
