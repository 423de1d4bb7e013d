package dev.distillery.kernels.cpu;

import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.LongVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * exp in float64 over arrays, for the few exps a row needs at full precision (a top-k row's
 * teacher probabilities, from which the tail mass 1 − Σ p is taken): {@code Math.exp} costs a call
 * of a few dozen cycles each, this a share of a vector. Made of IEEE fma/mul/add only, like
 * {@link VectorOps#exp}, so the JIT tier does not change its bits, and with a scalar twin that gives
 * the same bits.
 *
 * <p>x = n ln2 + r, n = round(x log2 e), r by two fused multiply-adds against ln2 split in a high
 * part with 32 significant bits and the rest (fdlibm's split), |r| ≤ ln2/2;
 * e^r by its Taylor polynomial to degree 13 (truncation 4·10⁻¹⁸ relative), Horner with fma; 2^n
 * built in the exponent bits. 1 ulp from {@code Math.exp} the worst over 3·10⁷ random points, ≤ 2
 * asserted (Float64ExpTest). 0 below −708.39 (where e^x is subnormal), +inf from 709.436 on (where n rounds to
 * 1024; e^x is finite up to 709.78), NaN for NaN.
 */
public final class Float64Exp {

    static final VectorSpecies<Double> SPECIES = DoubleVector.SPECIES_PREFERRED;
    private static final int LANES = SPECIES.length();

    private static final double LOG2E = 1.4426950408889634;
    private static final double LN2_HI = 0.6931471803691238;           // 32 significant bits
    private static final double LN2_LO = 1.9082149292705877e-10;       // ln 2 − LN2_HI
    private static final double ROUND = 6755399441055744.0;            // 1.5 · 2^52: adding it rounds to an integer
    /** Below LO e^x is subnormal or 0, and 0 is returned; above HI, +inf. */
    static final double LO = -708.3964185322641, HI = 709.4361393;
    private static final double C13 = 1.0 / 6227020800.0, C12 = 1.0 / 479001600.0, C11 = 1.0 / 39916800.0,
            C10 = 1.0 / 3628800.0, C9 = 1.0 / 362880.0, C8 = 1.0 / 40320.0, C7 = 1.0 / 5040.0, C6 = 1.0 / 720.0,
            C5 = 1.0 / 120.0, C4 = 1.0 / 24.0, C3 = 1.0 / 6.0, C2 = 0.5;

    private Float64Exp() {
    }

    /**
     * out[i] = e^x[i] for i &lt; n, lanes and tail with the bits of {@link #exp(double)}. The vector
     * body is written out here rather than called: a method that returns a vector and is not
     * inlined boxes it, and inlined into a caller as large as a top-k row it may not be (the row
     * ran 1.1× slower in some JVMs and not in others when it was a call).
     */
    public static void exp(double[] x, double[] out, int n) {
        DoubleVector log2e = DoubleVector.broadcast(SPECIES, LOG2E), round = DoubleVector.broadcast(SPECIES, ROUND);
        DoubleVector ln2Hi = DoubleVector.broadcast(SPECIES, -LN2_HI), ln2Lo = DoubleVector.broadcast(SPECIES, -LN2_LO);
        DoubleVector one = DoubleVector.broadcast(SPECIES, 1.0);
        long bias = Double.doubleToRawLongBits(ROUND) - 1023;
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            DoubleVector v = DoubleVector.fromArray(SPECIES, x, i);
            VectorMask<Double> under = v.lt(LO), over = v.compare(VectorOperators.GT, HI);
            DoubleVector t = v.fma(log2e, round);                      // 1.5 · 2^52 + n
            DoubleVector k = t.sub(round);
            DoubleVector r = k.fma(ln2Lo, k.fma(ln2Hi, v));
            DoubleVector p = r.fma(DoubleVector.broadcast(SPECIES, C13), DoubleVector.broadcast(SPECIES, C12));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C11));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C10));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C9));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C8));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C7));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C6));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C5));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C4));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C3));
            p = p.fma(r, DoubleVector.broadcast(SPECIES, C2));
            p = p.fma(r, one).fma(r, one);
            // t's low bits hold n: 2^n's bits are (n + 1023) << 52
            LongVector field = ((LongVector) t.reinterpretAsLongs()).sub(bias);
            DoubleVector scale = (DoubleVector) field.lanewise(VectorOperators.LSHL, 52).reinterpretAsDoubles();
            p.mul(scale).blend(0.0, under).blend(Double.POSITIVE_INFINITY, over).intoArray(out, i);
        }
        for (; i < n; i++) out[i] = exp(x[i]);
    }

    /** The scalar twin of the vector loop in {@link #exp(double[], double[], int)}: identical operations, identical bits. */
    public static double exp(double x) {
        if (x < LO) return 0.0;
        if (x > HI) return Double.POSITIVE_INFINITY;
        double t = Math.fma(x, LOG2E, ROUND);
        double k = t - ROUND;
        double r = Math.fma(k, -LN2_LO, Math.fma(k, -LN2_HI, x));
        double p = Math.fma(r, C13, C12);
        p = Math.fma(p, r, C11);
        p = Math.fma(p, r, C10);
        p = Math.fma(p, r, C9);
        p = Math.fma(p, r, C8);
        p = Math.fma(p, r, C7);
        p = Math.fma(p, r, C6);
        p = Math.fma(p, r, C5);
        p = Math.fma(p, r, C4);
        p = Math.fma(p, r, C3);
        p = Math.fma(p, r, C2);
        p = Math.fma(Math.fma(p, r, 1.0), r, 1.0);
        long field = Double.doubleToRawLongBits(t) - (Double.doubleToRawLongBits(ROUND) - 1023);
        return p * Double.longBitsToDouble(field << 52);
    }
}
