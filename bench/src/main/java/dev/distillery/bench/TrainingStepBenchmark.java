package dev.distillery.bench;

import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * One full training step of the student (forward, fused cross-entropy, backward, gradient
 * clipping, AdamW) on random tokens: time per step; tokens/s = batch · ctx / time.
 * Config A: 8 × 128 = 1,024 tokens a step; config B: 8 × 256 = 2,048.
 * {@code -p precision=bf16} runs it in bf16 mixed precision (bf16 GEMM operands, fp32 sums).
 * {@code -p device=cuda} runs the same step on GPU 0 through {@code CudaKernels} (the step ends
 * with the gradient norm copied back, so the time includes all of its GPU work).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx8g"})
@Warmup(iterations = 3, time = 5)
@Measurement(iterations = 5, time = 10)
public class TrainingStepBenchmark {

    @Param({"A", "B"})
    public String config;

    @Param({"2"})
    public int threads;

    /** auto = OpenBLAS when it loads; vector = the pure Vector-API GEMM. */
    @Param({"auto"})
    public String gemm;

    /** cpu, or cuda (GPU 0, fp32 GEMMs; needs a driver and a device), or auto. */
    @Param({"cpu"})
    public String device;

    /** fp32, or bf16 (mixed precision: bf16 GEMM operands, fp32 sums; refused where the device has no bf16 arithmetic). */
    @Param({"fp32"})
    public String precision;

    private Kernels kernels;
    private Gpt2 model;
    private TrainingSession session;

    @Setup(Level.Trial)
    public void setUp() {
        StudentConfigs c = StudentConfigs.valueOf(config);
        kernels = Backends.open(new Backends.Request(Backend.parse(device), threads, gemm, false, Precision.parse(precision, "precision")));
        if (kernels.precision() != Precision.parse(precision, "precision")) {
            throw new IllegalStateException("precision=" + precision + " cannot run here: " + kernels.describe());
        }
        model = new Gpt2(c.model, kernels);
        model.initialize(1);
        int t = c.model.contextLength();
        session = new TrainingSession(model, kernels, AdamW.Config.defaults(),
                new LearningRateSchedule(3e-4, 3e-5, 10, 1_000_000), 1.0, c.batch, t);
        Rng rng = new Rng(2);
        int[] windows = new int[c.batch * (t + 1)];
        for (int i = 0; i < windows.length; i++) windows[i] = rng.nextInt(c.model.vocabSize());
        session.inputs().setWindows(windows);
    }

    @Benchmark
    public double step() {
        return session.step().loss();
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        session.close();
        model.close();
        kernels.close();
    }
}
