package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.parallel.Collective;
import dev.distillery.trainer.distill.DistillConfig;
import dev.distillery.trainer.distill.DistillPipeline;
import dev.distillery.trainer.distill.DistillRun;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code distill --config run.json | --pipeline stages.json}: trains a student on a teacher's targets. */
@Command(name = "distill", mixinStandardHelpOptions = true,
        description = {"Distils a student from teacher shards or a teacher model (docs/CONFIG.md for every key, docs/FORMATS.md for the files).",
                "Writes <out>/metrics.jsonl, <out>/curves.png and crash-safe checkpoints in <out>/checkpoints/."})
public final class DistillCommand implements Callable<Integer> {

    @Option(names = "--config", description = "The run's JSON config.")
    Path config;

    @Option(names = "--pipeline", description = "Instead of --config: {\"stages\": [config, ...]}, run in order, each stage after the first taught "
            + "by the last checkpoint of the stage before it (progressive distillation; docs/CONFIG.md).")
    Path pipeline;

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
        if ((config == null) == (pipeline == null)) throw new CommandLine.ParameterException(spec.commandLine(), "give --config or --pipeline");
        if (pipeline != null) {
            if (stopAfter != 0) throw new CommandLine.ParameterException(spec.commandLine(), "--stop-after applies to one run, not to a --pipeline");
            List<DistillConfig> stages = DistillPipeline.read(pipeline);
            for (int k = 1; k < stages.size(); k++) {
                if (!stages.get(k).precision().equals(stages.get(0).precision())) {
                    throw new CommandLine.ParameterException(spec.commandLine(), pipeline + ": stage " + (k + 1) + " has precision "
                            + stages.get(k).precision() + ", stage 1 " + stages.get(0).precision() + ": the stages share one device");
                }
            }
            try (Kernels kernels = device.open(stages.get(0).threads(), stages.get(0).gemmPrecision(), out)) {
                List<DistillRun.Result> results = DistillPipeline.run(stages, kernels, resume, out, err);
                for (int k = 0; k < results.size(); k++) {
                    DistillRun.Evaluation e = results.get(k).lastEval();
                    out.printf("stage %d: %s%s%n", k + 1, results.get(k).lastCheckpoint(), e == null ? "" : String.format(
                            ", held-out perplexity %.3f, %s %.4f, top-1 agreement %.1f%%", e.perplexity(), e.divergenceName(), e.divergence(),
                            100 * e.agreement()));
                }
                return 0;
            }
        }
        DistillConfig cfg = DistillConfig.read(config);
        // under mpirun, one rank of a data-parallel run; else this process alone
        try (Collective collective = Collective.open(); Kernels kernels = device.open(cfg.threads(), cfg.gemmPrecision(),
                collective.rank() == 0 ? out : quiet())) {
            DistillRun.Result r = DistillRun.run(cfg, kernels, collective, resume, stopAfter, out, err);
            if (r.lastEval() != null) {
                out.printf("held-out: perplexity %.3f, %s %.4f, top-1 agreement %.1f%%%n",
                        r.lastEval().perplexity(), r.lastEval().divergenceName(), r.lastEval().divergence(), 100 * r.lastEval().agreement());
            }
            return 0;
        }
    }

    private static PrintWriter quiet() {
        return new PrintWriter(java.io.Writer.nullWriter());
    }
}
