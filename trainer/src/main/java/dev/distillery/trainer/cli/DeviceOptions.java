package dev.distillery.trainer.cli;

import java.io.PrintWriter;

import dev.distillery.bindings.CudaDevices;
import dev.distillery.bindings.CudaLibraries;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.cuda.CudaDevice;
import dev.distillery.kernels.cuda.CudaKernels;
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

    @Option(names = "--tf32", description = "On CUDA, let cuBLAS use TF32 tensor cores for fp32 GEMMs (faster; products keep a 10-bit mantissa).")
    boolean tf32;

    /** Why CUDA cannot be used here (no driver or device, no cuBLAS, a jar built without nvcc), or null when it can. */
    public static String cudaUnavailableReason() {
        CudaDevices.Probe p = CudaDevices.probe();
        if (!p.available()) return p.reason();
        CudaLibraries.Probe blas = CudaLibraries.cublas();
        if (!blas.loaded()) return "found " + p.devices().getFirst().describe() + ", but cuBLAS " + blas.describe();
        if (CudaDevice.class.getResource(CudaDevice.FATBIN) == null) {
            return "found " + p.devices().getFirst().describe() + ", but this jar was built without nvcc and holds no CUDA kernels";
        }
        return null;
    }

    /**
     * Kernels for the chosen device; {@code configThreads} (0 = unset) applies to the CPU when
     * --threads is absent. Says on {@code out} which device it picked and, for auto, why.
     *
     * @throws UnavailableException for --device cuda where CUDA cannot be used (the reason is named)
     */
    public Kernels open(int configThreads, PrintWriter out) {
        String why = null;
        if (device != DeviceChoice.cpu) {
            why = cudaUnavailableReason();
            if (why == null) {
                try {
                    Kernels k = CudaKernels.open(0, tf32);
                    out.println("device: cuda" + (device == DeviceChoice.auto ? " (auto)" : "") + "; " + k.describe()
                            + (tf32 ? ", TF32 GEMMs" : ""));
                    out.flush();
                    return k;
                } catch (RuntimeException e) {
                    why = "opening the CUDA device failed: " + e.getMessage();
                }
            }
            if (device == DeviceChoice.cuda) throw new UnavailableException("--device cuda: " + why + "; use --device cpu");
        }
        int n = threads != null ? threads : configThreads > 0 ? configThreads
                : Integer.getInteger("distillery.threads", Runtime.getRuntime().availableProcessors());
        if (n < 1) throw new IllegalArgumentException("--threads must be >= 1, got " + n);
        Kernels k = new CpuKernels(n, "auto");
        out.println("device: cpu" + (why != null ? " (auto: " + why + ")" : "") + "; " + k.describe());
        out.flush();
        return k;
    }
}
