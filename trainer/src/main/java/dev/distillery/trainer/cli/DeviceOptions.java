package dev.distillery.trainer.cli;

import java.io.PrintWriter;

import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.Kernels;
import picocli.CommandLine.Option;

/** {@code --device}, {@code --threads} and {@code --tf32}, shared by every command that runs kernels. */
public final class DeviceOptions {

    @Option(names = "--device", defaultValue = "auto",
            description = "auto, cpu or cuda (default: ${DEFAULT-VALUE}). auto uses CUDA when a driver and a device are found, and says which it chose.")
    Backend device = Backend.AUTO;

    @Option(names = "--threads", description = "CPU worker threads (default: every core).")
    Integer threads;

    @Option(names = "--tf32", description = "On CUDA, let cuBLAS use TF32 tensor cores for fp32 GEMMs (faster; products keep a 10-bit mantissa).")
    boolean tf32;

    /**
     * Kernels for the chosen device ({@link Backends#open}); {@code configThreads} (0 = unset)
     * applies to the CPU when --threads is absent. Says on {@code out} which device it picked and,
     * for auto, why.
     *
     * @throws Backends.UnavailableException for --device cuda where CUDA cannot be used
     */
    public Kernels open(int configThreads, PrintWriter out) {
        int n = threads != null ? threads : configThreads > 0 ? configThreads : Backends.defaultThreads();
        Kernels k = Backends.open(new Backends.Request(device, n, "auto", tf32), out::println);
        out.flush();
        return k;
    }
}
