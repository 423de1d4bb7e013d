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

import dev.distillery.kernels.Backend;
import dev.distillery.kernels.Backends;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The CUDA variant of {@link DistillLossBenchmark}: the same loss (forward KL, T = 2, alpha = 0.5,
 * loss + gradient in place) on device buffers through {@code CudaKernels}, timed with the stream
 * synchronized after each call, and a device-to-device copy of the same traffic as the bandwidth
 * yardstick (GB/s = traffic / time). Needs a CUDA device; elsewhere setup fails saying what is missing.
 *
 * <pre>java -jar bench/target/benchmarks.jar CudaDistillLossBenchmark</pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class CudaDistillLossBenchmark {

    @Param({"2048x32000", "4096x50257", "1024x128256"})
    public String shape;

    @Param({"dense-bf16", "top64"})
    public String teacher;

    private static final int K = 64;

    private Kernels kernels;
    private Arena device;
    private MemorySegment student, labels, teacherLogits, ids, topLogits, lse, copyDst;
    private TeacherTargets targets;
    private DistillOptions options;
    private int n, v;
    private long trafficBytes;

    @Setup(Level.Trial)
    public void setUp() {
        String[] nv = shape.split("x");
        n = Integer.parseInt(nv[0]);
        v = Integer.parseInt(nv[1]);
        kernels = Backends.open(new Backends.Request(Backend.CUDA, 1, "auto", false, Precision.FP32));
        device = Arena.ofShared();
        options = DistillOptions.of(2f, 0.5f);
        SplittableRandom rng = new SplittableRandom(1);
        long elems = (long) n * v;
        try (Arena host = Arena.ofConfined()) {
            MemorySegment s = host.allocate(4 * elems, 64);
            for (long i = 0; i < elems; i++) s.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) (3 * rng.nextGaussian()));
            student = kernels.allocate(device, 4 * elems);
            kernels.copyFromHost(student, s, 4 * elems);
            MemorySegment l = host.allocate(4L * n, 64);
            for (int r = 0; r < n; r++) l.setAtIndex(ValueLayout.JAVA_INT, r, rng.nextInt(v));
            labels = kernels.allocate(device, 4L * n);
            kernels.copyFromHost(labels, l, 4L * n);
            if (teacher.equals("dense-bf16")) {
                MemorySegment t = host.allocate(2 * elems, 64);
                for (long i = 0; i < elems; i++) DType.BF16.write(t, i, (float) (4 * rng.nextGaussian()));
                teacherLogits = kernels.allocate(device, 2 * elems);
                kernels.copyFromHost(teacherLogits, t, 2 * elems);
                targets = new TeacherTargets.Dense(teacherLogits, DType.BF16, v);
                trafficBytes = elems * (4 + 2 + 4);
            } else {
                MemorySegment hi = host.allocate(4L * n * K, 64), hl = host.allocate(4L * n * K, 64), hs = host.allocate(4L * n, 64);
                for (int r = 0; r < n; r++) {
                    int[] pick = rng.ints(0, v).distinct().limit(K).toArray();
                    for (int i = 0; i < K; i++) {
                        hi.setAtIndex(ValueLayout.JAVA_INT, (long) r * K + i, pick[i]);
                        hl.setAtIndex(ValueLayout.JAVA_FLOAT, (long) r * K + i, (float) (4 * rng.nextGaussian() + 8));
                    }
                    hs.setAtIndex(ValueLayout.JAVA_FLOAT, r, 6f);
                }
                ids = kernels.allocate(device, 4L * n * K);
                topLogits = kernels.allocate(device, 4L * n * K);
                lse = kernels.allocate(device, 4L * n);
                kernels.copyFromHost(ids, hi, 4L * n * K);
                kernels.copyFromHost(topLogits, hl, 4L * n * K);
                kernels.copyFromHost(lse, hs, 4L * n);
                targets = new TeacherTargets.TopK(ids, topLogits, DType.F32, lse, K, v, 2f);
                trafficBytes = elems * 8 + (long) n * K * 8;
            }
            copyDst = kernels.allocate(device, trafficBytes / 2);
        }
    }

    @Benchmark
    public double fused() {
        double total = kernels.distillLoss(student, student, targets, labels, null, null, n, v, options, 1f / n).total();
        kernels.synchronize();
        return total;
    }

    /** Copy bandwidth on the same device: trafficBytes moved (trafficBytes / 2 read, trafficBytes / 2 written). */
    @Benchmark
    public void deviceCopyOfTheSameTraffic() {
        kernels.copy(copyDst, student, Math.min(trafficBytes / 2, 4L * n * v));
        kernels.synchronize();
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        if (device != null) device.close();
        if (kernels != null) kernels.close();
    }
}
