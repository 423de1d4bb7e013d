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

/**
 * One layer's causal self-attention, forward and backward, on the CPU kernels: the probabilities
 * kept between them ({@code -p mode=keep}, {@code attentionBackward}) or made again a band of rows
 * at a time ({@code -p mode=bands}, {@code attentionBackwardInBands}, as {@code recompute_attention}
 * runs). Shapes are {@code b x t x c : heads}: config B's layer (8 × 256 tokens, 384 channels, 6
 * heads) and config L's (1 × 2,048). The causal products are (4 + 5) · b · nh · t² · hs / 2
 * multiply-adds, twice that in FLOPs, with the bands' waste above the diagonal not counted.
 * {@code -p precision=bf16} runs them as a bf16 step does.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class AttentionBenchmark {

    @Param({"8x256x384:6", "1x2048x384:6"})
    public String shape;

    /** keep: probabilities kept from the forward for the backward; bands: none kept. */
    @Param({"keep", "bands"})
    public String mode;

    @Param({"2"})
    public int threads;

    /**
     * fp32, or bf16 (the products on the bf16 GEMM and the output stored as bf16, as a bf16 step
     * runs them; refused where the CPU has no bf16 arithmetic).
     */
    @Param({"fp32"})
    public String precision;

    private int b, t, c, nh;
    private DType outType;
    private Arena arena;
    private Kernels kernels;
    private MemorySegment qkv, out, dout, dqkv, att, datt;

    @Setup(Level.Trial)
    public void setUp() {
        if (!mode.equals("keep") && !mode.equals("bands")) throw new IllegalArgumentException("-p mode must be keep or bands, got " + mode);
        String[] parts = shape.split(":");
        String[] btc = parts[0].split("x");
        b = Integer.parseInt(btc[0]);
        t = Integer.parseInt(btc[1]);
        c = Integer.parseInt(btc[2]);
        nh = Integer.parseInt(parts[1]);
        arena = Arena.ofShared();
        Precision p = Precision.parse(precision, "precision");
        kernels = Backends.openExactly(Backends.Request.cpu(threads, "auto", p));
        outType = p == Precision.BF16 ? DType.BF16 : DType.F32;
        long tokens = (long) b * t;
        qkv = GemmBenchmark.random(arena, tokens * 3 * c, 1);
        dout = GemmBenchmark.random(arena, tokens * c, 2);
        out = arena.allocate(4 * tokens * c, 64);
        dqkv = arena.allocate(4 * tokens * 3 * c, 64);
        if (mode.equals("keep")) {
            att = arena.allocate(4L * b * nh * t * t, 64);
            datt = arena.allocate(4L * b * nh * t * t, 64);
        }
    }

    @Benchmark
    public MemorySegment forwardAndBackward() {
        kernels.attentionForward(out, outType, att, qkv, b, t, c, nh);
        if (att != null) {
            kernels.attentionBackward(dqkv, 0f, datt, dout, qkv, att, b, t, c, nh);
        } else {
            kernels.attentionBackwardInBands(dqkv, 0f, dout, qkv, b, t, c, nh);
        }
        return dqkv;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        kernels.close();
        arena.close();
    }
}
