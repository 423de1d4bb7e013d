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

import dev.distillery.kernels.Backends;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.runtime.nn.Gpt2Config;

/**
 * What one kernel of a training step loses when its operands come from memory instead of cache.
 * {@code cache=hot} calls it again and again on the same buffers, as a kernel benchmark does;
 * {@code cache=cold} writes {@link #EVICT_BYTES} before every call, as the rest of a step does
 * between an activation's uses (config A's step moves about 175 MB), so the operands come from
 * DRAM. The kernels at a config's shapes (n = batch × context tokens, c channels): the MLP's first
 * linear (c → 4c) forward and backward, causal attention forward and backward, layernorm forward.
 * The difference between the two, against {@code StepProfile}'s time for the same kernel in a
 * step, says how much of a step is the kernels' arithmetic and how much their misses.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class ColdCacheBenchmark {

    /** Three times a 32 MB L3: written between cold calls, so none of the kernel's operands stay cached. */
    static final long EVICT_BYTES = 96L << 20;

    @Param({"A"})
    public String config;

    @Param({"linear-forward", "linear-backward", "attention-forward", "attention-backward", "layernorm-forward"})
    public String kernel;

    @Param({"hot", "cold"})
    public String cache;

    @Param({"2"})
    public int threads;

    /** fp32, or bf16 (the mixed-precision GEMMs, refused where the CPU has none). */
    @Param({"fp32"})
    public String precision;

    private Arena arena;
    private Kernels kernels;
    private MemorySegment evict;
    private float evictValue;
    private int b, t, c, nh, n, oc;   // oc = 4c: the MLP's first linear
    private MemorySegment x, weight, bias, y, dy, dx, dweight, dbias, qkv, att, datt, dqkv, mean, rstd;

    @Setup(Level.Trial)
    public void setUp() {
        if (!cache.equals("hot") && !cache.equals("cold")) throw new IllegalArgumentException("cache is hot or cold, got " + cache);
        StudentConfigs step = StudentConfigs.valueOf(config);
        Gpt2Config model = step.model;
        b = step.batch;
        t = model.contextLength();
        c = model.channels();
        nh = model.heads();
        n = b * t;
        oc = 4 * c;
        arena = Arena.ofShared();
        kernels = Backends.openExactly(Backends.Request.cpu(threads, "auto", Precision.parse(precision, "precision")));
        evict = arena.allocate(EVICT_BYTES, 64);
        switch (kernel) {
            case "linear-forward", "linear-backward" -> {
                x = random((long) n * c, 1);
                weight = random((long) c * oc, 2);
                bias = random(oc, 3);
                y = random((long) n * oc, 4);
                dy = random((long) n * oc, 5);
                dx = random((long) n * c, 6);
                dweight = random((long) c * oc, 7);
                dbias = random(oc, 8);
            }
            case "attention-forward", "attention-backward" -> {
                qkv = random((long) n * 3 * c, 1);
                att = random((long) b * nh * t * t, 2);
                datt = random((long) b * nh * t * t, 3);
                y = random((long) n * c, 4);
                dy = random((long) n * c, 5);
                dqkv = random((long) n * 3 * c, 6);
                kernels.attentionForward(y, DType.F32, att, qkv, b, t, c, nh);   // the backward reads probabilities
            }
            case "layernorm-forward" -> {
                x = random((long) n * c, 1);
                weight = random(c, 2);
                bias = random(c, 3);
                y = random((long) n * c, 4);
                mean = random(n, 5);
                rstd = random(n, 6);
            }
            default -> throw new IllegalArgumentException("kernel " + kernel + ": linear-forward, linear-backward, "
                    + "attention-forward, attention-backward or layernorm-forward");
        }
    }

    private MemorySegment random(long count, long seed) {
        return GemmBenchmark.random(arena, count, seed);
    }

    /** Cold: the eviction buffer written over the pool (another value each time) before the call. */
    @Setup(Level.Invocation)
    public void evict() {
        if (cache.equals("cold")) {
            evictValue += 1f;
            kernels.fill(evict, evictValue, EVICT_BYTES / 4);
        }
    }

    @Benchmark
    public MemorySegment run() {
        switch (kernel) {
            case "linear-forward" -> kernels.linearForward(y, x, DType.F32, weight, bias, n, c, oc);
            case "linear-backward" -> kernels.linearBackward(dx, 0f, dweight, dbias, dy, x, DType.F32, weight, n, c, oc);
            case "attention-forward" -> kernels.attentionForward(y, DType.F32, att, qkv, b, t, c, nh);
            case "attention-backward" -> kernels.attentionBackward(dqkv, 0f, datt, dy, qkv, att, b, t, c, nh);
            default -> kernels.layerNormForward(y, DType.F32, mean, rstd, x, weight, bias, n, c);
        }
        return y;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        kernels.close();
        arena.close();
    }
}
