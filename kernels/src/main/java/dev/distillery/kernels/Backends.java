package dev.distillery.kernels;

import java.util.function.Consumer;

import dev.distillery.bindings.CudaDevices;
import dev.distillery.bindings.CudaLibraries;
import dev.distillery.bindings.SharedLibraries;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.cuda.CudaDevice;
import dev.distillery.kernels.cuda.CudaKernels;

/**
 * The one place that picks a backend: probes the CUDA driver, device, cuBLAS and the jar's CUDA
 * kernels, falls back to the CPU for {@code auto}, and says which it chose and why. Commands and
 * benchmarks hold only their flags and call {@link #open}.
 */
public final class Backends {

    /**
     * What a command asks for.
     *
     * @param threads CPU worker threads (at least 1)
     * @param gemm    CPU GEMM: auto (OpenBLAS when it loads), blas or vector
     * @param tf32      on CUDA, let cuBLAS use TF32 tensor cores for fp32 GEMMs
     * @param precision the GEMMs' arithmetic: fp32, or bf16 mixed precision where the device has it
     */
    public record Request(Backend backend, int threads, String gemm, boolean tf32, Precision precision) {
        public Request {
            if (backend == null) throw new IllegalArgumentException("a backend is required");
            if (threads < 1) throw new IllegalArgumentException("--threads must be >= 1, got " + threads);
            if (precision == null) precision = Precision.FP32;
        }

        /** The CPU with {@code threads} workers and the given GEMM, in fp32. */
        public static Request cpu(int threads, String gemm) {
            return cpu(threads, gemm, Precision.FP32);
        }

        /** The CPU with {@code threads} workers, the given fp32 GEMM and {@code precision}. */
        public static Request cpu(int threads, String gemm, Precision precision) {
            return new Request(Backend.CPU, threads, gemm, false, precision);
        }
    }

    /** The backend asked for cannot run here; the message names what is missing. */
    public static final class UnavailableException extends RuntimeException {
        public UnavailableException(String message) {
            super(message);
        }
    }

    private Backends() {
    }

    /** Every core, or {@code -Ddistillery.threads}. */
    public static int defaultThreads() {
        return Integer.getInteger("distillery.threads", Runtime.getRuntime().availableProcessors());
    }

    /**
     * The CUDA device this process takes: its rank on the node under mpirun
     * ({@code OMPI_COMM_WORLD_LOCAL_RANK}) modulo the devices it sees, so that one rank per GPU
     * spreads over the node's GPUs (and a launcher that gives each rank one device through
     * {@code CUDA_VISIBLE_DEVICES} gets device 0); 0 outside mpirun.
     */
    static int deviceOrdinal(int devices) {
        return deviceOrdinal(System.getenv("OMPI_COMM_WORLD_LOCAL_RANK"), devices);
    }

    /** {@link #deviceOrdinal(int)} for a given local rank (null outside mpirun). */
    static int deviceOrdinal(String local, int devices) {
        if (local == null || devices < 1) return 0;
        try {
            return Math.floorMod(Integer.parseInt(local.trim()), devices);
        } catch (NumberFormatException e) {
            throw new IllegalStateException("OMPI_COMM_WORLD_LOCAL_RANK is \"" + local + "\", not a rank number");
        }
    }

    /** Why CUDA cannot be used here (no driver or device, no cuBLAS, a jar built without nvcc), or null when it can. */
    public static String cudaUnavailableReason() {
        CudaDevices.Probe p = CudaDevices.probe();
        if (!p.available()) return p.reason();
        SharedLibraries.Probe blas = CudaLibraries.cublas();
        if (!blas.loaded()) return "found " + p.devices().getFirst().describe() + ", but cuBLAS " + blas.describe();
        if (CudaDevice.class.getResource(CudaDevice.FATBIN) == null) {
            return "found " + p.devices().getFirst().describe() + ", but this jar was built without nvcc and holds no CUDA kernels";
        }
        return null;
    }

    /**
     * Kernels for the request, and a line on {@code say} naming the device picked and, for auto,
     * why: "device: cuda (auto); ..." or "device: cpu (auto: no CUDA driver ...); cpu (...)".
     *
     * @throws UnavailableException for CUDA where it cannot be used (the reason is named)
     */
    public static Kernels open(Request r, Consumer<String> say) {
        String why = null;
        if (r.backend() != Backend.CPU) {
            why = cudaUnavailableReason();
            if (why == null) {
                try {
                    Kernels k = CudaKernels.open(deviceOrdinal(CudaDevices.probe().devices().size()), r.tf32(), r.precision());
                    say.accept("device: cuda" + (r.backend() == Backend.AUTO ? " (auto)" : "") + "; " + k.describe()
                            + (r.tf32() ? ", TF32 GEMMs" : ""));
                    return k;
                } catch (RuntimeException e) {
                    why = "opening the CUDA device failed: " + e.getMessage();
                }
            }
            if (r.backend() == Backend.CUDA) throw new UnavailableException("--device cuda: " + why + "; use --device cpu");
        }
        Kernels k = new CpuKernels(r.threads(), r.gemm(), r.precision());
        say.accept("device: cpu" + (why != null ? " (auto: " + why + ")" : "") + "; " + k.describe());
        return k;
    }

    /** {@link #open} without the line: for benchmarks and tests. */
    public static Kernels open(Request r) {
        return open(r, line -> { });
    }

    /**
     * {@link #open(Request)}, refusing where the device cannot give the request's precision
     * (a benchmark of bf16 that ran fp32 would measure the wrong thing).
     */
    public static Kernels openExactly(Request r) {
        Kernels k = open(r);
        if (k.precision() != r.precision()) {
            String why = k.describe();
            k.close();
            throw new UnavailableException("precision " + r.precision().key() + " cannot run here: " + why);
        }
        return k;
    }
}
