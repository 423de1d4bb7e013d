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
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cpu.VectorOps;

/**
 * The CPU kernels' GEMM (ours, OpenBLAS with {@code -p gemm=blas}, or the Vector-API fallback with {@code -p gemm=vector}) on the
 * training step's shapes and on a large square, at the step's thread count: what the GEMM-bound
 * step can hope for on this machine. GFLOP/s = 2mnk / time. Shapes are {@code m x n x k:ops},
 * ops the transposes of A and B as in {@code Kernels.gemm}: the LM head's logits (h · Wᵀ, config B), the
 * MLP's first linear (config B), and 2048³. {@code -p precision=bf16} runs the bf16 GEMM of mixed
 * precision (operands packed and rounded at every call, which the time includes; {@code -p held=true}
 * packs B once, as it does for our fp32 GEMM).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class GemmBenchmark {

    @Param({"2048x32000x384:NT", "2048x1536x384:NN", "2048x2048x2048:NN"})
    public String shape;

    @Param({"2"})
    public int threads;

    @Param({"auto"})
    public String gemm;

    /** fp32, or bf16 (the mixed-precision GEMM: bf16 operands, fp32 sums; refused where the CPU has none). */
    @Param({"fp32"})
    public String precision;

    /**
     * true: B is held ({@code Kernels.holdConstant}) for the whole trial, as the LM head's weight is
     * over a step's chunks, so the bf16 GEMM and our fp32 one pack it once and the time is the rest
     * (OpenBLAS packs it at every call regardless). per-call: a hold opened and closed around each
     * call, so each call is a step's first chunk (the held pack made, then used); less the time with
     * true, the cost of that pack. false: no hold.
     */
    @Param({"false"})
    public String held;

    /** 0, or 1 as the step's forward (onto the bias) and weight-gradient GEMMs run: C read and added to. */
    @Param({"0"})
    public float beta;

    /**
     * How A is stored: f32, or bf16 (an activation kept in bf16, or the logit gradient the fused
     * loss writes as bf16 over its own rows; under bf16 precision only), with lda counting bf16
     * elements. {@code bf16-strided}: A's rows two row lengths apart, as that gradient lies.
     */
    @Param({"f32"})
    public String aType;

    private int m, n, k;
    private boolean transA, transB;
    private int lda;
    private DType aStored;
    private Arena arena;
    private Kernels kernels;
    private MemorySegment a, b, c;
    private Kernels.ConstantHold hold;

    @Setup(Level.Trial)
    public void setUp() {
        String[] parts = shape.split(":");
        String[] mnk = parts[0].split("x");
        m = Integer.parseInt(mnk[0]);
        n = Integer.parseInt(mnk[1]);
        k = Integer.parseInt(mnk[2]);
        transA = parts[1].charAt(0) == 'T';
        transB = parts[1].charAt(1) == 'T';
        arena = Arena.ofShared();
        kernels = Backends.openExactly(Backends.Request.cpu(threads, gemm, Precision.parse(precision, "precision")));
        a = random(arena, (long) m * k, 1);
        if (!aType.equals("f32")) {
            // bf16 values in the first half of each fp32-sized row (strided) or packed end to end
            int rows = transA ? k : m, cols = transA ? m : k;
            long stride = aType.equals("bf16-strided") ? 2L * cols : cols;
            MemorySegment bf = arena.allocate(2 * stride * rows, 64);
            for (long r = 0; r < rows; r++) {
                for (long j = 0; j < cols; j++) {
                    bf.setAtIndex(ValueLayout.JAVA_SHORT, r * stride + j, VectorOps.bf16Bits(a.getAtIndex(ValueLayout.JAVA_FLOAT, r * cols + j)));
                }
            }
            a = bf;
            lda = (int) stride;
            aStored = DType.BF16;
        } else {
            lda = transA ? m : k;
            aStored = DType.F32;
        }
        b = random(arena, (long) k * n, 2);
        c = random(arena, (long) m * n, 3);
        hold = switch (held) {
            case "true" -> kernels.holdConstant(b);
            case "false", "per-call" -> Kernels.ConstantHold.NONE;
            default -> throw new IllegalArgumentException("held must be true, false or per-call, got '" + held + "'");
        };
    }

    /** count floats drawn from N(0, 1) by a generator seeded with seed, 64-byte aligned in arena. */
    static MemorySegment random(Arena arena, long count, long seed) {
        MemorySegment s = arena.allocate(4 * count, 64);
        SplittableRandom rng = new SplittableRandom(seed);
        for (long i = 0; i < count; i++) s.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) rng.nextGaussian());
        return s;
    }

    @Benchmark
    public MemorySegment gemm() {
        if (held.equals("per-call")) {
            try (Kernels.ConstantHold first = kernels.holdConstant(b)) {
                return product();
            }
        }
        return product();
    }

    private MemorySegment product() {
        kernels.gemm(transA, transB, m, n, k, 1f, a, aStored, lda, b, DType.F32, transB ? k : n, beta, c, n);
        return c;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        hold.close();
        kernels.close();
        arena.close();
    }
}
