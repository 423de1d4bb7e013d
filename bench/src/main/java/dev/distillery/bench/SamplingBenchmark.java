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
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;

/**
 * {@code Kernels.sampleRows}, a decode step's draw of one token a sequence: rows of logits (a batch
 * of sequences) over a vocabulary, at a temperature, from the whole vocabulary ({@code topK} 0) or
 * its top k. The logits are N(0, 3²), about the spread of a trained model's; time / (rows · vocab)
 * is the cost of one candidate. Its share of a generation call is {@code GenerationBenchmark}'s
 * time against this one's.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class SamplingBenchmark {

    @Param({"128256", "50257"})
    public int vocab;

    @Param({"32"})
    public int rows;

    @Param({"0.7"})
    public double temperature;

    @Param({"0", "50"})
    public int topK;

    @Param({"2"})
    public int threads;

    private Arena arena;
    private Kernels kernels;
    private MemorySegment logits, uniforms, ids;

    @Setup(Level.Trial)
    public void setUp() {
        arena = Arena.ofShared();
        kernels = Backends.openExactly(Backends.Request.cpu(threads, "auto", Precision.FP32));
        logits = arena.allocate(4L * rows * vocab, 64);
        SplittableRandom rng = new SplittableRandom(7);
        for (long i = 0; i < (long) rows * vocab; i++) logits.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) (3 * rng.nextGaussian()));
        uniforms = arena.allocate(8L * rows, 64);
        for (int r = 0; r < rows; r++) uniforms.setAtIndex(ValueLayout.JAVA_DOUBLE, r, rng.nextDouble());
        ids = arena.allocate(4L * rows, 64);
    }

    @Benchmark
    public MemorySegment sampleRows() {
        kernels.sampleRows(ids, logits, uniforms, rows, vocab, temperature, topK);
        return ids;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        kernels.close();
        arena.close();
    }
}
