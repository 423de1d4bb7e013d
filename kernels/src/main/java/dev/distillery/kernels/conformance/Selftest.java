package dev.distillery.kernels.conformance;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import dev.distillery.bindings.NcclLibrary;
import dev.distillery.bindings.OpenBlasLibrary;
import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.DeviceCollectives;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.cuda.CudaConformance;
import dev.distillery.kernels.cuda.CudaDevice;
import dev.distillery.kernels.cuda.CudaKernels;

/**
 * {@code selftest}: every kernel of a backend on fresh random inputs against a reference. The CPU
 * against float64 ({@link KernelConformance}); CUDA kernel by kernel against the CPU kernels
 * ({@link CudaConformance}), then {@link CudaKernels}, the whole contract with its copies, against
 * float64, and NCCL where it loads (a group of one rank). On both, the GEMMs of bf16 mixed
 * precision where the device has them. The caller prints the report.
 */
public final class Selftest {

    /** One table: an optional title line before it, and the noun of its summary line ("12 checks, ..."). */
    public record Section(String title, String what, List<KernelConformance.Result> results) {
        public long failed() {
            return results.stream().filter(r -> !r.passed()).count();
        }
    }

    /** Lines that say what ran where, then the tables. */
    public record Report(List<String> header, List<Section> sections) {
        public long failed() {
            return sections.stream().mapToLong(Section::failed).sum();
        }
    }

    private Selftest() {
    }

    /**
     * A communicator of one rank sums a device buffer of 1,000,003 random floats in place: the
     * bindings, the id, the join and the allreduce on the kernels' stream, end to end. Error: the
     * share of values whose bits changed.
     */
    private static KernelConformance.Result groupOfOne(Kernels kernels, DeviceCollectives nccl, long seed) {
        int n = 1_000_003;
        SplittableRandom rng = new SplittableRandom(seed);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(4L * n, 64), back = arena.allocate(4L * n, 64);
            for (int i = 0; i < n; i++) host.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) rng.nextGaussian());
            MemorySegment device = kernels.allocate(arena, 4L * n);
            kernels.copyFromHost(device, host, 4L * n);
            long t0 = System.nanoTime();
            try (DeviceCollectives.Sum group = nccl.join(nccl.newId(), 0, 1)) {
                group.sum(device, n);
                kernels.synchronize();
            }
            double ms = (System.nanoTime() - t0) / 1e6;
            kernels.copyToHost(back, device, 4L * n);
            long changed = 0;
            for (int i = 0; i < n; i++) {
                if (host.getAtIndex(ValueLayout.JAVA_INT, i) != back.getAtIndex(ValueLayout.JAVA_INT, i)) changed++;
            }
            return new KernelConformance.Result("ncclAllReduce (join included)", "1 rank x " + n, (double) changed / n, 0, ms);
        }
    }

    /** The GEMMs of bf16 mixed precision, and the ops made of them, as {@link KernelConformance} checks them. */
    private static Section bf16Section(Kernels bf16, long seed, KernelConformance.Sizes sizes) {
        return new Section("bf16 mixed precision (" + bf16.describe() + "): GEMMs against float64 on bf16-rounded operands,"
                + " linear and attention against fp32 within bf16's tolerance:", "bf16 checks", KernelConformance.run(bf16, seed, sizes));
    }

    /**
     * Runs the checks of {@code backend}: AUTO and CPU check the CPU kernels (AUTO says whether a
     * CUDA device is here to check), CUDA checks device 0.
     *
     * @throws Backends.UnavailableException for CUDA where it cannot be used
     */
    public static Report run(Backend backend, int threads, String gemm, long seed, boolean quick) {
        KernelConformance.Sizes sizes = quick ? KernelConformance.Sizes.quick() : KernelConformance.Sizes.standard();
        List<String> header = new ArrayList<>();
        if (backend == Backend.CUDA) {
            String why = Backends.cudaUnavailableReason();
            if (why != null) throw new Backends.UnavailableException("--device cuda: " + why + "; use --device cpu");
            try (CudaDevice gpu = CudaDevice.open(0, false); Kernels cpu = new CpuKernels(threads, gemm)) {
                header.add("device: " + gpu.describe());
                header.add("reference: " + cpu.describe());
                header.add("seed: " + seed);
                Section kernels = new Section(null, "CUDA kernel checks against the CPU kernels", CudaConformance.run(gpu, cpu, seed, quick));
                List<Section> sections = new ArrayList<>(List.of(kernels));
                try (CudaKernels contract = new CudaKernels(gpu)) {
                    sections.add(new Section("CudaKernels (the whole Kernels contract, with its copies) against the float64 reference:",
                            "contract checks", KernelConformance.run(contract, seed, sizes)));
                    DeviceCollectives nccl = contract.deviceCollectives().orElse(null);
                    if (nccl == null) {
                        header.add("nccl: " + NcclLibrary.load().describe() + "; GPU ranks would sum through host memory");
                    } else {
                        header.add("nccl: " + nccl.describe());
                        sections.add(new Section("NCCL, a group of this one rank (its sum is the identity, bit for bit):", "NCCL checks",
                                List.of(groupOfOne(contract, nccl, seed))));
                    }
                }
                try (CudaKernels bf16 = new CudaKernels(gpu, Precision.BF16)) {
                    sections.add(bf16Section(bf16, seed, sizes));
                }
                return new Report(header, sections);
            }
        }
        try (Kernels kernels = new CpuKernels(threads, gemm)) {
            if (backend == Backend.AUTO) {
                String why = Backends.cudaUnavailableReason();
                header.add("device: cpu (auto: " + (why != null ? why : "a CUDA device is here: selftest --device cuda checks it") + ")");
            }
            header.add("backend: " + kernels.describe());
            header.add("blas: " + OpenBlasLibrary.probe().describe());
            header.add("seed: " + seed);
            List<Section> sections = new ArrayList<>(List.of(new Section(null, "checks", KernelConformance.run(kernels, seed, sizes))));
            String noBf16 = CpuKernels.bf16UnavailableReason();
            if (noBf16 != null) {
                header.add("bf16: not checked: " + noBf16 + " (a bf16 run takes the fp32 GEMMs)");
            } else {
                try (Kernels bf16 = new CpuKernels(threads, gemm, Precision.BF16)) {
                    sections.add(bf16Section(bf16, seed, sizes));
                }
            }
            return new Report(header, sections);
        }
    }
}
