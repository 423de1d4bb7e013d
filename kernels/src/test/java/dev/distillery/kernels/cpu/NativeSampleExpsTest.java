package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import dev.distillery.bindings.DistilleryCpu;

/**
 * The exps of drawing a token in C ({@code cpu/src/main/c/sample_rows.inc}, {@link DistilleryCpu#sampleExps}):
 * p = exp((x − max) · scale) in float64 against {@code Math.exp} of the same float64 argument, on
 * fresh random rows of awkward lengths, with the doubles past a row poisoned; on each machine this
 * CPU runs (AVX2, and AVX-512 where it has it).
 */
class NativeSampleExpsTest {

    /** Float64Exp.LO: below it e^x is subnormal, and both exps give 0. */
    private static final double LO = -708.3964185322641;

    @BeforeAll
    static void needsTheLibrary() {
        assumeTrue(DistilleryCpu.available(), "native CPU library: " + DistilleryCpu.status());
    }

    /** The machine's kind, where this CPU runs it. */
    private static int on(int kind) {
        assumeTrue(kind <= DistilleryCpu.rowsKind(), "rows kind " + kind + ": not on this CPU");
        return kind;
    }

    /**
     * Within 2 ulp of Math.exp (1.03 the worst in a probe of 6·10⁷ points; Math.exp has its own
     * rounding), 0 below the normal range; the sum is the exps' sum within n roundings; nothing is
     * written past n; heap and native segments give the same bits. Scales from T = 50 to T = 0.013
     * put the arguments over the whole range down to below it.
     */
    @ParameterizedTest(name = "rows kind {0}")
    @ValueSource(ints = {DistilleryCpu.ROWS_AVX2, DistilleryCpu.ROWS_AVX512})
    void withinTwoUlpOfMathExpOnFreshRandomRows(int machine) {
        int kind = on(machine);
        SplittableRandom rng = new SplittableRandom();
        double worst = 0;
        try (Arena arena = Arena.ofConfined()) {
            for (int trial = 0; trial < 400; trial++) {
                int n = switch (trial % 4) {
                    case 0 -> 1 + rng.nextInt(40);
                    case 1 -> 1023 + rng.nextInt(3);
                    case 2 -> 4099;
                    default -> 1 + rng.nextInt(3000);
                };
                double scale = 1 / new double[]{50, 1.6, 1, 0.7, 0.013}[trial % 5];
                float max = (float) rng.nextDouble(-20, 20);
                float[] x = new float[n];
                for (int i = 0; i < n; i++) x[i] = (float) (max - rng.nextDouble() * (trial % 2 == 0 ? 40 : 20));
                x[rng.nextInt(n)] = max;
                MemorySegment row = arena.allocate(4L * n, 64), p = arena.allocate(8L * (n + 8), 64);
                MemorySegment.copy(x, 0, row, ValueLayout.JAVA_FLOAT, 0, n);
                for (int i = 0; i < n + 8; i++) p.setAtIndex(ValueLayout.JAVA_DOUBLE, i, Double.NaN);   // poison
                double sum = DistilleryCpu.sampleExps(kind, row, n, max, scale, p);
                double walked = 0, bound = 0;
                for (int i = 0; i < n; i++) {
                    double arg = ((double) x[i] - max) * scale, got = p.getAtIndex(ValueLayout.JAVA_DOUBLE, i);
                    if (arg < LO) {
                        assertEquals(0.0, got, "arg " + arg);
                    } else {
                        double exact = Math.exp(arg);
                        worst = Math.max(worst, Math.abs(got - exact) / Math.ulp(exact));
                    }
                    walked += got;
                    bound += Math.ulp(walked);
                }
                assertEquals(walked, sum, 2 * bound, "n " + n + ": the sum");
                for (int i = n; i < n + 8; i++) assertTrue(Double.isNaN(p.getAtIndex(ValueLayout.JAVA_DOUBLE, i)), "written past n at " + i);
                double[] onHeap = new double[n];
                assertEquals(sum, DistilleryCpu.sampleExps(kind, MemorySegment.ofArray(x), n, max, scale, MemorySegment.ofArray(onHeap)));
                for (int i = 0; i < n; i++) assertEquals(p.getAtIndex(ValueLayout.JAVA_DOUBLE, i), onHeap[i], "heap, element " + i);
            }
        }
        assertTrue(worst <= 2.0, "worst error " + worst + " ulp");
    }

    /** The maximum gives exactly 1; −inf, NaN, +inf − +inf and arguments below the normal range give 0. */
    @ParameterizedTest(name = "rows kind {0}")
    @ValueSource(ints = {DistilleryCpu.ROWS_AVX2, DistilleryCpu.ROWS_AVX512})
    void edgesGiveOneAndZeros(int machine) {
        int kind = on(machine);
        float inf = Float.POSITIVE_INFINITY;
        float[] x = {0f, Float.NEGATIVE_INFINITY, Float.NaN, -800f, -708.3f, -708.5f, -1f};
        double[] p = new double[x.length];
        double sum = DistilleryCpu.sampleExps(kind, MemorySegment.ofArray(x), x.length, 0f, 1.0, MemorySegment.ofArray(p));
        assertEquals(1.0, p[0]);
        assertEquals(0.0, p[1]);
        assertEquals(0.0, p[2]);
        assertEquals(0.0, p[3]);
        assertEquals(Math.exp(-708.2999877929688), p[4], Math.ulp(Math.exp(-708.2999877929688)) * 2, "just above the normal range");
        assertEquals(0.0, p[5]);
        assertEquals(Math.exp(-1), p[6], 2 * Math.ulp(Math.exp(-1)));
        assertEquals(p[0] + p[4] + p[6], sum, 2 * Math.ulp(sum));
        double[] q = new double[2];
        assertEquals(0.0, DistilleryCpu.sampleExps(kind, MemorySegment.ofArray(new float[]{inf, 3f}), 2, inf, 1.0, MemorySegment.ofArray(q)),
                "a maximum of +inf: no finite mass");
        assertEquals(0.0, q[0]);
        assertEquals(0.0, q[1]);
    }

    /**
     * One pass gives the row's largest (NaN skipped) and each block's sum of exps against it within
     * the roundings of sampleExps' (the sums before a larger block are scaled down, once a raise):
     * rows of random logits, rising logits (a raise every block), NaN, −inf, a +inf (no finite mass),
     * all −inf; nothing written past the blocks.
     */
    @ParameterizedTest(name = "rows kind {0}")
    @ValueSource(ints = {DistilleryCpu.ROWS_AVX2, DistilleryCpu.ROWS_AVX512})
    void blockSumsFindTheMaximumAndSumEachBlock(int machine) {
        int kind = on(machine);
        SplittableRandom rng = new SplittableRandom();
        float[] maxOut = new float[1];
        for (int shape = 0; shape < 5; shape++) {
            for (int n : new int[]{1, 1023, 1024, 1025, 5000, 128256}) {
                float[] x = new float[n];
                for (int i = 0; i < n; i++) {
                    x[i] = switch (shape) {
                        case 1 -> (float) (i * 0.01 + rng.nextGaussian());
                        case 4 -> Float.NEGATIVE_INFINITY;
                        default -> (float) (3 * rng.nextGaussian());
                    };
                }
                if (shape == 2) {
                    for (int q = 0; q < 1 + n / 50; q++) x[rng.nextInt(n)] = rng.nextBoolean() ? Float.NaN : Float.NEGATIVE_INFINITY;
                }
                if (shape == 3) x[rng.nextInt(n)] = Float.POSITIVE_INFINITY;
                float max = Float.NEGATIVE_INFINITY;
                for (float f : x) max = VectorOps.greater(max, f);
                int block = 1024, blocks = (n + block - 1) / block;
                double[] sums = new double[blocks + 1];
                sums[blocks] = -7;
                double scale = 1 / 0.7;
                double total = DistilleryCpu.sampleBlockSums(kind, MemorySegment.ofArray(x), n, block, scale, MemorySegment.ofArray(sums),
                        MemorySegment.ofArray(maxOut));
                String what = "shape " + shape + ", n " + n;
                assertEquals(max, maxOut[0], what + ": the maximum");
                double walked = 0;
                for (int b = 0; b < blocks; b++) {
                    int from = b * block, len = Math.min(block, n - from);
                    double one = DistilleryCpu.sampleExps(kind, MemorySegment.ofArray(x).asSlice(4L * from, 4L * len), len, max, scale, MemorySegment.NULL);
                    // an exp's argument (x − max) · scale carries a rounding in proportion to its
                    // size, and so do the scales' arguments: a sum e^−a off by a few of a · 2⁻⁵³.
                    // Near the bottom of the range the terms differ outright (0 below it against
                    // the maximum, kept against a smaller one), at 10⁻³⁰⁰ of a total of at least 1
                    double ulps = 4 * (Math.abs(Math.log(Math.max(one, Double.MIN_NORMAL))) + 20);
                    assertEquals(one, sums[b], ulps * Math.ulp(one) + 1e-300, what + ", block " + b);
                    walked += sums[b];
                }
                assertEquals(walked, total, what);
                if (shape >= 3) assertEquals(0.0, total, what + ": no finite mass");
                assertEquals(-7, sums[blocks], what + ": written past the blocks");
            }
        }
    }
}
