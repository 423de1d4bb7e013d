package dev.distillery.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
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

import dev.distillery.kernels.Backends;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * What a second teacher costs in the fused loss, per chunk of rows (forward KL, T = 2, alpha 0.5,
 * dense bf16 teachers, the gradient into its own buffer so the student's logits stay as they are):
 * one teacher; the mixture of two (the fused loss once, reading both teachers' rows); the mean of
 * two losses (the fused loss twice, the gradients summed).
 *
 * <pre>java -jar bench/target/benchmarks.jar TeacherMixtureBenchmark</pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class TeacherMixtureBenchmark {

    @Param({"2048x32000"})
    public String shape;

    @Param({"2"})
    public int threads;

    private static final float T = 2f, ALPHA = 0.5f;

    private int n, v;
    private Arena arena;
    private Kernels kernels;
    private MemorySegment student, grad, gradOne, labels;
    private TeacherTargets.Dense a, b;
    private TeacherTargets.Mixture mixture;
    private DistillOptions options;

    @Setup(Level.Trial)
    public void setUp() {
        String[] nv = shape.split("x");
        n = Integer.parseInt(nv[0]);
        v = Integer.parseInt(nv[1]);
        arena = Arena.ofShared();
        kernels = Backends.open(Backends.Request.cpu(threads, "auto"));
        options = DistillOptions.of(T, ALPHA);
        SplittableRandom rng = new SplittableRandom(7);
        long cells = (long) n * v;
        student = arena.allocate(4 * cells, 64);
        grad = arena.allocate(4 * cells, 64);
        gradOne = arena.allocate(4 * cells, 64);
        MemorySegment ta = arena.allocate(2 * cells, 64), tb = arena.allocate(2 * cells, 64);
        for (long i = 0; i < cells; i++) {
            student.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) (3 * rng.nextGaussian()));
            DType.BF16.write(ta, i, (float) (3 * rng.nextGaussian()));
            DType.BF16.write(tb, i, (float) (3 * rng.nextGaussian()));
        }
        a = new TeacherTargets.Dense(ta, DType.BF16, v);
        b = new TeacherTargets.Dense(tb, DType.BF16, v);
        mixture = new TeacherTargets.Mixture(java.util.List.of(a, b), new float[]{0.5f, 0.5f});
        labels = arena.allocate(4L * n, 64);
        for (int r = 0; r < n; r++) labels.setAtIndex(ValueLayout.JAVA_INT, r, rng.nextInt(v));
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        kernels.close();
        arena.close();
    }

    @Benchmark
    public double oneTeacher() {
        return kernels.distillLoss(student, grad, a, labels, null, null, n, v, options, 1f / n).total();
    }

    @Benchmark
    public double mixtureOfTwo() {
        return kernels.distillLoss(student, grad, mixture, labels, null, null, n, v, options, 1f / n).total();
    }

    @Benchmark
    public double meanOfTwo() {
        double total = kernels.distillLoss(student, grad, a, labels, null, null, n, v, options, 0.5f / n).total();
        total += kernels.distillLoss(student, gradOne, b, labels, null, null, n, v, options, 0.5f / n).total();
        kernels.accumulate(grad, gradOne, (long) n * v);
        return total / 2;
    }
}
