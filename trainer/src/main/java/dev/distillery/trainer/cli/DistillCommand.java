package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import dev.distillery.kernels.Kernels;
import dev.distillery.trainer.distill.DistillConfig;
import dev.distillery.trainer.distill.DistillRun;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code distill --config run.json}: trains a student on stored teacher targets. */
@Command(name = "distill", mixinStandardHelpOptions = true,
        description = {"Distils a student from teacher shards (docs/CONFIG.md for every key, docs/FORMATS.md for the files).",
                "Writes <out>/metrics.jsonl, <out>/curves.png and crash-safe checkpoints in <out>/checkpoints/."})
public final class DistillCommand implements Callable<Integer> {

    @Option(names = "--config", required = true, description = "The run's JSON config.")
    Path config;

    @Option(names = "--resume", description = "Continue from the latest checkpoint in <out>/checkpoints (exactly: same result as an uninterrupted run).")
    boolean resume;

    @Option(names = "--stop-after", defaultValue = "0",
            description = "Stop with a checkpoint once this step is done (the schedule still spans 'steps'); continue later with --resume.")
    int stopAfter;

    @Mixin
    DeviceOptions device;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        DistillConfig cfg = DistillConfig.read(config);
        try (Kernels kernels = device.open(cfg.threads(), out)) {
            DistillRun.Result r = DistillRun.run(cfg, kernels, resume, stopAfter, out, err);
            if (r.lastEval() != null) {
                out.printf("held-out: perplexity %.3f, %s %.4f, top-1 agreement %.1f%%%n",
                        r.lastEval().perplexity(), r.lastEval().divergenceName(), r.lastEval().divergence(), 100 * r.lastEval().agreement());
            }
            return 0;
        }
    }
}
