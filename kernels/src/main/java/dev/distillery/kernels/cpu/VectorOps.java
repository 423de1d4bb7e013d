package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector-API loops the CPU kernels share: dot, axpy, max, exp-and-sum, scale. Offsets and
 * lengths are in fp32 elements. Every loop has a scalar tail, so any length works.
 *
 * <p>Hot loops call {@code FloatVector.fromMemorySegment}/{@code intoMemorySegment} directly
 * rather than through small wrappers: the JDK's methods are force-inlined, ours are not, and once
 * C2's node budget for a method is spent a wrapper that is not inlined boxes every vector.
 *
 * <p>Determinism: results must not depend on whether the JIT has compiled a loop yet. The
 * Vector API's transcendental ops ({@code EXP}, {@code TANH}) give different bits interpreted
 * (a per-lane {@code Math} call) and compiled (SVML), and a compiled {@code reduceLanes(ADD)} may
 * add lanes in a different order than the interpreter. So this class uses neither: {@link #exp}
 * is a polynomial made of IEEE add/mul/fma (exact in every tier), with a scalar twin that gives
 * the same bits, and {@link #sumLanes} adds the lanes in a fixed order.
 */
public final class VectorOps {

    /** The machine's preferred vector width, or {@code -Ddistillery.vectorBits=128|256|512}. */
    public static final VectorSpecies<Float> SPECIES = species(Integer.getInteger("distillery.vectorBits", 0));

    private static VectorSpecies<Float> species(int bits) {
        return bits == 0 ? FloatVector.SPECIES_PREFERRED : VectorSpecies.of(float.class, VectorShape.forBitSize(bits));
    }
    public static final int LANES = SPECIES.length();
    public static final ByteOrder ORDER = ByteOrder.nativeOrder();
    public static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    public static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;

    private VectorOps() {
    }

    /** Where the fetching loops leave the bytes they read, so that the JIT keeps the loads. */
    private static int fetchSink;

    // exp(x) = 2^n · p(r), x = n ln2 + r, |r| ≤ ln2/2; Cephes' expf polynomial (≤ 2 ulp).
    /** Inputs are clamped here (2^n with n ≤ 127); callers pass x − max ≤ 0. */
    private static final float EXP_HI = 88.0f;
    public static final float EXP_LO = -87.3365447505531f; // below: exp underflows to 0
    /** log2(e), rounded; a caller of exp2 folds it into its scale (1/T · LOG2E) once. */
    public static final float LOG2E = 1.44269504088896341f;
    public static final float LN2_HI = 0.693359375f;
    public static final float LN2_LO = -2.12194440e-4f;
    public static final float ROUND = 12582912f; // 1.5 · 2^23: adding it rounds to an integer
    private static final float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f,
            P3 = 4.1665795894e-2f, P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;

    /**
     * exp of every lane; 0 below −87.34 (so exp(−inf) = 0 exactly), exp(88) above 88, NaN stays
     * NaN. Fused multiply-adds throughout: exact in every JIT tier, and half the instructions of
     * separate multiplies and adds. Same bits as {@link #exp(float)}.
     */
    public static FloatVector exp(FloatVector x) {
        // Clamped by a compare and a blend, not min/max: a Java-semantics max (NaN and −0.0 rules)
        // is six instructions on AVX-512, and the clamp's max and min were a third of this
        // function. No lower clamp: lanes below EXP_LO (−inf too) compute garbage that the last
        // blend of expNonPositive replaces by 0. NaN compares false and stays NaN.
        return expNonPositive(x.blend(FloatVector.broadcast(SPECIES, EXP_HI), x.compare(VectorOperators.GT, EXP_HI)));
    }

    /**
     * exp of lanes that are at most 88 or NaN (x − max, a shifted logit, is ≤ 0):
     * {@link #exp(FloatVector)} without its upper clamp, two instructions fewer, the same bits on
     * those lanes. Constants are broadcast here, not read from static final FloatVector fields:
     * a field's lanes live in a Java array that C2 reloads on every iteration of a loop that
     * stores to memory (it cannot prove the store misses that array); a broadcast constant is
     * hoisted into a register. Not through a helper either: at this depth of inlining a helper
     * call was not inlined, and every vector it returned was boxed.
     */
    public static FloatVector expNonPositive(FloatVector x) {
        VectorMask<Float> under = x.lt(EXP_LO);
        FloatVector t = x.fma(LOG2E, ROUND);
        FloatVector n = t.sub(ROUND);
        FloatVector r = n.fma(FloatVector.broadcast(SPECIES, -LN2_HI), x);
        r = n.fma(FloatVector.broadcast(SPECIES, -LN2_LO), r);
        FloatVector p = r.fma(P0, P1);
        p = p.fma(r, FloatVector.broadcast(SPECIES, P2));
        p = p.fma(r, FloatVector.broadcast(SPECIES, P3));
        p = p.fma(r, FloatVector.broadcast(SPECIES, P4));
        p = p.fma(r, FloatVector.broadcast(SPECIES, P5));
        FloatVector y = p.fma(r.mul(r), r).add(1f);
        IntVector bits = ((IntVector) t.reinterpretAsInts()).sub(0x4B400000 - 127).lanewise(VectorOperators.LSHL, 23);
        return y.mul((FloatVector) bits.reinterpretAsFloats()).blend(0f, under);
    }

    /** The scalar twin of {@link #exp(FloatVector)}: identical operations, identical bits. */
    public static float exp(float x) {
        if (x < EXP_LO) return 0f;
        if (x != x) return x;
        float xc = Math.min(x, EXP_HI);
        float t = Math.fma(xc, LOG2E, ROUND);
        float n = t - ROUND;
        float r = Math.fma(n, -LN2_HI, xc);
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(r, P0, P1);
        p = Math.fma(p, r, P2);
        p = Math.fma(p, r, P3);
        p = Math.fma(p, r, P4);
        p = Math.fma(p, r, P5);
        float y = Math.fma(p, r * r, r) + 1f;
        return y * Float.intBitsToFloat((Float.floatToRawIntBits(t) - (0x4B400000 - 127)) << 23);
    }

    // 2^x = 2^n · p(r), n = round(x), r = x − n, |r| ≤ 1/2; p a degree-6 polynomial fitted for
    // the least maximum relative error on [−1/2, 1/2] (2e-9 with exact coefficients; ≤ 0.94 ulp
    // in float for an exact r, fma Horner, checked on 2·10^6 points against Math.pow).
    /** Below this 2^x is 0 (2^−126 is the least normal float). */
    public static final float EXP2_LO = -126f;
    public static final float E1 = 6.9314718246e-01f, E2 = 2.4022647738e-01f, E3 = 5.5503323674e-02f,
            E4 = 9.6184369177e-03f, E5 = 1.3398875017e-03f, E6 = 1.5353361960e-04f;

    /** The exponent field of +inf: 2^(dk) saturates there from dk = 127.5 on (n rounds to 128). */
    public static final int EXP2_FIELD_MAX = 255;

    /**
     * 2^(d k), k &gt; 0: exp((s − m)/T) for d = s − m and k = log2(e)/T, the scale folded into the
     * reduction. n = round(d k) and r = d k − n each come from one fused multiply-add of the exact
     * product (no d k is rounded on its own: that rounding alone is worth 2^−24 |d k| of relative
     * error, 40 ulp at d k = −100), and r needs no Cody–Waite split; a degree-6 polynomial
     * fitted for 2^r on [−½, ½]. 15 vector operations after the subtraction, against 17 for
     * {@link #exp} after its multiply. 0 where d &lt; −126/k (−inf too; 2^(d k) stays a normal
     * float), +inf for finite d from d k = 127.5 on, NaN for NaN (and +inf). The exponent field
     * n + 127 is capped at 255 (one integer min), so lanes far above the caller's shift come out
     * +inf, which a sum shows, and never wrap into garbage: the fused loss's pass A runs against
     * maxima that may lie below the row's (kernels.cpu.distill.DenseRow) and relies on it. 2^n is
     * multiplied in, not added to p's exponent bits as an integer (one operation fewer): a NaN
     * with payload bits in its low mantissa would carry them into the exponent that way and
     * come out a number. Same bits as {@link #exp2(float, float)}.
     */
    public static FloatVector exp2(FloatVector d, float k) {
        VectorMask<Float> under = d.lt(EXP2_LO / k);
        FloatVector t = d.fma(k, ROUND);                                   // 1.5 · 2^23 + n
        FloatVector r = d.fma(FloatVector.broadcast(SPECIES, k), FloatVector.broadcast(SPECIES, ROUND).sub(t));
        FloatVector p = r.fma(FloatVector.broadcast(SPECIES, E6), FloatVector.broadcast(SPECIES, E5));
        p = p.fma(r, FloatVector.broadcast(SPECIES, E4));
        p = p.fma(r, FloatVector.broadcast(SPECIES, E3));
        p = p.fma(r, FloatVector.broadcast(SPECIES, E2));
        p = p.fma(r, FloatVector.broadcast(SPECIES, E1));
        p = p.fma(r, FloatVector.broadcast(SPECIES, 1f));
        // t's low bits hold n: 2^n's bits are (n + 127) << 23
        IntVector field = ((IntVector) t.reinterpretAsInts()).sub(0x4B400000 - 127).min(EXP2_FIELD_MAX);
        return p.mul((FloatVector) field.lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats()).blend(0f, under);
    }

    /** The scalar twin of {@link #exp2(FloatVector, float)}: identical operations, identical bits. */
    public static float exp2(float d, float k) {
        if (d < EXP2_LO / k) return 0f;
        if (d != d) return d;
        float t = Math.fma(d, k, ROUND);
        float r = Math.fma(d, k, ROUND - t);
        float p = Math.fma(r, E6, E5);
        p = Math.fma(p, r, E4);
        p = Math.fma(p, r, E3);
        p = Math.fma(p, r, E2);
        p = Math.fma(p, r, E1);
        p = Math.fma(p, r, 1f);
        return p * Float.intBitsToFloat(Math.min(Float.floatToRawIntBits(t) - (0x4B400000 - 127), EXP2_FIELD_MAX) << 23);
    }

    // log(x) = e ln2 + log(m), x = m 2^e, m in [√½, √2); Cephes' logf polynomial (≤ 2 ulp), its
    // Horner steps and the two small corrections as fused multiply-adds (one instruction each).
    public static final float SQRT_HALF = 0.707106781186547524f;
    public static final float L0 = 7.0376836292e-2f, L1 = -1.1514610310e-1f, L2 = 1.1676998740e-1f,
            L3 = -1.2420140846e-1f, L4 = 1.4249322787e-1f, L5 = -1.6668057665e-1f, L6 = 2.0000714765e-1f,
            L7 = -2.4999993993e-1f, L8 = 3.3333331174e-1f;

    /**
     * Natural log of every lane: −inf for 0 and subnormals, NaN for negatives and NaN, +inf for +inf.
     * Same bits as {@link #log(float)}.
     */
    public static FloatVector log(FloatVector x) {
        VectorMask<Float> tiny = x.lt(Float.MIN_NORMAL);
        VectorMask<Float> bad = x.lt(0f).or(x.compare(VectorOperators.NE, x)); // NaN ≠ NaN
        VectorMask<Float> inf = x.eq(Float.POSITIVE_INFINITY);
        return logNormal(x).blend(Float.NEGATIVE_INFINITY, tiny).blend(Float.POSITIVE_INFINITY, inf).blend(Float.NaN, bad);
    }

    /**
     * log of the lanes that are normal, positive and finite (others give garbage, which log
     * blends away; no max() to keep them in range: a Java-semantics max is six instructions). A
     * method of its own because C2 inlines a hot method only up to 325 bytes of bytecode
     * (FreqInlineSize): log in one piece was 327, was never inlined, and every call boxed its
     * argument and result (docs/KERNELS.md#vector-api-loops-and-the-jit).
     */
    private static FloatVector logNormal(FloatVector x) {
        IntVector bits = (IntVector) x.reinterpretAsInts();
        IntVector exponent = bits.lanewise(VectorOperators.LSHR, 23).sub(126);
        FloatVector mant = (FloatVector) bits.and(0x007FFFFF).or(0x3F000000).reinterpretAsFloats(); // [0.5, 1)
        VectorMask<Float> small = mant.lt(SQRT_HALF);
        FloatVector e = (FloatVector) exponent.convert(VectorOperators.I2F, 0);
        e = e.sub(1f, small);
        FloatVector f = mant.add(mant, small).sub(1f);
        FloatVector z = f.mul(f);
        FloatVector y = f.fma(L0, L1);
        y = y.fma(f, FloatVector.broadcast(SPECIES, L2));
        y = y.fma(f, FloatVector.broadcast(SPECIES, L3));
        y = y.fma(f, FloatVector.broadcast(SPECIES, L4));
        y = y.fma(f, FloatVector.broadcast(SPECIES, L5));
        y = y.fma(f, FloatVector.broadcast(SPECIES, L6));
        y = y.fma(f, FloatVector.broadcast(SPECIES, L7));
        y = y.fma(f, FloatVector.broadcast(SPECIES, L8));
        y = y.mul(f).mul(z);
        y = e.fma(FloatVector.broadcast(SPECIES, LN2_LO), y);
        y = z.fma(FloatVector.broadcast(SPECIES, -0.5f), y);
        FloatVector r = f.add(y).add(e.mul(LN2_HI));
        return r;
    }

    /** The scalar twin of {@link #log(FloatVector)}. */
    public static float log(float x) {
        if (x != x || x < 0f) return Float.NaN;
        if (x < Float.MIN_NORMAL) return Float.NEGATIVE_INFINITY;
        if (x == Float.POSITIVE_INFINITY) return x;
        int bits = Float.floatToRawIntBits(x);
        float e = (bits >>> 23) - 126;
        float mant = Float.intBitsToFloat((bits & 0x007FFFFF) | 0x3F000000);
        if (mant < SQRT_HALF) {
            e = e - 1f;
            mant = mant + mant;
        }
        float f = mant - 1f;
        float z = f * f;
        float y = Math.fma(f, L0, L1);
        y = Math.fma(y, f, L2);
        y = Math.fma(y, f, L3);
        y = Math.fma(y, f, L4);
        y = Math.fma(y, f, L5);
        y = Math.fma(y, f, L6);
        y = Math.fma(y, f, L7);
        y = Math.fma(y, f, L8);
        y = y * f * z;
        y = Math.fma(e, LN2_LO, y);
        y = Math.fma(z, -0.5f, y);
        return f + y + e * LN2_HI;
    }

    /** Σ of the lanes, added in lane order (a fixed order, unlike a compiled reduceLanes(ADD)). */
    public static float sumLanes(FloatVector v) {
        float[] lanes = v.toArray();
        float s = 0f;
        for (float lane : lanes) s += lane;
        return s;
    }

    public static float get(MemorySegment s, long index) {
        return s.getAtIndex(F32, index);
    }

    public static void set(MemorySegment s, long index, float value) {
        s.setAtIndex(F32, index, value);
    }

    /** bf16 vectors of {@link #LANES} lanes: what {@link #intoBf16} stores. */
    private static final VectorSpecies<Short> BF16_SPECIES = VectorSpecies.of(short.class, VectorShape.forBitSize(LANES * 16));

    /**
     * x rounded to bf16 as the bf16 GEMM rounds its operands ({@code to_bf16} in bf16_gemm.c, the
     * instructions' VCVTNEPS2BF16): to nearest even, subnormals to signed zero, a NaN stays a quiet
     * NaN. So an activation stored in bf16 gives the GEMM the bits it would have made itself.
     */
    public static short bf16Bits(float x) {
        int u = Float.floatToRawIntBits(x);
        if ((u & 0x7fffffff) > 0x7f800000) return (short) ((u >>> 16) | 0x40);
        if ((u & 0x7f800000) == 0) return (short) ((u >>> 16) & 0x8000);
        return (short) ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16);
    }

    /** {@link #bf16Bits} of every lane of v, stored at bf16 element {@code index} of out. */
    public static void intoBf16(FloatVector v, MemorySegment out, long index) {
        IntVector u = v.reinterpretAsInts();
        IntVector high = u.lanewise(VectorOperators.LSHR, 16);
        IntVector rounded = u.add(0x7fff).add(high.and(1)).lanewise(VectorOperators.LSHR, 16);
        IntVector magnitude = u.and(0x7fffffff);
        rounded = rounded.blend(high.and(0x8000), u.and(0x7f800000).eq(0));
        rounded = rounded.blend(high.or(0x40), magnitude.compare(VectorOperators.GT, 0x7f800000));
        rounded.convertShape(VectorOperators.I2S, BF16_SPECIES, 0).intoMemorySegment(out, 2 * index, ORDER);
    }

    /** Σ a[ao + i] * b[bo + i], i < n. */
    public static float dot(MemorySegment a, long ao, MemorySegment b, long bo, int n) {
        int i = 0;
        float sum = 0f;
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                acc = FloatVector.fromMemorySegment(SPECIES, a, (ao + i) * 4L, ORDER).fma(FloatVector.fromMemorySegment(SPECIES, b, (bo + i) * 4L, ORDER), acc);
            }
            sum = sumLanes(acc);
        }
        for (; i < n; i++) {
            sum += get(a, ao + i) * get(b, bo + i);
        }
        return sum;
    }

    /** y[yo + i] += alpha * x[xo + i], i < n. */
    public static void axpy(float alpha, MemorySegment x, long xo, MemorySegment y, long yo, int n) {
        int i = 0;
        FloatVector va = FloatVector.broadcast(SPECIES, alpha);
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            FloatVector.fromMemorySegment(SPECIES, x, (xo + i) * 4L, ORDER).fma(va, FloatVector.fromMemorySegment(SPECIES, y, (yo + i) * 4L, ORDER)).intoMemorySegment(y, (yo + i) * 4L, ORDER);
        }
        for (; i < n; i++) {
            set(y, yo + i, get(y, yo + i) + alpha * get(x, xo + i));
        }
    }

    /** y[yo + i] += x[xo + i], i < n. */
    public static void add(MemorySegment x, long xo, MemorySegment y, long yo, int n) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            FloatVector.fromMemorySegment(SPECIES, x, (xo + i) * 4L, ORDER).add(FloatVector.fromMemorySegment(SPECIES, y, (yo + i) * 4L, ORDER)).intoMemorySegment(y, (yo + i) * 4L, ORDER);
        }
        for (; i < n; i++) {
            set(y, yo + i, get(y, yo + i) + get(x, xo + i));
        }
    }

    /** x[o + i] *= s, i < n. */
    public static void scale(MemorySegment x, long o, int n, float s) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER).mul(s).intoMemorySegment(x, (o + i) * 4L, ORDER);
        }
        for (; i < n; i++) {
            set(x, o + i, get(x, o + i) * s);
        }
    }

    /** x[o + i] = value, i < n. */
    public static void fill(MemorySegment x, long o, int n, float value) {
        int i = 0;
        FloatVector v = FloatVector.broadcast(SPECIES, value);
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            v.intoMemorySegment(x, (o + i) * 4L, ORDER);
        }
        for (; i < n; i++) {
            set(x, o + i, value);
        }
    }

    /**
     * max of x[o + i], i < n (n ≥ 1); -inf entries are fine. A Java-semantics max (NaN and −0.0
     * rules) is a multi-instruction sequence with a long latency, so four independent
     * accumulators keep the loop throughput-bound instead of latency-bound.
     */
    public static float max(MemorySegment x, long o, int n) {
        int i = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (n >= LANES) {
            FloatVector a0 = FloatVector.broadcast(SPECIES, Float.NEGATIVE_INFINITY), a1 = a0, a2 = a0, a3 = a0;
            for (int bound = n - 4 * LANES; i <= bound; i += 4 * LANES) {
                a0 = a0.max(FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER));
                a1 = a1.max(FloatVector.fromMemorySegment(SPECIES, x, (o + i + LANES) * 4L, ORDER));
                a2 = a2.max(FloatVector.fromMemorySegment(SPECIES, x, (o + i + 2 * LANES) * 4L, ORDER));
                a3 = a3.max(FloatVector.fromMemorySegment(SPECIES, x, (o + i + 3 * LANES) * 4L, ORDER));
            }
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                a0 = a0.max(FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER));
            }
            m = a0.max(a1).max(a2.max(a3)).reduceLanes(VectorOperators.MAX);
        }
        for (; i < n; i++) {
            m = Math.max(m, get(x, o + i));
        }
        return m;
    }

    /**
     * max of the non-NaN x[o + i], i &lt; n (−inf when there are none). By a compare and a blend
     * per vector, where a Java-semantics max is six instructions: for passes that only need the
     * max as a shift, because a NaN in the row makes their sums NaN anyway.
     */
    public static float maxSkippingNaN(MemorySegment x, long o, int n) {
        int i = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (n >= LANES) {
            FloatVector a0 = FloatVector.broadcast(SPECIES, Float.NEGATIVE_INFINITY), a1 = a0;
            for (int bound = n - 2 * LANES; i <= bound; i += 2 * LANES) {
                FloatVector x0 = FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER);
                FloatVector x1 = FloatVector.fromMemorySegment(SPECIES, x, (o + i + LANES) * 4L, ORDER);
                a0 = a0.blend(x0, x0.compare(VectorOperators.GT, a0));
                a1 = a1.blend(x1, x1.compare(VectorOperators.GT, a1));
            }
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                FloatVector x0 = FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER);
                a0 = a0.blend(x0, x0.compare(VectorOperators.GT, a0));
            }
            a0 = a0.blend(a1, a1.compare(VectorOperators.GT, a0));
            for (int l = 0; l < LANES; l++) m = greater(m, a0.lane(l));
        }
        for (; i < n; i++) m = greater(m, get(x, o + i));
        return m;
    }

    /**
     * The first index of the largest x[o + i], i &lt; n; NaN never wins; 0 when none is above −inf
     * ({@code DType.argmax}'s rule): the max in vectors, then the first lane equal to it.
     */
    public static int argmax(MemorySegment x, long o, int n) {
        float m = maxSkippingNaN(x, o, n);
        if (m == Float.NEGATIVE_INFINITY) return 0;
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            int lane = FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER).eq(m).firstTrue();
            if (lane < LANES) return i + lane;
        }
        for (; i < n; i++) if (get(x, o + i) == m) return i;
        throw new IllegalStateException("the maximum " + m + " is not in the row");
    }

    /** maxSkippingNaN over x[i], i &lt; n, x an array. */
    public static float maxSkippingNaN(float[] x, int n) {
        int i = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (n >= LANES) {
            FloatVector a0 = FloatVector.broadcast(SPECIES, Float.NEGATIVE_INFINITY);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                FloatVector x0 = FloatVector.fromArray(SPECIES, x, i);
                a0 = a0.blend(x0, x0.compare(VectorOperators.GT, a0));
            }
            for (int l = 0; l < LANES; l++) m = greater(m, a0.lane(l));
        }
        for (; i < n; i++) m = greater(m, x[i]);
        return m;
    }

    /** b when b &gt; a, else a: NaN never wins. */
    public static float greater(float a, float b) {
        return b > a ? b : a;
    }

    /** Σ x[o + i], i < n, accumulated in fp32 lanes. */
    public static float sum(MemorySegment x, long o, int n) {
        int i = 0;
        float sum = 0f;
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                acc = acc.add(FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER));
            }
            sum = sumLanes(acc);
        }
        for (; i < n; i++) {
            sum += get(x, o + i);
        }
        return sum;
    }

    /**
     * Σ exp(x[o + i] - shift), i < n. When {@code out} is non-null, also writes
     * {@code out[oo + i] = exp(x[o + i] - shift)} (out may alias x).
     */
    public static float expSum(MemorySegment x, long o, int n, float shift, MemorySegment out, long oo) {
        return expSumFetching(x, o, n, shift, out, oo, o * 4L, o * 4L);
    }

    /**
     * {@link #expSum}, the same bits, reading one byte of x per 64 bytes of the row from byte
     * {@code fetch} on (up to {@code fetchEnd}, inclusive): a caller going row by row passes the
     * next row, which then arrives while this one's exps compute (Java has no prefetch
     * instruction; the demand loads of the next row's first pass stall it otherwise).
     */
    public static float expSumFetching(MemorySegment x, long o, int n, float shift, MemorySegment out, long oo, long fetch, long fetchEnd) {
        int i = 0;
        float sum = 0f;
        int fetched = 0;
        FloatVector vs = FloatVector.broadcast(SPECIES, shift);
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                fetched += x.get(ValueLayout.JAVA_BYTE, Math.min(fetch + i * 4L, fetchEnd));
                FloatVector e = exp(FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER).sub(vs));
                if (out != null) e.intoMemorySegment(out, (oo + i) * 4L, ORDER);
                acc = acc.add(e);
            }
            sum = sumLanes(acc);
            fetchSink = fetched;
        }
        for (; i < n; i++) {
            float e = exp(get(x, o + i) - shift);
            if (out != null) set(out, oo + i, e);
            sum += e;
        }
        return sum;
    }

    /** Σ exp(scale · x[o + i] − shift), i &lt; n: a row's logsumexp at temperature 1/scale, with shift its scaled max. */
    public static float expSumScaled(MemorySegment x, long o, int n, float scale, float shift) {
        int i = 0;
        float sum = 0f;
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                acc = acc.add(exp(FloatVector.fromMemorySegment(SPECIES, x, (o + i) * 4L, ORDER).mul(scale).sub(shift)));
            }
            sum = sumLanes(acc);
        }
        for (; i < n; i++) sum += exp(get(x, o + i) * scale - shift);
        return sum;
    }

    /**
     * Softmax backward over one row, in place: {@code g[i] = scale · p[i] (g[i] − Σ_j p[j] g[j])},
     * i < n, at offset o of both p (probabilities) and g (upstream gradient).
     */
    public static void softmaxBackward(MemorySegment p, MemorySegment g, long o, int n, float scale) {
        float dotAll = dot(p, o, g, o, n);
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            FloatVector pv = FloatVector.fromMemorySegment(SPECIES, p, (o + i) * 4L, ORDER);
            FloatVector gv = FloatVector.fromMemorySegment(SPECIES, g, (o + i) * 4L, ORDER);
            gv.sub(dotAll).mul(pv).mul(scale).intoMemorySegment(g, (o + i) * 4L, ORDER);
        }
        for (; i < n; i++) {
            set(g, o + i, (get(g, o + i) - dotAll) * get(p, o + i) * scale);
        }
    }

    /*
     * The affine exp helpers below serve shifted logits: (x − sub) · mul − sub2 ≤ 0 with sub the
     * row's (or block's) max, mul = 1/T > 0 and sub2 a log-normalizer ≥ 0, so they use
     * expNonPositive.
     */

    /**
     * out[i] = exp((x[xo + i] − sub) · mul − sub2), i &lt; n, x a memory segment. One exp per loop:
     * a loop with several inlined exps exceeds C2's node budget and boxes its vectors.
     */
    public static void expAffine(MemorySegment x, long xo, int n, float sub, float mul, float sub2, float[] out) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            FloatVector v = FloatVector.fromMemorySegment(SPECIES, x, (xo + i) * 4L, ORDER).sub(sub).mul(mul).sub(sub2);
            expNonPositive(v).intoArray(out, i);
        }
        for (; i < n; i++) out[i] = exp((get(x, xo + i) - sub) * mul - sub2);
    }

    /** Σ exp((x[xo + i] − sub) · mul), i &lt; n (fp32 lanes, added in lane order). */
    public static float expSumAffine(MemorySegment x, long xo, int n, float sub, float mul) {
        int i = 0;
        float sum = 0f;
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                acc = acc.add(expNonPositive(FloatVector.fromMemorySegment(SPECIES, x, (xo + i) * 4L, ORDER).sub(sub).mul(mul)));
            }
            sum = sumLanes(acc);
        }
        for (; i < n; i++) sum += exp((get(x, xo + i) - sub) * mul);
        return sum;
    }

    /**
     * One exp, two sums: with e = exp((x − sub) · mul), returns {Σ e, Σ e^power} over
     * x[xo + i], i &lt; n. For an integer temperature T (mul = 1/T, power = T) these are the
     * normalizers of softmax(x/T) and softmax(x), so the hard-label CE costs no second exp.
     */
    public static float[] expSumAndPower(MemorySegment x, long xo, int n, float sub, float mul, int power) {
        int i = 0;
        float s1 = 0f, sp = 0f;
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES), accP = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                FloatVector e = expNonPositive(FloatVector.fromMemorySegment(SPECIES, x, (xo + i) * 4L, ORDER).sub(sub).mul(mul));
                acc = acc.add(e);
                accP = accP.add(power(e, power));
            }
            s1 = sumLanes(acc);
            sp = sumLanes(accP);
        }
        for (; i < n; i++) {
            float e = exp((get(x, xo + i) - sub) * mul);
            s1 += e;
            sp += power(e, power);
        }
        return new float[]{s1, sp};
    }

    /**
     * x^n for 1 ≤ n ≤ 8 (an integer temperature), without a loop: a loop carrying a vector
     * through its back edge makes C2 box it on every iteration (docs/KERNELS.md#vector-api-loops-and-the-jit).
     */
    public static FloatVector power(FloatVector x, int n) {
        FloatVector x2 = x.mul(x);
        return switch (n) {
            case 1 -> x;
            case 2 -> x2;
            case 3 -> x2.mul(x);
            case 4 -> x2.mul(x2);
            case 5 -> x2.mul(x2).mul(x);
            case 6 -> x2.mul(x2).mul(x2);
            case 7 -> x2.mul(x2).mul(x2).mul(x);
            case 8 -> x2.mul(x2).mul(x2.mul(x2));
            default -> throw new IllegalArgumentException("power " + n + " outside 1..8");
        };
    }

    /** The scalar twin of {@link #power(FloatVector, int)}: the same multiplications, the same bits. */
    public static float power(float x, int n) {
        float x2 = x * x;
        return switch (n) {
            case 1 -> x;
            case 2 -> x2;
            case 3 -> x2 * x;
            case 4 -> x2 * x2;
            case 5 -> x2 * x2 * x;
            case 6 -> x2 * x2 * x2;
            case 7 -> x2 * x2 * x2 * x;
            case 8 -> x2 * x2 * (x2 * x2);
            default -> throw new IllegalArgumentException("power " + n + " outside 1..8");
        };
    }

    /** out[i] = (x[i] · a)^power · b, i &lt; n: softmax(s) from softmax(s/T) for an integer T. */
    public static void powerScaled(float[] x, int n, float a, int power, float b, float[] out) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            FloatVector ep = power(FloatVector.fromArray(SPECIES, x, i).mul(a), power);
            ep.mul(b).intoArray(out, i);
        }
        for (; i < n; i++) {
            out[i] = power(x[i] * a, power) * b;
        }
    }

    /** out[i] = x[xo + i]^power · b, i &lt; n. */
    public static void powerScaled(float[] x, int xo, int n, int power, float b, float[] out) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            power(FloatVector.fromArray(SPECIES, x, xo + i), power).mul(b).intoArray(out, i);
        }
        for (; i < n; i++) out[i] = power(x[xo + i], power) * b;
    }

    /** x[i] *= f, i &lt; n, x an array. */
    public static void scaleArray(float[] x, int n, float f) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            FloatVector.fromArray(SPECIES, x, i).mul(f).intoArray(x, i);
        }
        for (; i < n; i++) x[i] *= f;
    }

    /** Σ x², accumulated per vector block in fp32 and across blocks in float64. */
    public static double sumOfSquares(MemorySegment x, long o, int n) {
        double total = 0;
        int i = 0;
        final int block = 1024;
        while (i < n) {
            int len = Math.min(block, n - i);
            total += dot(x, o + i, x, o + i, len);
            i += len;
        }
        return total;
    }
}
