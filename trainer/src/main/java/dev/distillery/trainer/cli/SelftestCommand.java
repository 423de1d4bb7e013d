package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.conformance.KernelConformance;
import dev.distillery.kernels.conformance.Selftest;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** Runs every kernel on fresh random data against the float64 reference and prints a table. */
@Command(name = "selftest",
        mixinStandardHelpOptions = true,
        header = "Checks every kernel of a backend against the float64 reference and prints a table.",
        description = "Runs every kernel of the chosen backend on fresh random inputs (sizes 1, primes, odd widths) and "
                + "compares it with the float64 reference. Prints kernel, size, max relative error, tolerance, time "
                + "and PASS/FAIL; exits 0 only if every check passes.")
public final class SelftestCommand implements Callable<Integer> {

    @Option(names = "--device", defaultValue = "auto",
            description = "auto, cpu or cuda (default: ${DEFAULT-VALUE}). auto uses CUDA when a driver and a device are found.")
    Backend device;

    @Option(names = "--threads", description = "CPU worker threads (default: the number of cores, ${sys:distillery.threads:-all}).")
    Integer threads;

    @Option(names = "--gemm", defaultValue = "auto",
            description = "CPU GEMM: auto (OpenBLAS when it loads), blas or vector (default: ${DEFAULT-VALUE}).")
    String gemm;

    @Option(names = "--seed", description = "Seed of the random inputs (default: a fresh one, printed).")
    Long seed;

    @Option(names = "--quick", description = "One size per kernel instead of the full set.")
    boolean quick;

    @Option(names = "--failures-only", description = "Print only the checks that failed.")
    boolean failuresOnly;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        long usedSeed = seed != null ? seed : System.nanoTime();
        int nThreads = threads != null ? threads : Backends.defaultThreads();
        if (nThreads < 1) throw new CommandLine.ParameterException(spec.commandLine(), "--threads must be >= 1, got " + nThreads);
        Selftest.Report report = Selftest.run(device, nThreads, gemm, usedSeed, quick);
        report.header().forEach(out::println);
        out.println();
        boolean first = true;
        for (Selftest.Section section : report.sections()) {
            if (!first) out.println();
            if (section.title() != null) out.println(section.title());
            printTable(out, section.results());
            out.println();
            long failed = section.failed();
            out.printf(Locale.ROOT, "%d %s, %d passed, %d failed%n", section.results().size(), section.what(),
                    section.results().size() - failed, failed);
            first = false;
        }
        return report.failed() == 0 ? 0 : Main.EXIT_FAILED;
    }

    private void printTable(PrintWriter out, List<KernelConformance.Result> results) {
        int width = Math.max(20, results.stream().mapToInt(r -> r.kernel().length()).max().orElse(0));
        String format = "%-" + width + "s %-18s %14s %10s %10s  %s%n";
        out.printf(Locale.ROOT, format, "kernel", "size", "max rel error", "tolerance", "ms", "result");
        for (KernelConformance.Result r : results) {
            if (failuresOnly && r.passed()) continue;
            out.printf(Locale.ROOT, format, r.kernel(), r.size(), String.format(Locale.ROOT, "%.3e", r.maxRelError()),
                    String.format(Locale.ROOT, "%.0e", r.tolerance()), String.format(Locale.ROOT, "%.3f", r.millis()),
                    r.passed() ? "PASS" : "FAIL");
        }
    }
}
