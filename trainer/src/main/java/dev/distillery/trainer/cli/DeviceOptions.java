package dev.distillery.trainer.cli;

import java.io.PrintWriter;

import dev.distillery.bindings.CudaDevices;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.cpu.CpuKernels;
import picocli.CommandLine.Option;

/** {@code --device} and {@code --threads}, shared by every command that runs kernels. */
public final class DeviceOptions {

    /** The requested device is not available here (exit status {@link Main#EXIT_NO_DEVICE}). */
    public static final class UnavailableException extends RuntimeException {
        public UnavailableException(String message) {
            super(message);
        }
    }

    @Option(names = "--device", defaultValue = "auto",
            description = "auto, cpu or cuda (default: ${DEFAULT-VALUE}). auto uses CUDA when a driver and a device are found, and says which it chose.")
    DeviceChoice device = DeviceChoice.auto;

    @Option(names = "--threads", description = "CPU worker threads (default: every core).")
    Integer threads;

    /** Why CUDA is not used: no driver / no device (the probe's reason), or a device but no CUDA backend yet. */
    public static String cudaStatus() {
        CudaDevices.Probe p = CudaDevices.probe();
        return p.available()
                ? "found " + p.devices().getFirst().describe() + ", but training on CUDA is not wired up yet"
                        + " (selftest --device cuda checks the CUDA kernels there)"
                : p.reason() + "; and training on CUDA is not wired up yet";
    }

    /** Kernels for the chosen device; {@code configThreads} (0 = unset) applies when --threads is absent. */
    public Kernels open(int configThreads, PrintWriter out) {
        String why = cudaStatus();
        if (device == DeviceChoice.cuda) throw new UnavailableException("--device cuda: " + why + "; use --device cpu");
        int n = threads != null ? threads : configThreads > 0 ? configThreads
                : Integer.getInteger("distillery.threads", Runtime.getRuntime().availableProcessors());
        if (n < 1) throw new IllegalArgumentException("--threads must be >= 1, got " + n);
        Kernels k = new CpuKernels(n, "auto");
        out.println("device: cpu" + (device == DeviceChoice.auto ? " (auto: " + why + ")" : "") + "; " + k.describe());
        out.flush();
        return k;
    }
}
