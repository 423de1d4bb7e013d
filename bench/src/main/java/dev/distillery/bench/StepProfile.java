package dev.distillery.bench;

import java.lang.foreign.Arena;
import java.util.Comparator;
import java.util.Locale;
import java.util.Map;

import dev.distillery.kernels.Backends;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * Where a training step's time goes, kernel by kernel: runs warm-up steps, then times each kernel
 * over the measured steps through {@link TimedKernels}.
 *
 * <pre>java --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate \
 *     -cp bench/target/benchmarks.jar dev.distillery.bench.StepProfile B 2 [steps] [gemm] [warm-up steps] [fp32|bf16] [cpu|cuda|cuda-host-only] \
 *     [keep|recompute] [ce|distill]</pre>
 *
 * {@code distill} profiles {@link TrainingStepBenchmark}'s distillation step (a dense bf16 teacher,
 * forward KL, T = 2, alpha 0.5) instead of the hard-label step.
 *
 * On cuda each kernel's time is its GPU work (see {@link TimedKernels}); cuda-host-only times the
 * host's share alone ({@link HostOnlyCudaBackend}).
 */
public final class StepProfile {

    private StepProfile() {
    }

    public static void main(String[] args) {
        StudentConfigs c = StudentConfigs.valueOf(args.length > 0 ? args[0] : "A");
        int threads = args.length > 1 ? Integer.parseInt(args[1]) : 2;
        int steps = args.length > 2 ? Integer.parseInt(args[2]) : 5;
        String gemm = args.length > 3 ? args[3] : "auto";
        int warmup = args.length > 4 ? Integer.parseInt(args[4]) : 10;
        Precision precision = Precision.parse(args.length > 5 ? args[5] : "fp32", "precision (6th argument)");
        String device = args.length > 6 ? args[6] : "cpu";
        String attention = args.length > 7 ? args[7] : "keep";   // attention's probabilities kept for the backward or made again
        if (!attention.equals("keep") && !attention.equals("recompute")) {
            System.err.println("StepProfile: the 8th argument is keep or recompute (attention's probabilities), got " + attention);
            System.exit(2);
        }
        String loss = args.length > 8 ? args[8] : "ce";
        if (!loss.equals("ce") && !loss.equals("distill")) {
            System.err.println("StepProfile: the 9th argument is ce or distill (the step's loss), got " + loss);
            System.exit(2);
        }
        Kernels inner;
        try {
            inner = HostOnlyCudaBackend.openKernels(device, threads, gemm, precision);
        } catch (Backends.UnavailableException e) {
            System.err.println("StepProfile: " + e.getMessage());
            System.exit(2);
            return;
        }
        try (TimedKernels kernels = new TimedKernels(inner);
             Gpt2 model = new Gpt2(c.model, kernels);
             Arena arena = Arena.ofShared()) {
            model.initialize(1);
            int t = c.model.contextLength();
            try (TrainingSession s = new TrainingSession(model, kernels, AdamW.Config.defaults(),
                    new LearningRateSchedule(3e-4, 3e-5, 10, 1_000_000), 1.0, c.batch, t)) {
                s.recomputeAttention(attention.equals("recompute"));
                Rng rng = new Rng(2);
                int[] windows = new int[c.batch * (t + 1)];
                for (int i = 0; i < windows.length; i++) windows[i] = rng.nextInt(c.model.vocabSize());
                s.inputs().setWindows(windows);
                TeacherTargets teacher = loss.equals("distill") ? TrainingStepBenchmark.denseTeacher(kernels, arena, c, rng) : null;
                Runnable step = teacher == null ? s::step : () -> TrainingStepBenchmark.distillStep(s, teacher);
                for (int i = 0; i < warmup; i++) step.run();
                kernels.reset();
                long t0 = System.nanoTime();
                for (int i = 0; i < steps; i++) step.run();
                double stepMs = (System.nanoTime() - t0) / 1e6 / steps;
                System.out.printf(Locale.ROOT, "config %s%s, %s, %d steps: %.1f ms/step, %.0f tokens/s%n",
                        c, teacher == null ? "" : " (distillation)", kernels.describe(), steps, stepMs, c.tokensPerStep() / stepMs * 1000);
                System.out.printf(Locale.ROOT, "%-22s %10s %8s %8s%n", "kernel", "ms/step", "share", "calls");
                double accounted = 0;
                for (Map.Entry<String, TimedKernels.Timing> e : kernels.timings().entrySet().stream()
                        .sorted(Comparator.comparingLong(e -> -e.getValue().nanos())).toList()) {
                    double ms = e.getValue().nanos() / 1e6 / steps;
                    accounted += ms;
                    System.out.printf(Locale.ROOT, "%-22s %10.2f %7.1f%% %8d%n", e.getKey(), ms, 100 * ms / stepMs,
                            e.getValue().calls() / steps);
                }
                System.out.printf(Locale.ROOT, "%-22s %10.2f %7.1f%%%n", "(outside kernels)", stepMs - accounted,
                        100 * (stepMs - accounted) / stepMs);
                System.out.printf(Locale.ROOT, "memory: workspace (activations and their gradients) %.0f MB at its peak, "
                                + "parameters with gradients and AdamW moments %.0f MB%n", s.workspace().highWater() / 1e6,
                        16.0 * model.parameters().parameterCount() / 1e6);
            }
        }
    }
}
