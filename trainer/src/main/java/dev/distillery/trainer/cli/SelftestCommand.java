package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;

import dev.distillery.bindings.CudaDevices;
import dev.distillery.bindings.OpenBlasLibrary;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.conformance.KernelConformance;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.cuda.CudaConformance;
import dev.distillery.kernels.cuda.CudaDevice;
import dev.distillery.kernels.cuda.CudaKernels;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** Runs every kernel on fresh random data against the float64 reference and prints a table. */
@Command(name = "selftest",
        mixinStandardHelpOptions = true,
        description = {
                "Runs every kernel of the chosen backend on fresh random inputs (sizes 1, primes, odd widths)",
                "and compares it with the float64 reference. Prints kernel, size, max relative error,",
                "tolerance, time and PASS/FAIL; exits 0 only if every check passes."})
public final class SelftestCommand implements Callable<Integer> {

    @Option(names = "--device", defaultValue = "auto",
            description = "auto, cpu or cuda (default: ${DEFAULT-VALUE}). auto uses CUDA when a driver and a device are found.")
    DeviceChoice device;

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
        PrintWriter err = spec.commandLine().getErr();
        if (device == DeviceChoice.cuda) {
            CudaDevices.Probe probe = CudaDevices.probe();
            if (!probe.available()) {
                err.println("error: --device cuda: " + probe.reason() + "; use --device cpu");
                return Main.EXIT_NO_DEVICE;
            }
            long cudaSeed = seed != null ? seed : System.nanoTime();
            int n = threads != null ? threads : Runtime.getRuntime().availableProcessors();
            try (CudaDevice gpu = CudaDevice.open(0, false); Kernels cpu = new CpuKernels(n, gemm)) {
                out.println("device: " + gpu.describe());
                out.println("reference: " + cpu.describe());
                out.println("seed: " + cudaSeed);
                out.println();
                List<KernelConformance.Result> results = CudaConformance.run(gpu, cpu, cudaSeed, quick);
                long failed = report(out, results, "CUDA kernel checks against the CPU kernels");
                out.println();
                out.println("CudaKernels (the whole Kernels contract, with its copies) against the float64 reference:");
                try (CudaKernels contract = new CudaKernels(gpu)) {
                    failed += report(out, KernelConformance.run(contract, cudaSeed,
                            quick ? KernelConformance.Sizes.quick() : KernelConformance.Sizes.standard()), "contract checks");
                }
                return failed == 0 ? 0 : Main.EXIT_FAILED;
            }
        }
        long usedSeed = seed != null ? seed : System.nanoTime();
        int nThreads = threads != null ? threads : Integer.getInteger("distillery.threads", Runtime.getRuntime().availableProcessors());
        if (nThreads < 1) throw new CommandLine.ParameterException(spec.commandLine(), "--threads must be >= 1, got " + nThreads);
        try (Kernels kernels = new CpuKernels(nThreads, gemm)) {
            if (device == DeviceChoice.auto) {
                String why = DeviceOptions.cudaUnavailableReason();
                out.println("device: cpu (auto: " + (why != null ? why : "a CUDA device is here: selftest --device cuda checks it") + ")");
            }
            out.println("backend: " + kernels.describe());
            out.println("blas: " + OpenBlasLibrary.probe().describe());
            out.println("seed: " + usedSeed);
            out.println();
            List<KernelConformance.Result> results = KernelConformance.run(kernels, usedSeed,
                    quick ? KernelConformance.Sizes.quick() : KernelConformance.Sizes.standard());
            return report(out, results, "checks") == 0 ? 0 : Main.EXIT_FAILED;
        }
    }

    /** The table and a "N what, P passed, F failed" line; returns F. */
    private long report(PrintWriter out, List<KernelConformance.Result> results, String what) {
        printTable(out, results);
        long failed = results.stream().filter(r -> !r.passed()).count();
        out.println();
        out.printf(Locale.ROOT, "%d %s, %d passed, %d failed%n", results.size(), what, results.size() - failed, failed);
        return failed;
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
