package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import java.util.function.DoubleUnaryOperator;
import java.util.function.IntFunction;
import java.util.function.UnaryOperator;

import org.junit.jupiter.api.Test;

import jdk.incubator.vector.FloatVector;

class VectorOpsTest {

    /**
     * 20,000 vectors of inputs drawn by {@code input} (round number given): asserts that every lane
     * of {@code vector} has the bits of {@code scalar}, and returns the worst error of {@code scalar}
     * against the float64 {@code reference}, in ulps of the reference rounded to float.
     */
    private static double worstUlpsWithTwinBits(UnaryOperator<FloatVector> vector, DoubleUnaryOperator scalar,
                                                DoubleUnaryOperator reference, IntFunction<Float> input) {
        float[] x = new float[VectorOps.LANES];
        double worstUlps = 0;
        for (int round = 0; round < 20_000; round++) {
            for (int i = 0; i < x.length; i++) x[i] = input.apply(round);
            float[] v = vector.apply(FloatVector.fromArray(VectorOps.SPECIES, x, 0)).toArray();
            for (int i = 0; i < x.length; i++) {
                float s = (float) scalar.applyAsDouble(x[i]);
                assertEquals(Float.floatToRawIntBits(s), Float.floatToRawIntBits(v[i]), "x = " + x[i]);
                double ref = reference.applyAsDouble(x[i]);
                worstUlps = Math.max(worstUlps, Math.abs(s - ref) / Math.ulp((float) ref));
            }
        }
        return worstUlps;
    }

    @Test
    void expIsWithinTwoUlpOfFloat64AndVectorMatchesScalarBitForBit() {
        SplittableRandom rng = new SplittableRandom();
        double worstUlps = worstUlpsWithTwinBits(VectorOps::exp, x -> VectorOps.exp((float) x), Math::exp,
                round -> (float) rng.nextDouble(-87.3, 88.0));
        assertTrue(worstUlps <= 2.0, "worst error " + worstUlps + " ulp");
    }

    /**
     * exp2(d, k) against 2^(d k) with d k exact in double (the error of rounding r = d k − n
     * included: 1.05 ulp the worst seen over 4·10⁶ points per k, 0.94 for the polynomial alone),
     * for the k of T = 0.5, 1, 2, 3 and an odd one: a third of the rounds near the underflow edge,
     * where 2^n meets the least normal exponent, a third above 0 (pass A's exps against maxima
     * below the row's), up to the largest d k whose n is 127.
     */
    @Test
    void exp2IsWithinOneAndAHalfUlpOfFloat64AndVectorMatchesScalarBitForBit() {
        SplittableRandom rng = new SplittableRandom();
        for (float k : new float[]{2 * VectorOps.LOG2E, VectorOps.LOG2E, VectorOps.LOG2E / 2, VectorOps.LOG2E / 3, 0.3711f}) {
            double worstUlps = worstUlpsWithTwinBits(d -> VectorOps.exp2(d, k), d -> VectorOps.exp2((float) d, k),
                    d -> Math.pow(2, d * k), round -> (float) (switch (round % 3) {
                        case 0 -> rng.nextDouble(-126.0, -124.0);
                        case 1 -> rng.nextDouble(-126.0, 0.0);
                        default -> rng.nextDouble(0.0, 127.49);
                    } / k));
            assertTrue(worstUlps <= 1.5, "k = " + k + ": worst error " + worstUlps + " ulp");
        }
    }

    @Test
    void logIsWithinTwoUlpOfFloat64AndVectorMatchesScalarBitForBit() {
        SplittableRandom rng = new SplittableRandom();
        double worstUlps = worstUlpsWithTwinBits(VectorOps::log, x -> VectorOps.log((float) x), Math::log,
                round -> (float) Math.exp(rng.nextDouble(-87, 88)));
        assertTrue(worstUlps <= 2.0, "worst error " + worstUlps + " ulp");
        assertEquals(Float.NEGATIVE_INFINITY, VectorOps.log(0f));
        assertEquals(0f, VectorOps.log(1f));
        assertTrue(Float.isNaN(VectorOps.log(-1f)));
        assertEquals(Float.POSITIVE_INFINITY, VectorOps.log(Float.POSITIVE_INFINITY));
        float[] special = new float[VectorOps.LANES];
        special[0] = 0f;
        if (special.length > 2) {
            special[1] = -2f;
            special[2] = Float.POSITIVE_INFINITY;
        }
        float[] v = VectorOps.log(FloatVector.fromArray(VectorOps.SPECIES, special, 0)).toArray();
        assertEquals(Float.NEGATIVE_INFINITY, v[0]);
        if (v.length > 2) {
            assertTrue(Float.isNaN(v[1]));
            assertEquals(Float.POSITIVE_INFINITY, v[2]);
        }
    }

    @Test
    void expEdgeCases() {
        assertEquals(0f, VectorOps.exp(Float.NEGATIVE_INFINITY));
        assertEquals(0f, VectorOps.exp(-100f));
        assertEquals(1f, VectorOps.exp(0f));
        assertEquals(VectorOps.exp(88f), VectorOps.exp(Float.POSITIVE_INFINITY), "clamped at 88");
        assertTrue(Float.isFinite(VectorOps.exp(88f)));
        assertTrue(Float.isNaN(VectorOps.exp(Float.NaN)));
        float[] special = new float[VectorOps.LANES];
        special[0] = Float.NEGATIVE_INFINITY;
        if (special.length > 1) special[1] = Float.NaN;
        float[] v = VectorOps.exp(FloatVector.fromArray(VectorOps.SPECIES, special, 0)).toArray();
        assertEquals(0f, v[0]);
        if (v.length > 1) assertTrue(Float.isNaN(v[1]));
    }

    @Test
    void exp2EdgeCases() {
        float k = VectorOps.LOG2E / 2;   // T = 2
        assertEquals(1f, VectorOps.exp2(0f, k));
        assertEquals(1f, VectorOps.exp2(-0f, k));
        assertEquals(0.5f, VectorOps.exp2(-1f, 1f));
        assertEquals(0x1p-126f, VectorOps.exp2(-126f, 1f), "the least normal float, exactly");
        assertEquals(0f, VectorOps.exp2(Math.nextDown(-126f), 1f));
        assertEquals(0f, VectorOps.exp2(-1000f, k));
        assertEquals(0f, VectorOps.exp2(Float.NEGATIVE_INFINITY, k));
        assertTrue(Float.isNaN(VectorOps.exp2(Float.NaN, k)));
        assertEquals(0x1p127f, VectorOps.exp2(127f, 1f), "the largest power of two, exactly");
        assertEquals(Float.POSITIVE_INFINITY, VectorOps.exp2(127.5f, 1f), "n = 128 saturates");
        assertEquals(Float.POSITIVE_INFINITY, VectorOps.exp2(1e4f, k));
        assertEquals(Float.POSITIVE_INFINITY, VectorOps.exp2(1e30f, k), "never wraps into a small or negative number");
        // NaNs with payload bits (from data, not arithmetic) stay NaN, in every lane position
        float[] special = new float[VectorOps.LANES];
        for (int i = 0; i < special.length; i++) special[i] = Float.intBitsToFloat(0x7FC00000 | (i * 37 + 1));
        for (float x : VectorOps.exp2(FloatVector.fromArray(VectorOps.SPECIES, special, 0), k).toArray()) {
            assertTrue(Float.isNaN(x), "a NaN with a payload came out " + x);
        }
        assertTrue(Float.isNaN(VectorOps.exp2(Float.intBitsToFloat(0x7FC001FF), k)));
        special = new float[VectorOps.LANES];
        special[0] = Float.NEGATIVE_INFINITY;
        if (special.length > 4) {
            special[1] = Float.NaN;
            special[2] = -126f;
            special[3] = 200f;
            special[4] = 1e30f;
        }
        float[] v = VectorOps.exp2(FloatVector.fromArray(VectorOps.SPECIES, special, 0), 1f).toArray();
        assertEquals(0f, v[0]);
        assertEquals(1f, v[v.length - 1]);
        if (v.length > 4) {
            assertTrue(Float.isNaN(v[1]));
            assertEquals(0x1p-126f, v[2]);
            assertEquals(Float.POSITIVE_INFINITY, v[3]);
            assertEquals(Float.POSITIVE_INFINITY, v[4]);
        }
    }

    /**
     * The vector argmax is DType's scalar rule (the first index of the largest; NaN never wins; 0
     * when none is above −inf) on rows of lengths around the vector width, with ties, ±0, ±inf
     * and NaN, at an offset into the segment.
     */
    @Test
    void argmaxFollowsTheScalarRuleOnRowsWithTiesInfinitiesAndNaN() {
        SplittableRandom rng = new SplittableRandom(5);
        float[] specials = {Float.NaN, Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, 0f, -0f, 3f};
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            for (int trial = 0; trial < 3000; trial++) {
                int n = 1 + rng.nextInt(trial % 2 == 0 ? 3 * VectorOps.LANES + 3 : 300), offset = rng.nextInt(5);
                java.lang.foreign.MemorySegment x = arena.allocate(4L * (n + offset), 64);
                for (int i = 0; i < n; i++) {
                    float v = trial % 3 == 0 ? rng.nextInt(4) : (float) rng.nextGaussian();
                    if (rng.nextInt(8) == 0) v = specials[rng.nextInt(specials.length)];
                    if (trial % 7 == 1) v = rng.nextBoolean() ? Float.NaN : Float.NEGATIVE_INFINITY;   // nothing above −inf
                    x.setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, offset + i, v);
                }
                assertEquals(dev.distillery.kernels.DType.F32.argmax(x, offset, n), VectorOps.argmax(x, offset, n), "n " + n + ", trial " + trial);
            }
        }
    }
}
