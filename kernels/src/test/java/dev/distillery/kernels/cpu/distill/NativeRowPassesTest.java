package dev.distillery.kernels.cpu.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import java.util.function.Supplier;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.conformance.Buffers;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.cpu.WorkerPool;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The native rows ({@link NativeRowPasses}, cpu/src/main/c/distill_rows.inc) against the Java rows they
 * replace, row for row, on each machine this CPU runs (AVX2, and AVX-512 where it has it) against Java rows of
 * the same width, on fresh random inputs of awkward widths: dense forward KL with both
 * teacher types and rows that raise the lazy maxima, top-k and sampled teachers with a later block
 * raising the student's lazy maximum; both cases they take (T = 2 with a hard label, T = 1
 * without), in place and not. FusedDistillLossTest holds both against the float64 reference.
 */
class NativeRowPassesTest {

    private final SplittableRandom rng = new SplittableRandom();

    @AfterEach
    void nativeRowsBack() {
        NativeRowPasses.enable(true);
        if (DistilleryCpu.rowsKind() != DistilleryCpu.ROWS_NONE) NativeRowPasses.useKind(DistilleryCpu.rowsKind());
    }

    /** Runs the C rows on {@code machine}, where this CPU has it. */
    private static void onMachine(int machine) {
        assumeTrue(NativeRowPasses.active(), DistilleryCpu.status());
        assumeTrue(machine <= DistilleryCpu.rowsKind(), machine(machine) + ": not on this CPU");
        NativeRowPasses.useKind(machine);
    }

    /**
     * {@link #onMachine}, where the Java rows run in as many lanes as the C rows on {@code machine}
     * (8 on AVX2, 16 on AVX-512), so that both add their sums in one order and agree to a few ulps.
     * Across widths they agree only to the float64 reference's tolerance (FusedDistillLossTest):
     * JSD's gradient at T 1, where q and p are far apart, is the difference of two nearly equal
     * terms. The build runs this class again at 256 bits, where the AVX2 rows meet their twin.
     */
    private static void onTwinMachine(int machine) {
        int lanes = machine == DistilleryCpu.ROWS_AVX2 ? 8 : 16;
        assumeTrue(lanes == VectorOps.LANES, machine(machine) + " rows add in " + lanes + " lanes, the Java rows here in "
                + VectorOps.LANES + ": compared where -Ddistillery.vectorBits=" + 32 * lanes);
        onMachine(machine);
    }

    private static String machine(int kind) {
        return kind == DistilleryCpu.ROWS_AVX2 ? "AVX2" : "AVX-512";
    }

    /** This project's machines build the library and have AVX2 with FMA at least: the rows must be on here. */
    @Test
    void loadedWhereTheBuildHasThem() {
        boolean built = DistilleryCpu.class.getClassLoader().getResource(DistilleryCpu.RESOURCE) != null;
        assumeTrue(built, "no C compiler at build time: " + DistilleryCpu.status());
        assumeTrue(!DistilleryCpu.status().contains("lacks AVX2"), DistilleryCpu.status());
        assertTrue(NativeRowPasses.active(), DistilleryCpu.status());
        assertTrue(DistilleryCpu.status().startsWith("on: "), DistilleryCpu.status());
        try (CpuKernels kernels = new CpuKernels(1, "auto")) {
            assertTrue(kernels.describe().contains("native loss rows (" + machine(DistilleryCpu.rowsKind()) + ")"), kernels.describe());
        }
        assertThrows(IllegalArgumentException.class, () -> NativeRowPasses.useKind(DistilleryCpu.ROWS_NONE));
    }

    @ParameterizedTest(name = "rows kind {0}")
    @ValueSource(ints = {DistilleryCpu.ROWS_AVX2, DistilleryCpu.ROWS_AVX512})
    void nativeRowsMatchTheJavaRows(int machine) {
        onTwinMachine(machine);
        int block = FusedDistillLoss.BLOCK;
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            FusedDistillLoss fused = new FusedDistillLoss(pool);
            for (int v : new int[]{1, 7, 8, 16, 17, 97, block - 1, block, block + 1, 2 * block + 37, 4099}) {
                for (DType type : new DType[]{DType.BF16, DType.F32}) {
                    for (Divergence divergence : new Divergence[]{Divergence.forwardKl(), Divergence.reverseKl(), Divergence.jsd(0.3)}) {
                        // T 2 with labels, T 1 without; reverse KL and JSD also T 1 with labels (Z_1 is Z_s there)
                        for (float[] tAlpha : new float[][]{{2f, 0.5f}, {1f, 0f}, {1f, 0.5f}}) {
                            if (tAlpha[0] == 1f && tAlpha[1] > 0f && divergence instanceof Divergence.ForwardKl) continue;
                            boolean labelled = tAlpha[1] > 0f;
                            for (boolean inPlace : new boolean[]{true, false}) {
                                int n = 5;
                                float[] s = new float[n * v], t = new float[n * v];
                                for (int i = 0; i < s.length; i++) {
                                    s[i] = (float) (3 * rng.nextGaussian());
                                    t[i] = (float) (4 * rng.nextGaussian());
                                }
                                if (v > block) {   // rows that raise the lazy maxima: pass A starts on the last block
                                    for (int j = 0; j < block; j++) {
                                        s[j] += 300;            // row 0: the student
                                        t[v + j] += 300;        // row 1: the teacher
                                        s[2 * v + j] += 100;    // row 2: both
                                        t[2 * v + j] += 200;
                                        t[3 * v + j] += 90;     // row 3: the teacher, by little enough that the columns
                                                                // done before stay above reverse KL's log floor at T 2
                                    }
                                }
                                String what = machine(machine) + ", V " + v + " " + type + " " + divergence + ", T " + tAlpha[0] + ", alpha " + tAlpha[1]
                                        + (inPlace ? ", in place" : "");
                                DistillOptions o = DistillOptions.of(tAlpha[0], tAlpha[1]).withDivergence(divergence);
                                MemorySegment tt = arena.allocate((long) type.bytes() * t.length, 64);
                                for (int i = 0; i < t.length; i++) type.write(tt, i, t[i]);
                                assertNativeMatchesJava(fused, what, n, () -> run(fused, arena, s,
                                        new TeacherTargets.Dense(tt, type, v), n, v, o, labelled, inPlace));
                            }
                        }
                    }
                }
            }
        }
    }

    /**
     * Columns far below their row's maximum, where exp2 underflows to 0 (the exps' lanes under
     * 2^-126, which the AVX2 rows zero without a mask): scattered student and teacher columns 250
     * below, a masked vocabulary (teacher -inf, the student 1000 below there), a student masked with
     * -inf where the teacher is masked or 250 below (its KL term 0 x inf, which the AVX2 rows' sum
     * without a mask makes NaN and runs again masked), every divergence.
     */
    @ParameterizedTest(name = "rows kind {0}")
    @ValueSource(ints = {DistilleryCpu.ROWS_AVX2, DistilleryCpu.ROWS_AVX512})
    void columnsFarBelowTheMaximumUnderflowAsInJava(int machine) {
        onTwinMachine(machine);
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            FusedDistillLoss fused = new FusedDistillLoss(pool);
            for (int v : new int[]{17, 97, FusedDistillLoss.BLOCK + 1, 4099}) {
                int n = 6;
                float[] s = new float[n * v], t = new float[n * v];
                for (int i = 0; i < s.length; i++) {
                    s[i] = (float) (3 * rng.nextGaussian());
                    t[i] = (float) (4 * rng.nextGaussian());
                }
                for (int j = 0; j < v; j++) {
                    if (j % 3 == 1) s[j] -= 250;                        // row 0: the student's far columns
                    if (j % 3 == 2) t[v + j] -= 250;                    // row 1: the teacher's
                    if (j % 5 == 3) t[2 * v + j] = Float.NEGATIVE_INFINITY;   // row 2: a masked vocabulary
                    if (j % 5 == 3) {                                   // row 3: masked, the student far below there
                        t[3 * v + j] = Float.NEGATIVE_INFINITY;
                        s[3 * v + j] -= 1000;
                    }
                    if (j % 7 == 4) {                                   // row 4: both masked
                        t[4 * v + j] = Float.NEGATIVE_INFINITY;
                        s[4 * v + j] = Float.NEGATIVE_INFINITY;
                    }
                    if (j % 4 == 1) {                                   // row 5: the student masked, the teacher far below
                        t[5 * v + j] -= 250;
                        s[5 * v + j] = Float.NEGATIVE_INFINITY;
                    }
                }
                for (DType type : new DType[]{DType.BF16, DType.F32}) {
                    for (Divergence divergence : new Divergence[]{Divergence.forwardKl(), Divergence.reverseKl(), Divergence.jsd(0.3)}) {
                        for (float[] tAlpha : new float[][]{{2f, 0.5f}, {1f, 0f}}) {
                            String what = machine(machine) + ", far columns, V " + v + " " + type + " " + divergence + ", T " + tAlpha[0];
                            DistillOptions o = DistillOptions.of(tAlpha[0], tAlpha[1]).withDivergence(divergence);
                            assertNativeMatchesJava(fused, what, n, () -> run(fused, arena, s, t, type, n, v, o, tAlpha[1] > 0f, true));
                        }
                    }
                }
            }
        }
    }

    /** Top-k and sampled rows: the student's passes run natively, the listed entries in Java. */
    @ParameterizedTest(name = "rows kind {0}")
    @ValueSource(ints = {DistilleryCpu.ROWS_AVX2, DistilleryCpu.ROWS_AVX512})
    void sparseRowsMatchTheJavaRows(int machine) {
        onTwinMachine(machine);
        int block = FusedDistillLoss.BLOCK;
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            FusedDistillLoss fused = new FusedDistillLoss(pool);
            for (int v : new int[]{1, 7, 9, 17, 97, block - 1, block + 1, 2 * block + 37, 4099}) {
                for (boolean labelled : new boolean[]{true, false}) {
                    for (boolean sampled : new boolean[]{false, true}) {
                        for (boolean inPlace : new boolean[]{true, false}) {
                            int n = 4, k = Math.min(5, v);
                            float temperature = labelled ? 2f : 1f;
                            float[] s = new float[n * v];
                            for (int i = 0; i < s.length; i++) s[i] = (float) (3 * rng.nextGaussian());
                            if (v > block) for (int j = block; j < v; j++) s[j] += 40;   // a later block raises the lazy maximum
                            int[] ids = new int[n * k];
                            float[] values = new float[n * k], lse = new float[n];
                            for (int r = 0; r < n; r++) {
                                int[] pick = rng.ints(0, v).distinct().limit(k).toArray();
                                double z = 0;
                                for (int i = 0; i < k; i++) {
                                    ids[r * k + i] = pick[i];
                                    values[r * k + i] = sampled ? 1 + rng.nextInt(3) : (float) (2 * rng.nextGaussian());
                                    z += Math.exp(values[r * k + i] / temperature);
                                }
                                lse[r] = (float) Math.log(z) + 1f;   // leaves mass for the tail bucket
                            }
                            TeacherTargets targets = sampled
                                    ? new TeacherTargets.Sampled(arena.allocateFrom(ValueLayout.JAVA_INT, ids),
                                            arena.allocateFrom(ValueLayout.JAVA_FLOAT, values), k, v, temperature)
                                    : new TeacherTargets.TopK(arena.allocateFrom(ValueLayout.JAVA_INT, ids),
                                            arena.allocateFrom(ValueLayout.JAVA_FLOAT, values), DType.F32,
                                            arena.allocateFrom(ValueLayout.JAVA_FLOAT, lse), k, v, temperature);
                            String what = machine(machine) + ", V " + v + (sampled ? " sampled" : " top-" + k) + (labelled ? ", T 2 with labels" : ", T 1 without")
                                    + (inPlace ? ", in place" : "");
                            DistillOptions o = DistillOptions.of(temperature, labelled ? 0.5f : 0f);
                            assertNativeMatchesJava(fused, what, n, () -> run(fused, arena, s, targets, n, v, o, labelled, inPlace));
                        }
                    }
                }
            }
        }
    }

    /** A NaN teacher logit is named by row and column on the native path too; a NaN student row gives a NaN loss. */
    @ParameterizedTest(name = "rows kind {0}")
    @ValueSource(ints = {DistilleryCpu.ROWS_AVX2, DistilleryCpu.ROWS_AVX512})
    void nanLogitsAreReported(int machine) {
        onMachine(machine);
        int v = 300, n = 3;
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(1)) {
            FusedDistillLoss fused = new FusedDistillLoss(pool);
            float[] s = new float[n * v], t = new float[n * v];
            for (int i = 0; i < s.length; i++) {
                s[i] = (float) rng.nextGaussian();
                t[i] = (float) rng.nextGaussian();
            }
            t[v + 17] = Float.NaN;
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> run(fused, arena, s, t, DType.BF16, n, v, DistillOptions.of(2f, 0.5f), true, true));
            assertTrue(e.getMessage().contains("row 1: the teacher's logit at column 17 is NaN"), e.getMessage());
            t[v + 17] = 0f;
            s[2 * v + 5] = Float.NaN;
            float[][] out = run(fused, arena, s, t, DType.BF16, n, v, DistillOptions.of(2f, 0.5f), true, true);
            assertTrue(Float.isNaN(out[2][2]), "KL of the NaN row: " + out[2][2]);
            assertFalse(Float.isNaN(out[2][0]), "KL of a clean row: " + out[2][0]);
        }
    }

    /** Runs call with the native rows (all n of them native) and without: gradient, CE, divergence and the raises agree. */
    private static void assertNativeMatchesJava(FusedDistillLoss fused, String what, int n, Supplier<float[][]> call) {
        long before = fused.nativeRows(), raises = fused.raises();
        float[][] nat = call.get();
        assertEquals(n, fused.nativeRows() - before, what + ": rows run natively");
        long nativeRaises = fused.raises() - raises;
        NativeRowPasses.enable(false);
        raises = fused.raises();
        float[][] java = call.get();
        NativeRowPasses.enable(true);
        assertEquals(fused.raises() - raises, nativeRaises, what + ": raises of the lazy maxima (the same plan)");
        for (int c = 0; c < 3; c++) {
            double err = relative(java[c], nat[c]);
            assertTrue(err < 2e-5, what + ": " + new String[]{"gradient", "CE", "divergence"}[c] + " off by " + err);
        }
    }

    /** {gradient, per-row CE, per-row KL} for a dense teacher t stored as type, outputs poisoned first. */
    private static float[][] run(FusedDistillLoss fused, Arena arena, float[] s, float[] t, DType type, int n, int v,
                                 DistillOptions o, boolean labelled, boolean inPlace) {
        MemorySegment tt = arena.allocate((long) type.bytes() * t.length, 64);
        for (int i = 0; i < t.length; i++) type.write(tt, i, t[i]);
        return run(fused, arena, s, new TeacherTargets.Dense(tt, type, v), n, v, o, labelled, inPlace);
    }

    /** {gradient, per-row CE, per-row divergence}, outputs poisoned first. */
    private static float[][] run(FusedDistillLoss fused, Arena arena, float[] s, TeacherTargets teacher, int n, int v,
                                 DistillOptions o, boolean labelled, boolean inPlace) {
        MemorySegment st = arena.allocateFrom(ValueLayout.JAVA_FLOAT, s);
        MemorySegment g = inPlace ? st : Buffers.poisoned(arena, (long) n * v);
        MemorySegment ce = Buffers.poisoned(arena, n), kl = Buffers.poisoned(arena, n);
        int[] labels = new int[n];
        for (int r = 0; r < n; r++) labels[r] = (r * 7919) % v;
        DistillSums sums = fused.run(st, g, teacher, labelled ? Buffers.ints(arena, labels) : null,
                ce, kl, n, v, o, 1f / n);
        assertEquals(n, sums.rows());
        return new float[][]{g.toArray(ValueLayout.JAVA_FLOAT), ce.toArray(ValueLayout.JAVA_FLOAT), kl.toArray(ValueLayout.JAVA_FLOAT)};
    }

    private static double relative(float[] expected, float[] actual) {
        double num = 0, den = 0;
        for (int i = 0; i < expected.length; i++) {
            num = Math.max(num, Math.abs((double) expected[i] - actual[i]));
            den = Math.max(den, Math.abs((double) expected[i]));
        }
        return num / Math.max(den, 1e-30);
    }
}
