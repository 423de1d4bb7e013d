package dev.distillery.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
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

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * One full training step of the student (forward, fused cross-entropy, backward, gradient
 * clipping, AdamW) on random tokens: time per step; tokens/s = batch · ctx / time.
 * Config A: 8 × 128 = 1,024 tokens a step; config B: 8 × 256 = 2,048; config L (B's model over a long
 * context, {@code -p config=L}): 1 × 2,048.
 * {@code -p loss=distill} makes it a distillation step against a dense bf16 teacher (T = 2, alpha 0.5).
 * {@code -p precision=bf16} runs it in bf16 mixed precision (bf16 GEMM operands, fp32 sums).
 * {@code -p device=cuda} runs the same step on GPU 0 through {@code CudaKernels} (the step ends
 * with the gradient norm copied back, so the time includes all of its GPU work).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
// the collector `java -jar trainer.jar` runs (ChildJvm)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED", "-Xmx8g", "-XX:+UseSerialGC"})
@Warmup(iterations = 3, time = 5)
@Measurement(iterations = 5, time = 10)
public class TrainingStepBenchmark {

    @Param({"A", "B"})
    public String config;

    @Param({"2"})
    public int threads;

    /** The fp32 GEMM: auto = ours where the native CPU library runs; blas = OpenBLAS; vector = the pure Vector-API GEMM. */
    @Param({"auto"})
    public String gemm;

    /**
     * cpu, or cuda (GPU 0; needs a driver and a device), or auto; or cuda-host-only: the CUDA
     * kernels over {@link HostOnlyCudaBackend}, which times the host's share of a GPU step
     * (everything but the driver's and the device's work) on any machine.
     */
    @Param({"cpu"})
    public String device;

    /** fp32, or bf16 (mixed precision: bf16 GEMM operands, fp32 sums; refused where the device has no bf16 arithmetic). */
    @Param({"fp32"})
    public String precision;

    /**
     * ce: hard labels only; distill: a distillation step against a dense bf16 teacher of random
     * logits (forward KL, T = 2, alpha = 0.5, T² on) through the chunked LM head + fused loss.
     */
    @Param({"ce"})
    public String loss;

    /**
     * keep: attention's probabilities kept from the forward for the backward; recompute: none
     * kept, made a band of rows at a time in the forward and again in the backward
     * ({@code recompute_attention}).
     */
    @Param({"keep"})
    public String attention;

    private Kernels kernels;
    private Gpt2 model;
    private TrainingSession session;
    private Arena arena;
    private TeacherTargets teacher;

    @Setup(Level.Trial)
    public void setUp() {
        StudentConfigs c = StudentConfigs.valueOf(config);
        kernels = HostOnlyCudaBackend.openKernels(device, threads, gemm, Precision.parse(precision, "precision"));
        model = new Gpt2(c.model, kernels);
        model.initialize(1);
        int t = c.model.contextLength();
        session = new TrainingSession(model, kernels, AdamW.Config.defaults(),
                new LearningRateSchedule(3e-4, 3e-5, 10, 1_000_000), 1.0, c.batch, t);
        if (!attention.equals("keep") && !attention.equals("recompute")) {
            throw new IllegalArgumentException("attention=" + attention + ": keep or recompute");
        }
        session.recomputeAttention(attention.equals("recompute"));
        Rng rng = new Rng(2);
        int[] windows = new int[c.batch * (t + 1)];
        for (int i = 0; i < windows.length; i++) windows[i] = rng.nextInt(c.model.vocabSize());
        session.inputs().setWindows(windows);
        if (loss.equals("distill")) {
            arena = Arena.ofShared();
            teacher = denseTeacher(kernels, arena, c, rng);
        } else if (!loss.equals("ce")) {
            throw new IllegalArgumentException("loss=" + loss + ": ce or distill");
        }
    }

    @Benchmark
    public double step() {
        return teacher == null ? session.step().loss() : distillStep(session, teacher);
    }

    /** The distillation step's teacher: dense bf16 logits, N(0, 4²), over the config's batch · ctx rows. */
    static TeacherTargets denseTeacher(Kernels kernels, Arena arena, StudentConfigs c, Rng rng) {
        int n = c.batch * c.model.contextLength(), v = c.model.vocabSize();
        // staging memory, as the trainer's prefetch slots: page-locked on CUDA, so the teacher's
        // copy to the device overlaps the forward pass (from pageable memory it would not)
        MemorySegment logits = kernels.allocateStaging(arena, 2L * n * v);
        for (long i = 0; i < (long) n * v; i++) DType.BF16.write(logits, i, (float) (4 * rng.nextGaussian()));
        return new TeacherTargets.Dense(logits, DType.BF16, v);
    }

    /** One distillation step against {@code teacher}: forward KL, T = 2, alpha = 0.5, T² on, the default chunk rows. */
    static double distillStep(TrainingSession session, TeacherTargets teacher) {
        session.beginStep();
        int chunkRows = ChunkedLinearDistillLoss.defaultChunkRows(teacher.vocab());
        double l = session.backwardDistill(teacher, DistillOptions.of(2f, 0.5f), DifferentiableOps.Reduction.MEAN, chunkRows, 1f).total();
        return session.finishStep(l).loss();
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        session.close();
        model.close();
        if (arena != null) arena.close();
        kernels.close();
    }
}
