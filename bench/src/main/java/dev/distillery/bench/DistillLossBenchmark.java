package dev.distillery.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;

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

import dev.distillery.kernels.Backends;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The fused distillation loss (forward KL, T = 2, alpha = 0.5, T² on, loss + gradient in place)
 * against {@link UnfusedDistillLoss}, at three LM-head shapes, with a dense bf16 teacher and a
 * top-64 teacher. Traffic floor for GB/s: student read once + teacher read once + gradient
 * written once (dense: n·V·(4 + 2 + 4) bytes; top-64: n·V·8 + n·64·8).
 *
 * <pre>java -jar bench/target/benchmarks.jar DistillLossBenchmark</pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED",
        "-Djava.util.concurrent.ForkJoinPool.common.parallelism=2"})
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class DistillLossBenchmark {

    @Param({"2048x32000", "4096x50257", "1024x128256"})
    public String shape;

    @Param({"dense-bf16", "top64"})
    public String teacher;

    @Param({"2"})
    public int threads;

    /** forward-kl (the default), reverse-kl or jsd (beta 0.5): {@code -p divergence=jsd}. */
    @Param({"forward-kl"})
    public String divergence;

    private static final float T = 2f, ALPHA = 0.5f;
    private static final int K = 64;

    private int n, v;
    private Arena arena;
    private Kernels kernels;
    private MemorySegment student, studentCopy, teacherLogits, labelsSeg, logq, logp, p, logq1;
    private int[] labels, ids;
    private float[] topLogits, lse;
    private TeacherTargets targets;
    private DistillOptions options;

    @Setup(Level.Trial)
    public void setUp() {
        String[] nv = shape.split("x");
        n = Integer.parseInt(nv[0]);
        v = Integer.parseInt(nv[1]);
        arena = Arena.ofShared();
        kernels = Backends.open(Backends.Request.cpu(threads, "auto"));
        options = DistillOptions.of(T, ALPHA).withDivergence(switch (divergence) {
            case "forward-kl" -> Divergence.forwardKl();
            case "reverse-kl" -> Divergence.reverseKl();
            case "jsd" -> Divergence.jsd(0.5);
            default -> throw new IllegalArgumentException("divergence " + divergence + ": forward-kl, reverse-kl or jsd");
        });
        long elems = (long) n * v;
        student = arena.allocate(4 * elems, 64);
        studentCopy = arena.allocate(4 * elems, 64);
        SplittableRandom rng = new SplittableRandom(1);
        long seed = rng.nextLong();
        IntStream.range(0, n).parallel().forEach(r -> {
            SplittableRandom rr = new SplittableRandom(seed + r);
            for (int j = 0; j < v; j++) studentCopy.setAtIndex(ValueLayout.JAVA_FLOAT, (long) r * v + j, (float) (3 * rr.nextGaussian()));
        });
        labels = new int[n];
        for (int r = 0; r < n; r++) labels[r] = rng.nextInt(v);
        labelsSeg = arena.allocateFrom(ValueLayout.JAVA_INT, labels);
        if (teacher.equals("dense-bf16")) {
            teacherLogits = arena.allocate(2 * elems, 64);
            IntStream.range(0, n).parallel().forEach(r -> {
                SplittableRandom rr = new SplittableRandom(seed * 31 + r);
                for (int j = 0; j < v; j++) DType.BF16.write(teacherLogits, (long) r * v + j, (float) (4 * rr.nextGaussian()));
            });
            targets = new TeacherTargets.Dense(teacherLogits, DType.BF16, v);
            logp = arena.allocate(4 * elems, 64);
            p = arena.allocate(4 * elems, 64);
        } else {
            ids = new int[n * K];
            topLogits = new float[n * K];
            lse = new float[n];
            for (int r = 0; r < n; r++) {
                int[] pick = rng.ints(0, v).distinct().limit(K).toArray();
                for (int i = 0; i < K; i++) {
                    ids[r * K + i] = pick[i];
                    topLogits[r * K + i] = (float) (8 + 2 * rng.nextGaussian());
                }
                lse[r] = 8f / T + (float) Math.log(v); // a plausible full-vocabulary logsumexp; leaves a tail
            }
            targets = new TeacherTargets.TopK(arena.allocateFrom(ValueLayout.JAVA_INT, ids),
                    arena.allocateFrom(ValueLayout.JAVA_FLOAT, topLogits), DType.F32,
                    arena.allocateFrom(ValueLayout.JAVA_FLOAT, lse), K, v, T);
        }
        logq = arena.allocate(4 * elems, 64);
        logq1 = arena.allocate(4 * elems, 64);
    }

    /** Each invocation starts from the same student logits (the fused kernel overwrites them). */
    @Setup(Level.Invocation)
    public void restoreStudent() {
        MemorySegment.copy(studentCopy, 0, student, 0, student.byteSize());
    }

    @Benchmark
    public double fused() {
        return kernels.distillLoss(student, student, targets, labelsSeg, null, null, n, v,
                options, 1f / n).total();
    }

    @Benchmark
    public double unfused() {
        if (!divergence.equals("forward-kl")) {
            throw new UnsupportedOperationException("the unfused composition is forward KL only; run '\\.fused' for " + divergence);
        }
        if (teacher.equals("dense-bf16")) {
            return UnfusedDistillLoss.dense(student, teacherLogits, DType.BF16, labels, student, logq, logp, p, logq1,
                    n, v, T, ALPHA);
        }
        return UnfusedDistillLoss.topK(student, ids, topLogits, lse, K, labels, student, logq, logq1, n, v, T, ALPHA);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        kernels.close();
        arena.close();
    }
}
