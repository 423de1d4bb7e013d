package dev.distillery.trainer.cli;

import java.io.PrintWriter;

import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import picocli.CommandLine.Option;

/** {@code --device}, {@code --threads}, {@code --tf32} and {@code --precision}, shared by every command that runs kernels. */
public final class DeviceOptions {

    @Option(names = "--device", defaultValue = "auto",
            description = "auto, cpu or cuda (default: ${DEFAULT-VALUE}). auto uses CUDA when a driver and a device are found, and says which it chose.")
    Backend device = Backend.AUTO;

    @Option(names = "--threads", description = "CPU worker threads (default: every core).")
    Integer threads;

    @Option(names = "--tf32", description = "On CUDA, let cuBLAS use TF32 tensor cores for fp32 GEMMs (faster; products keep a 10-bit mantissa).")
    boolean tf32;

    @Option(names = "--precision", paramLabel = "fp32|bf16",
            description = "fp32, or bf16 mixed precision: every GEMM on bf16 operands with fp32 sums (AMX or AVX512-BF16 on the CPU, "
                    + "tensor cores on CUDA); weights, gradients, moments and statistics stay fp32. Where the device lacks bf16 arithmetic "
                    + "it runs fp32 and says so (default: a distill config's 'precision', else fp32).")
    String precision;

    /**
     * Kernels for the chosen device ({@link Backends#open}); {@code configThreads} (0 = unset)
     * applies to the CPU when --threads is absent. Says on {@code out} which device it picked and,
     * for auto, why.
     *
     * @throws Backends.UnavailableException for --device cuda where CUDA cannot be used
     */
    public Kernels open(int configThreads, PrintWriter out) {
        return open(configThreads, Precision.FP32, out);
    }

    /** {@link #open(int, PrintWriter)} with the config's precision, which --precision overrides. */
    public Kernels open(int configThreads, Precision configPrecision, PrintWriter out) {
        int n = threads != null ? threads : configThreads > 0 ? configThreads : Backends.defaultThreads();
        Precision p = precision != null ? Precision.parse(precision, "--precision") : configPrecision;
        Kernels k = Backends.open(new Backends.Request(device, n, "auto", tf32, p), out::println);
        out.flush();
        return k;
    }
}
