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

/**
 * The machine's copy bandwidth, the yardstick for the loss kernels' effective GB/s: copies a
 * 1 GiB buffer into another, split over {@code threads} threads. Bytes moved per op = 2 GiB
 * (read + write).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class MemoryBandwidthBenchmark {

    static final long BYTES = 1L << 30;

    @Param({"1", "2"})
    public int threads;

    private Arena arena;
    private MemorySegment src, dst;

    @Setup(Level.Trial)
    public void setUp() {
        arena = Arena.ofShared();
        src = arena.allocate(BYTES, 64);
        dst = arena.allocate(BYTES, 64);
        src.fill((byte) 1);
        dst.fill((byte) 2);
    }

    @Benchmark
    public void copy() throws InterruptedException {
        long part = BYTES / threads;
        Thread[] workers = new Thread[threads - 1];
        for (int i = 1; i < threads; i++) {
            long off = i * part;
            workers[i - 1] = Thread.ofPlatform().start(() -> MemorySegment.copy(src, off, dst, off, part));
        }
        MemorySegment.copy(src, 0, dst, 0, part);
        for (Thread w : workers) w.join();
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        arena.close();
    }
}
