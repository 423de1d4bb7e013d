package dev.distillery.kernels.cpu.distill;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.conformance.Buffers;
import dev.distillery.kernels.conformance.KernelConformance;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.cpu.WorkerPool;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.kernels.reference.ReferenceDistillLoss;

/**
 * The fused distillation loss against the float64 reference ({@link ReferenceDistillLoss}) on
 * fresh random inputs, for every divergence × teacher kind × logit type × option combination,
 * with poisoned outputs; plus the loss's properties (top-k with k = V equals dense, the
 * sampled estimator converges to the dense gradient, stability, clear errors).
 */
class FusedDistillLossTest {

    private static CpuKernels kernels;
    private final SplittableRandom rng = new SplittableRandom();

    @BeforeAll
    static void start() {
        kernels = new CpuKernels(2, "auto");
    }

    @AfterAll
    static void stop() {
        kernels.close();
    }

    /** One problem: student logits, a dense teacher in float64, labels. */
    private record Problem(int n, int v, int vt, double[] student, double[] teacher, int[] labels) {
    }

    private Problem problem(int n, int v, int vt, double scale, boolean ignoreOne) {
        double[] s = new double[n * v], t = new double[n * vt];
        for (int i = 0; i < s.length; i++) s[i] = (float) (scale * rng.nextGaussian());
        for (int i = 0; i < t.length; i++) t[i] = (float) (scale * 1.5 * rng.nextGaussian());
        int[] labels = new int[n];
        for (int r = 0; r < n; r++) labels[r] = rng.nextInt(v);
        if (ignoreOne && n > 2) labels[1] = -100;
        return new Problem(n, v, vt, s, t, labels);
    }

    /** The teacher's top-k per row, in shuffled order, as both kernel and reference targets. */
    private record TopKPair(TeacherTargets.TopK kernel, ReferenceDistillLoss.TopK reference) {
    }

    private TopKPair topK(Arena arena, Problem p, double[] teacher, int k, DType type, float shardT) {
        int[] ids = new int[p.n() * k];
        double[] logits = new double[p.n() * k], lse = new double[p.n()];
        for (int r = 0; r < p.n(); r++) {
            int row = r;
            Integer[] order = IntStream.range(0, p.vt()).boxed()
                    .sorted(Comparator.comparingDouble(j -> -teacher[row * p.vt() + j])).toArray(Integer[]::new);
            List<Integer> top = new ArrayList<>(Arrays.asList(order).subList(0, k));
            java.util.Collections.shuffle(top, new java.util.Random(rng.nextLong()));
            for (int i = 0; i < k; i++) ids[r * k + i] = top.get(i);
            double mx = Double.NEGATIVE_INFINITY, sum = 0;
            for (int j = 0; j < p.vt(); j++) mx = Math.max(mx, teacher[r * p.vt() + j] / shardT);
            for (int j = 0; j < p.vt(); j++) sum += Math.exp(teacher[r * p.vt() + j] / shardT - mx);
            lse[r] = (float) (mx + Math.log(sum));
        }
        MemorySegment lg = arena.allocate((long) type.bytes() * logits.length, 64);
        for (int i = 0; i < ids.length; i++) {
            type.write(lg, i, (float) teacher[(i / k) * p.vt() + ids[i]]);
            logits[i] = type.read(lg, i);
        }
        return new TopKPair(new TeacherTargets.TopK(Buffers.ints(arena, ids), lg, type, Buffers.floats(arena, lse), k, p.vt(), shardT),
                new ReferenceDistillLoss.TopK(ids, logits, lse, k, p.vt(), shardT));
    }

    /** Kernels.distillLoss's signature: the kernels' entry or FusedDistillLoss.run. */
    @FunctionalInterface
    private interface LossCall {
        DistillSums run(MemorySegment s, MemorySegment g, TeacherTargets teacher, MemorySegment labels, MemorySegment ce,
                        MemorySegment div, int n, int v, DistillOptions o, float gradScale);
    }

    /** Runs kernel and reference and returns the worst relative error over CE, divergence and gradient. */
    private double compare(Arena arena, Problem p, TeacherTargets kt, ReferenceDistillLoss.Teacher rt,
                           DistillOptions o, boolean inPlace, boolean withLabels) {
        return compare(kernels::distillLoss, arena, p, kt, rt, o, inPlace, withLabels);
    }

    private double compare(LossCall loss, Arena arena, Problem p, TeacherTargets kt, ReferenceDistillLoss.Teacher rt,
                           DistillOptions o, boolean inPlace, boolean withLabels) {
        float gradScale = 1f / p.n();
        ReferenceDistillLoss.Result ref = ReferenceDistillLoss.compute(p.student(), rt, withLabels ? p.labels() : null,
                p.n(), p.v(), o, gradScale);
        MemorySegment s = Buffers.floats(arena, p.student());
        MemorySegment g = inPlace ? s : Buffers.poisoned(arena, (long) p.n() * p.v());
        MemorySegment ce = Buffers.poisoned(arena, p.n()), div = Buffers.poisoned(arena, p.n());
        DistillSums sums = loss.run(s, g, kt, withLabels ? Buffers.ints(arena, p.labels()) : null, ce, div,
                p.n(), p.v(), o, gradScale);
        assertEquals(ref.rows(), sums.rows());
        double err = Math.max(Buffers.relativeError(ref.grad(), g, 1e-3),
                Math.max(Buffers.relativeError(ref.ce(), ce, 1e-3), Buffers.relativeError(ref.divergence(), div, 1e-3)));
        return Math.max(err, Math.abs(sums.total() - ref.total()) / Math.max(1e-3, Math.abs(ref.total())));
    }

    private static final Divergence[] DIVERGENCES = {Divergence.forwardKl(), Divergence.reverseKl(), Divergence.jsd(0.3)};

    @Test
    void everyCombinationMatchesFloat64ReferenceOnAwkwardVocabularies() {
        List<String> failures = new ArrayList<>();
        int checks = 0;
        for (int v : new int[]{1, 7, 1009}) {
            for (int pad : new int[]{0, 3}) {
                try (Arena arena = Arena.ofShared()) {
                    Problem p = problem(5, v + pad, v, 2.0, true);
                    for (Divergence d : DIVERGENCES) {
                        for (float t : new float[]{1f, 2f, 2.5f, 3f}) {   // each path of the hard-label softmax
                            for (float alpha : new float[]{0f, 0.3f}) {
                                for (boolean t2 : new boolean[]{true, false}) {
                                    DistillOptions o = DistillOptions.of(t, alpha).withDivergence(d).withTemperatureSquared(t2);
                                    String what = "V=" + v + "+" + pad + " " + d + " T=" + t + " alpha=" + alpha + " T2=" + t2;
                                    for (DType type : DType.logitTypes()) {
                                        double[] rounded = new double[p.teacher().length];
                                        MemorySegment tl = KernelConformance.typed(arena, p.teacher(), type, rounded);
                                        double e = compare(arena, p, new TeacherTargets.Dense(tl, type, v),
                                                new ReferenceDistillLoss.Dense(rounded, v), o, type == DType.BF16, alpha > 0);
                                        checks++;
                                        if (!(e < 2e-4)) failures.add(what + " dense " + type + ": " + e);
                                    }
                                    for (DistillOptions.TopKMode mode : DistillOptions.TopKMode.values()) {
                                        int k = Math.min(4, v);
                                        TopKPair tk = topK(arena, p, p.teacher(), k, DType.F16, t);
                                        double e = compare(arena, p, tk.kernel(), tk.reference(), o.withTopKMode(mode), true, alpha > 0);
                                        checks++;
                                        if (!(e < 2e-4)) failures.add(what + " top-" + k + " " + mode + ": " + e);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assertTrue(failures.isEmpty(), failures.size() + " of " + checks + " failed:\n" + String.join("\n", failures));
    }

    /**
     * Mixtures of one to three dense teachers (fp32, bf16, fp16 in turn) with every divergence,
     * temperatures on each path of the hard-label softmax, padding columns, vocabularies of one
     * column and of several blocks, in place and not, rows in Java and in C.
     */
    @Test
    void mixturesOfDenseTeachersMatchFloat64Reference() {
        List<String> failures = new ArrayList<>();
        int checks = 0;
        DType[] types = {DType.F32, DType.BF16, DType.F16};
        for (int v : new int[]{1, 7, 1009, 4099}) {
            for (int pad : new int[]{0, 3}) {
                try (Arena arena = Arena.ofShared()) {
                    Problem p = problem(4, v + pad, v, 2.0, true);
                    for (int count = 1; count <= 3; count++) {
                        List<TeacherTargets.Dense> teachers = new ArrayList<>();
                        List<ReferenceDistillLoss.Dense> references = new ArrayList<>();
                        float[] w = new float[count];
                        double[] wd = new double[count];
                        for (int i = 0; i < count; i++) {
                            double[] t = problem(4, v + pad, v, 2.0 + i, false).teacher(), rounded = new double[t.length];
                            teachers.add(new TeacherTargets.Dense(KernelConformance.typed(arena, t, types[i], rounded), types[i], v));
                            references.add(new ReferenceDistillLoss.Dense(rounded, v));
                            w[i] = 1f / count;
                            wd[i] = w[i];
                        }
                        var mixture = new TeacherTargets.Mixture(teachers, w);
                        var reference = new ReferenceDistillLoss.Mixture(references, wd);
                        for (Divergence d : DIVERGENCES) {
                            for (float t : new float[]{1f, 2f, 2.5f}) {
                                for (float alpha : new float[]{0f, 0.3f}) {
                                    for (boolean nativeRows : new boolean[]{true, false}) {
                                        NativeRowPasses.enable(nativeRows);
                                        try {
                                            DistillOptions o = DistillOptions.of(t, alpha).withDivergence(d);
                                            double e = compare(arena, p, mixture, reference, o, alpha == 0f, alpha > 0);
                                            checks++;
                                            if (!(e < 2e-4)) {
                                                failures.add("V=" + v + "+" + pad + " x" + count + " " + d + " T=" + t + " alpha=" + alpha
                                                        + (nativeRows ? " C" : " Java") + ": " + e);
                                            }
                                        } finally {
                                            NativeRowPasses.enable(true);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assertTrue(failures.isEmpty(), failures.size() + " of " + checks + " failed:\n" + String.join("\n", failures));
    }

    /** A NaN in one teacher of a mixture is an error naming the row and the column, as for one teacher. */
    @Test
    void aNaNInOneTeacherOfAMixtureIsReported() {
        try (Arena arena = Arena.ofShared()) {
            int n = 3, v = 67;
            Problem p = problem(n, v, v, 2.0, false);
            MemorySegment a = Buffers.floats(arena, p.teacher()), b = Buffers.floats(arena, problem(n, v, v, 2.0, false).teacher());
            b.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * v + 40, Float.NaN);
            var mixture = new TeacherTargets.Mixture(List.of(new TeacherTargets.Dense(a, DType.F32, v), new TeacherTargets.Dense(b, DType.F32, v)),
                    new float[]{0.5f, 0.5f});
            MemorySegment s = Buffers.floats(arena, p.student());
            var e = assertThrows(IllegalArgumentException.class, () -> kernels.distillLoss(s, s, mixture, Buffers.ints(arena, p.labels()),
                    null, null, n, v, DistillOptions.of(2f, 0.5f), 1f / n));
            assertTrue(e.getMessage().contains("row 2: the teacher's logit at column 40 is NaN"), e.getMessage());
        }
    }

    @Test
    void largeVocabulariesMatchFloat64Reference() {
        for (int v : new int[]{50257, 128256}) {
            try (Arena arena = Arena.ofShared()) {
                Problem p = problem(2, v, v, 3.0, false);
                double[] rounded = new double[p.teacher().length];
                MemorySegment bf16 = KernelConformance.typed(arena, p.teacher(), DType.BF16, rounded);
                DistillOptions o = DistillOptions.of(2f, 0.5f);
                double e = compare(arena, p, new TeacherTargets.Dense(bf16, DType.BF16, v),
                        new ReferenceDistillLoss.Dense(rounded, v), o, true, true);
                assertTrue(e < 2e-4, "dense bf16 V=" + v + ": " + e);
                e = compare(arena, p, new TeacherTargets.Dense(bf16, DType.BF16, v),
                        new ReferenceDistillLoss.Dense(rounded, v), o.withDivergence(Divergence.jsd(0.5)), false, true);
                assertTrue(e < 2e-4, "JSD V=" + v + ": " + e);
                TopKPair tk = topK(arena, p, p.teacher(), 64, DType.F32, 2f);
                e = compare(arena, p, tk.kernel(), tk.reference(), o, true, true);
                assertTrue(e < 2e-4, "top-64 V=" + v + ": " + e);
            }
        }
    }

    /**
     * A student vocabulary over several column blocks whose teacher ends inside the second and
     * whose third block is all padding; and the loss-only call (no gradient buffer, as evaluation
     * makes it) gives the same per-row terms, bit for bit, as the call that writes the gradient.
     */
    @Test
    void multiBlockPaddingAndLossOnlyCalls() {
        int v = 2 * FusedDistillLoss.BLOCK + 904, vt = FusedDistillLoss.BLOCK + 52;
        try (Arena arena = Arena.ofShared()) {
            Problem p = problem(5, v, vt, 3.0, true);
            double[] rounded = new double[p.teacher().length];
            MemorySegment bf16 = KernelConformance.typed(arena, p.teacher(), DType.BF16, rounded);
            TeacherTargets.Dense kt = new TeacherTargets.Dense(bf16, DType.BF16, vt);
            for (Divergence d : DIVERGENCES) {
                for (float t : new float[]{2f, 2.5f, 3f}) {
                    DistillOptions o = DistillOptions.of(t, 0.3f).withDivergence(d);
                    for (boolean inPlace : new boolean[]{true, false}) {
                        double e = compare(arena, p, kt, new ReferenceDistillLoss.Dense(rounded, vt), o, inPlace, true);
                        assertTrue(e < 2e-4, d + " T=" + t + " in place " + inPlace + ": " + e);
                    }
                    MemorySegment labels = Buffers.ints(arena, p.labels());
                    MemorySegment ce1 = Buffers.poisoned(arena, p.n()), div1 = Buffers.poisoned(arena, p.n());
                    MemorySegment ce2 = Buffers.poisoned(arena, p.n()), div2 = Buffers.poisoned(arena, p.n());
                    DistillSums withGrad = kernels.distillLoss(Buffers.floats(arena, p.student()), Buffers.poisoned(arena, (long) p.n() * v),
                            kt, labels, ce1, div1, p.n(), v, o, 1f);
                    DistillSums lossOnly = kernels.distillLoss(Buffers.floats(arena, p.student()), null, kt, labels, ce2, div2, p.n(), v, o, 1f);
                    assertEquals(withGrad, lossOnly, d + " T=" + t);
                    for (int r = 0; r < p.n(); r++) {
                        assertEquals(ce1.getAtIndex(ValueLayout.JAVA_FLOAT, r), ce2.getAtIndex(ValueLayout.JAVA_FLOAT, r));
                        assertEquals(div1.getAtIndex(ValueLayout.JAVA_FLOAT, r), div2.getAtIndex(ValueLayout.JAVA_FLOAT, r));
                    }
                }
            }
        }
    }

    @Test
    void sampledTargetsMatchFloat64Reference() {
        try (Arena arena = Arena.ofShared()) {
            Problem p = problem(4, 1013, 1009, 2.0, true);
            int samples = 24;
            int[] ids = new int[p.n() * samples];
            double[] w = new double[ids.length];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = rng.nextInt(1009);
                w[i] = (float) (rng.nextDouble() / samples * 2);
            }
            ids[1] = ids[0]; // a repeated id
            DistillOptions o = DistillOptions.of(1.5f, 0.2f);
            double e = compare(arena, p, new TeacherTargets.Sampled(Buffers.ints(arena, ids), Buffers.floats(arena, w), samples, 1009, 1.5f),
                    new ReferenceDistillLoss.Sampled(ids, w, samples, 1009), o, true, true);
            assertTrue(e < 2e-4, "sampled: " + e);
        }
    }

    @Test
    void topKWithKEqualToVocabularyEqualsDense() {
        try (Arena arena = Arena.ofShared()) {
            int v = 211;
            Problem p = problem(3, v, v, 2.0, false);
            for (Divergence d : DIVERGENCES) {
                DistillOptions o = DistillOptions.of(2f, 0.25f).withDivergence(d);
                MemorySegment dense = Buffers.floats(arena, p.teacher());
                MemorySegment g1 = Buffers.poisoned(arena, (long) p.n() * v), g2 = Buffers.poisoned(arena, (long) p.n() * v);
                MemorySegment labels = Buffers.ints(arena, p.labels());
                DistillSums a = kernels.distillLoss(Buffers.floats(arena, p.student()), g1, new TeacherTargets.Dense(dense, DType.F32, v),
                        labels, null, null, p.n(), v, o, 1f);
                TopKPair tk = topK(arena, p, p.teacher(), v, DType.F32, 2f);
                DistillSums b = kernels.distillLoss(Buffers.floats(arena, p.student()), g2, tk.kernel(), labels, null, null, p.n(), v, o, 1f);
                assertEquals(a.total(), b.total(), 1e-4 * Math.max(1, Math.abs(a.total())), d.toString());
                double[] ga = new double[p.n() * v];
                for (int i = 0; i < ga.length; i++) ga[i] = g1.getAtIndex(ValueLayout.JAVA_FLOAT, i);
                assertTrue(Buffers.relativeError(ga, g2, 1e-3) < 1e-4, d + ": gradients differ by " + Buffers.relativeError(ga, g2, 1e-3));
            }
        }
    }

    @Test
    void sampledGradientConvergesToDenseGradientWithinFiveSigma() {
        // Every row holds the same student and teacher; each draws its own S samples from p (weights 1/S).
        int v = 37, rows = 4000, samples = 16;
        float t = 1.5f;
        SplittableRandom seeded = new SplittableRandom(20251122);
        double[] s1 = new double[v], t1 = new double[v];
        for (int j = 0; j < v; j++) {
            s1[j] = (float) seeded.nextGaussian();
            t1[j] = (float) (2 * seeded.nextGaussian());
        }
        double[] p = ReferenceDistillLoss.softmax(t1, t);
        double[] cdf = new double[v];
        for (int j = 0; j < v; j++) cdf[j] = (j == 0 ? 0 : cdf[j - 1]) + p[j];
        try (Arena arena = Arena.ofShared()) {
            double[] student = new double[rows * v], teacher = new double[rows * v];
            int[] ids = new int[rows * samples];
            double[] w = new double[rows * samples];
            for (int r = 0; r < rows; r++) {
                System.arraycopy(s1, 0, student, r * v, v);
                System.arraycopy(t1, 0, teacher, r * v, v);
                for (int i = 0; i < samples; i++) {
                    double u = seeded.nextDouble() * cdf[v - 1];
                    int j = 0;
                    while (j < v - 1 && cdf[j] < u) j++;
                    ids[r * samples + i] = j;
                    w[r * samples + i] = 1.0 / samples;
                }
            }
            DistillOptions o = DistillOptions.of(t, 0f);
            MemorySegment gs = Buffers.poisoned(arena, (long) rows * v), gd = Buffers.poisoned(arena, (long) rows * v);
            kernels.distillLoss(Buffers.floats(arena, student), gs, new TeacherTargets.Sampled(Buffers.ints(arena, ids), Buffers.floats(arena, w), samples, v, t),
                    null, null, null, rows, v, o, 1f);
            kernels.distillLoss(Buffers.floats(arena, student), gd, new TeacherTargets.Dense(Buffers.floats(arena, teacher), DType.F32, v),
                    null, null, null, rows, v, o, 1f);
            float cq = o.gradientTemperatureFactor();
            for (int j = 0; j < v; j++) {
                double mean = 0;
                for (int r = 0; r < rows; r++) mean += gs.getAtIndex(ValueLayout.JAVA_FLOAT, (long) r * v + j);
                mean /= rows;
                double dense = gd.getAtIndex(ValueLayout.JAVA_FLOAT, j);
                // gradient = cq (q − p̂); p̂_j is a mean of S·rows Bernoulli(p_j) draws
                double sigma = cq * Math.sqrt(p[j] * (1 - p[j]) / ((double) samples * rows));
                assertTrue(Math.abs(mean - dense) <= 5 * sigma + 1e-6,
                        "column " + j + ": sampled mean " + mean + ", dense " + dense + ", 5σ = " + 5 * sigma);
            }
        }
    }

    @Test
    void stableForHugeLogitsInfiniteTeacherEntriesAndEqualRows() {
        try (Arena arena = Arena.ofShared()) {
            int v = 301, n = 4;
            double[] s = new double[n * v], t = new double[n * v];
            for (int j = 0; j < v; j++) {
                // 200 columns at the max, the rest 85 T below it: q and p there are subnormal
                // (e^-85 / 200 < 2^-126), which a log of their mixture must not take for 0
                s[3 * v + j] = j < 200 ? 0 : -170;
                t[3 * v + j] = j < 200 ? 0 : -170;
                s[j] = j % 2 == 0 ? 1e4 : -1e4;
                t[j] = j % 3 == 0 ? -1e4 : 1e4;
                s[v + j] = 3;                                               // all equal
                t[v + j] = 3;
                s[2 * v + j] = rng.nextGaussian();
                t[2 * v + j] = j % 5 == 0 ? Double.NEGATIVE_INFINITY : rng.nextGaussian(); // −inf teacher entries
            }
            Problem p = new Problem(n, v, v, s, t, new int[]{0, 1, 2, 250});
            for (Divergence d : DIVERGENCES) {
                DistillOptions o = DistillOptions.of(2f, 0.5f).withDivergence(d);
                double e = compare(arena, p, new TeacherTargets.Dense(Buffers.floats(arena, t), DType.F32, v),
                        new ReferenceDistillLoss.Dense(t, v), o, true, true);
                assertTrue(e < 2e-4, d + ": " + e);
            }
        }
    }

    /**
     * Dense rows' maxima are lazy (DenseRow): the exact maxima of the block pass
     * A visits first (the last), raised when a block's exps land far above them. Rows built so
     * that they are: through the student (row 0, first block), the teacher (row 1, middle block)
     * or both in turn (row 2), and through Σ exp(s − m) alone (row 4 at T = 3 and 2.5, where the
     * CE's normalizer has its own exp, 60 logits up: 2^29 per exp at T = 3, far under the sums'
     * limit, e^60 in the CE's); a row whose last block has no finite maximum (row 3: student and
     * teacher −inf there) and a teacher vocabulary that ends before the last block (all padding:
     * the teacher's maxima come from its whole row). Against the
     * float64 reference for every divergence, in place and not, at five temperatures; the raises
     * are counted, so the test fails if these rows stop exercising them.
     */
    @Test
    void lazyMaximaRaisedByAFarBlockMatchFloat64Reference() {
        int block = FusedDistillLoss.BLOCK, v = 2 * block + 37, n = 5;
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            FusedDistillLoss fused = new FusedDistillLoss(pool);
            for (int vt : new int[]{v, block + 5}) {
                Problem p = problem(n, v, vt, 2.0, false);
                double[] s = p.student(), t = p.teacher();
                lift(s, 0, v, 0, block, 300);
                lift(t, 1, vt, block, 2 * block, 300);
                lift(s, 2, v, block, 2 * block, 200);
                lift(s, 2, v, 0, block, 100);
                lift(t, 2, vt, 0, block, 5000);
                lift(s, 3, v, 2 * block, v, Double.NEGATIVE_INFINITY);
                lift(t, 3, vt, 2 * block, vt, Double.NEGATIVE_INFINITY);
                lift(s, 4, v, 0, block, 60);
                p.labels()[3] = 5;
                TeacherTargets.Dense kt = new TeacherTargets.Dense(Buffers.floats(arena, t), DType.F32, vt);
                for (float temperature : new float[]{0.5f, 1f, 2f, 2.5f, 3f}) {
                    for (Divergence d : DIVERGENCES) {
                        for (boolean inPlace : new boolean[]{true, false}) {
                            long before = fused.raises();
                            DistillOptions o = DistillOptions.of(temperature, 0.5f).withDivergence(d);
                            double e = compare(fused::run, arena, p, kt, new ReferenceDistillLoss.Dense(t, vt), o, inPlace, true);
                            String what = "vt " + vt + ", T " + temperature + ", " + d + (inPlace ? ", in place" : "");
                            assertTrue(e < 2e-4, what + ": " + e);
                            // rows 0 and 2 (student), and with the full teacher vocabulary rows 1 and 2
                            // (teacher; else the teacher's maxima come from its whole row, exactly)
                            int expected = vt == v ? 4 : 2;
                            assertTrue(fused.raises() - before >= expected, what + ": " + (fused.raises() - before) + " raises");
                        }
                    }
                }
            }
        }
    }

    /**
     * Sparse rows' student pass shares the dense rows' lazy maximum (StudentPass.run): the first
     * block's, raised when a later block's exps land far above it. Rows built so that it is: the
     * student 300 logits up in the second block (row 0), 200 up there and 400 up in the third
     * (row 1, raised twice), −inf over the whole first block (row 2: the maximum comes from the
     * whole row), and a plain row; the teacher 10 logits up in the second block, so its top-k sits
     * where the student is finite. Top-k in both modes and sampled targets, against the float64
     * reference for every divergence, in place and not, at five temperatures; the raises are
     * counted, so the test fails if these rows stop exercising them.
     */
    @Test
    void sparseRowsLazyMaximumRaisedByAFarBlockMatchesFloat64Reference() {
        int block = FusedDistillLoss.BLOCK, v = 2 * block + 37, n = 4, samples = 48;
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            FusedDistillLoss fused = new FusedDistillLoss(pool);
            Problem p = problem(n, v, v, 2.0, false);
            double[] s = p.student(), t = p.teacher();
            for (int r = 0; r < n; r++) lift(t, r, v, block, 2 * block, 10);
            lift(s, 0, v, block, 2 * block, 300);
            lift(s, 1, v, block, 2 * block, 200);
            lift(s, 1, v, 2 * block, v, 400);
            lift(s, 2, v, 0, block, Double.NEGATIVE_INFINITY);
            for (int r = 0; r < n; r++) p.labels()[r] = block + 3 * r;
            int[] ids = new int[n * samples];
            double[] w = new double[n * samples];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = block + rng.nextInt(block);
                w[i] = 0.5 + rng.nextDouble();
            }
            for (float temperature : new float[]{0.5f, 1f, 2f, 2.5f, 3f}) {
                TopKPair tk = topK(arena, p, t, 16, DType.F32, temperature);
                var sampled = new TeacherTargets.Sampled(Buffers.ints(arena, ids), Buffers.floats(arena, w), samples, v, temperature);
                for (Divergence d : DIVERGENCES) {
                    for (boolean inPlace : new boolean[]{true, false}) {
                        DistillOptions o = DistillOptions.of(temperature, 0.5f).withDivergence(d);
                        String what = "T " + temperature + ", " + d + (inPlace ? ", in place" : "");
                        for (DistillOptions.TopKMode mode : DistillOptions.TopKMode.values()) {
                            long before = fused.raises();
                            double e = compare(fused::run, arena, p, tk.kernel(), tk.reference(), o.withTopKMode(mode), inPlace, true);
                            assertTrue(e < 2e-4, what + ", top-16 " + mode + ": " + e);
                            assertTrue(fused.raises() - before >= 3, what + ", top-16 " + mode + ": " + (fused.raises() - before) + " raises");
                        }
                        if (!(d instanceof Divergence.ForwardKl)) continue;   // sampled targets estimate forward KL only
                        long before = fused.raises();
                        double e = compare(fused::run, arena, p, sampled, new ReferenceDistillLoss.Sampled(ids, w, samples, v), o, inPlace, true);
                        assertTrue(e < 2e-4, what + ", sampled: " + e);
                        assertTrue(fused.raises() - before >= 3, what + ", sampled: " + (fused.raises() - before) + " raises");
                    }
                }
            }
        }
    }

    /**
     * a[row · width + j] += by for j in [from, min(to, width)), rounded to fp32 as the kernel reads
     * them; by = −inf sets them to −inf.
     */
    private static void lift(double[] a, int row, int width, int from, int to, double by) {
        for (int j = from; j < Math.min(to, width); j++) a[row * width + j] = (float) (a[row * width + j] + by);
    }

    /**
     * A NaN in the input is reported, not hidden: a teacher NaN is an error naming its row and
     * column, a student NaN (a diverged model) makes the loss NaN for the trainer's guard. The NaNs
     * carry payload bits, as NaNs read from data can (arithmetic makes only the default NaN), in
     * a vector lane and in the scalar tail (V = 67 = 4 · 16 + 3).
     */
    @Test
    void nanLogitsAreReportedNotHidden() {
        float payloadNaN = Float.intBitsToFloat(0x7FC00123);
        try (Arena arena = Arena.ofShared()) {
            int n = 3, v = 67;
            for (int column : new int[]{40, 66}) {
                Problem p = problem(n, v, v, 2.0, false);
                MemorySegment t = Buffers.floats(arena, p.teacher());
                t.setAtIndex(ValueLayout.JAVA_FLOAT, v + column, payloadNaN);
                for (Divergence d : DIVERGENCES) {
                    MemorySegment s = Buffers.floats(arena, p.student());
                    var e = assertThrows(IllegalArgumentException.class, () -> kernels.distillLoss(s, s,
                            new TeacherTargets.Dense(t, DType.F32, v), Buffers.ints(arena, p.labels()), null, null, n, v,
                            DistillOptions.of(2f, 0.5f).withDivergence(d), 1f / n));
                    assertTrue(e.getMessage().contains("row 1: the teacher's logit at column " + column + " is NaN"), d + ": " + e.getMessage());
                }
                MemorySegment clean = Buffers.floats(arena, p.teacher());
                TopKPair top = topK(arena, p, p.teacher(), 8, DType.F32, 2f);
                for (Divergence d : DIVERGENCES) {
                    for (TeacherTargets teacher : new TeacherTargets[]{new TeacherTargets.Dense(clean, DType.F32, v), top.kernel()}) {
                        MemorySegment s = Buffers.floats(arena, p.student());
                        s.setAtIndex(ValueLayout.JAVA_FLOAT, 2L * v + column, payloadNaN);
                        DistillSums sums = kernels.distillLoss(s, s, teacher, Buffers.ints(arena, p.labels()), null, null, n, v,
                                DistillOptions.of(2f, 0.5f).withDivergence(d), 1f / n);
                        assertTrue(Double.isNaN(sums.total()), d + ", " + teacher.getClass().getSimpleName() + ": loss " + sums.total());
                    }
                }
            }
        }
    }

    @Test
    void vocabularyOf262144StaysFinite() {
        try (Arena arena = Arena.ofShared()) {
            int v = 262_144;
            Problem p = problem(1, v, v, 10.0, false);
            double[] rounded = new double[v];
            MemorySegment bf16 = KernelConformance.typed(arena, p.teacher(), DType.BF16, rounded);
            double e = compare(arena, p, new TeacherTargets.Dense(bf16, DType.BF16, v),
                    new ReferenceDistillLoss.Dense(rounded, v), DistillOptions.of(1f, 0.5f), true, true);
            assertTrue(e < 2e-4, "V=262144: " + e);
        }
    }

    /**
     * Threads claim batches of rows as they come free (FusedDistillLoss.run); per-batch sums
     * added in batch order give the same bits for 1, 2 and 3 threads, every row is done (poisoned
     * gradients and row terms would show a skipped one), and a row count that leaves a short last
     * batch (197 rows, batches of 3) works like one that fits.
     */
    @Test
    void everyThreadCountGivesTheSameBits() {
        int v = 1009;
        for (int n : new int[]{1, 5, 197}) {
            try (Arena arena = Arena.ofShared()) {
                Problem p = problem(n, v, v, 2.0, true);
                double[] rounded = new double[p.teacher().length];
                TeacherTargets dense = new TeacherTargets.Dense(KernelConformance.typed(arena, p.teacher(), DType.BF16, rounded), DType.BF16, v);
                TopKPair tk = topK(arena, p, p.teacher(), 8, DType.F32, 2f);
                for (TeacherTargets teacher : new TeacherTargets[]{dense, tk.kernel()}) {
                    float[][] first = null;
                    DistillSums firstSums = null;
                    for (int threads : new int[]{1, 2, 3}) {
                        try (CpuKernels k = new CpuKernels(threads, "auto")) {
                            MemorySegment s = Buffers.floats(arena, p.student()), g = Buffers.poisoned(arena, (long) n * v);
                            MemorySegment ce = Buffers.poisoned(arena, n), div = Buffers.poisoned(arena, n);
                            DistillSums sums = k.distillLoss(s, g, teacher, Buffers.ints(arena, p.labels()), ce, div, n, v,
                                    DistillOptions.of(2f, 0.5f), 1f / n);
                            float[][] out = {g.toArray(ValueLayout.JAVA_FLOAT), ce.toArray(ValueLayout.JAVA_FLOAT), div.toArray(ValueLayout.JAVA_FLOAT)};
                            for (float[] a : out) {
                                for (int i = 0; i < a.length; i++) assertTrue(Float.isFinite(a[i]), "n=" + n + " threads=" + threads + ": element " + i + " unwritten or not finite");
                            }
                            if (first == null) {
                                first = out;
                                firstSums = sums;
                            } else {
                                assertEquals(firstSums, sums, "n=" + n + " " + threads + " threads");
                                for (int i = 0; i < 3; i++) assertArrayEquals(first[i], out[i], "n=" + n + " " + threads + " threads, output " + i);
                            }
                        }
                    }
                    assertEquals(n - (n > 2 ? 1 : 0), firstSums.rows());
                }
            }
        }
    }

    @Test
    void badInputsGetClearErrors() {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment s = arena.allocate(4L * 2 * 5), t = arena.allocate(4L * 2 * 6), labels = Buffers.ints(arena, new int[]{0, 1});
            var dense6 = new TeacherTargets.Dense(t, DType.F32, 6);
            var e = assertThrows(IllegalArgumentException.class,
                    () -> kernels.distillLoss(s, s, dense6, labels, null, null, 2, 5, DistillOptions.of(1f, 0.5f), 1f));
            assertTrue(e.getMessage().contains("student vocabulary 5") && e.getMessage().contains("teacher's 6"), e.getMessage());

            e = assertThrows(IllegalArgumentException.class, () -> new TeacherTargets.TopK(s, s, DType.F32, s, 7, 5, 1f));
            assertTrue(e.getMessage().contains("k = 7"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> DistillOptions.of(-1f, 0.5f));
            assertTrue(e.getMessage().contains("temperature"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> DistillOptions.of(0f, 0.5f));
            assertTrue(e.getMessage().contains("temperature"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> DistillOptions.of(1f, 1.5f));
            assertTrue(e.getMessage().contains("alpha"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> Divergence.jsd(1.0));
            assertTrue(e.getMessage().contains("beta"), e.getMessage());

            var dense5 = new TeacherTargets.Dense(t, DType.F32, 5);
            e = assertThrows(IllegalArgumentException.class,
                    () -> kernels.distillLoss(s, s, dense5, null, null, null, 2, 5, DistillOptions.of(1f, 0.5f), 1f));
            assertTrue(e.getMessage().contains("no labels"), e.getMessage());

            MemorySegment ids = Buffers.ints(arena, new int[]{0, 3, 1, 1}), lse = Buffers.floats(arena, new double[]{1, 1});
            var dup = new TeacherTargets.TopK(ids, t, DType.F32, lse, 2, 5, 1f);
            e = assertThrows(IllegalArgumentException.class,
                    () -> kernels.distillLoss(s, s, dup, labels, null, null, 2, 5, DistillOptions.of(1f, 0.5f), 1f));
            assertTrue(e.getMessage().contains("row 1: top-k id") && e.getMessage().contains("is listed twice"), e.getMessage());

            var other = new TeacherTargets.TopK(Buffers.ints(arena, new int[]{0, 1, 2, 3}), t, DType.F32, lse, 2, 5, 2f);
            e = assertThrows(IllegalArgumentException.class,
                    () -> kernels.distillLoss(s, s, other, labels, null, null, 2, 5, DistillOptions.of(1f, 0.5f), 1f));
            assertTrue(e.getMessage().contains("RESCALE_TOPK"), e.getMessage());

            var sampled = new TeacherTargets.Sampled(Buffers.ints(arena, new int[]{0, 9}), Buffers.floats(arena, new double[]{1, 1}), 1, 5, 1f);
            e = assertThrows(IllegalArgumentException.class, () -> kernels.distillLoss(s, s, sampled, labels, null, null, 2, 5,
                    DistillOptions.of(1f, 0.5f).withDivergence(Divergence.reverseKl()), 1f));
            assertTrue(e.getMessage().contains("forward KL only"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> kernels.distillLoss(s, s, sampled, labels, null, null, 2, 5,
                    DistillOptions.of(1f, 0.5f), 1f));
            assertTrue(e.getMessage().contains("row 1: sampled id 9 (entry"), e.getMessage());
        }
    }
}
