package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector-API loops the CPU kernels share: dot, axpy, max, exp-and-sum, scale. Offsets and
 * lengths are in fp32 elements. Every loop has a scalar tail, so any length works.
 */
final class VectorOps {

    static final VectorSpecies<Float> SPECIES = FloatVector.SPECIES_PREFERRED;
    static final int LANES = SPECIES.length();
    static final ByteOrder ORDER = ByteOrder.nativeOrder();
    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;

    private VectorOps() {
    }

    static FloatVector load(MemorySegment s, long index) {
        return FloatVector.fromMemorySegment(SPECIES, s, index * 4, ORDER);
    }

    static void store(FloatVector v, MemorySegment s, long index) {
        v.intoMemorySegment(s, index * 4, ORDER);
    }

    static float get(MemorySegment s, long index) {
        return s.getAtIndex(F32, index);
    }

    static void set(MemorySegment s, long index, float value) {
        s.setAtIndex(F32, index, value);
    }

    /** Σ a[ao + i] * b[bo + i], i < n. */
    static float dot(MemorySegment a, long ao, MemorySegment b, long bo, int n) {
        int i = 0;
        float sum = 0f;
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                acc = load(a, ao + i).fma(load(b, bo + i), acc);
            }
            sum = acc.reduceLanes(VectorOperators.ADD);
        }
        for (; i < n; i++) {
            sum += get(a, ao + i) * get(b, bo + i);
        }
        return sum;
    }

    /** y[yo + i] += alpha * x[xo + i], i < n. */
    static void axpy(float alpha, MemorySegment x, long xo, MemorySegment y, long yo, int n) {
        int i = 0;
        FloatVector va = FloatVector.broadcast(SPECIES, alpha);
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            store(load(x, xo + i).fma(va, load(y, yo + i)), y, yo + i);
        }
        for (; i < n; i++) {
            set(y, yo + i, get(y, yo + i) + alpha * get(x, xo + i));
        }
    }

    /** y[yo + i] += x[xo + i], i < n. */
    static void add(MemorySegment x, long xo, MemorySegment y, long yo, int n) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            store(load(x, xo + i).add(load(y, yo + i)), y, yo + i);
        }
        for (; i < n; i++) {
            set(y, yo + i, get(y, yo + i) + get(x, xo + i));
        }
    }

    /** x[o + i] *= s, i < n. */
    static void scale(MemorySegment x, long o, int n, float s) {
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            store(load(x, o + i).mul(s), x, o + i);
        }
        for (; i < n; i++) {
            set(x, o + i, get(x, o + i) * s);
        }
    }

    /** x[o + i] = value, i < n. */
    static void fill(MemorySegment x, long o, int n, float value) {
        int i = 0;
        FloatVector v = FloatVector.broadcast(SPECIES, value);
        for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
            store(v, x, o + i);
        }
        for (; i < n; i++) {
            set(x, o + i, value);
        }
    }

    /** max of x[o + i], i < n (n ≥ 1); -inf entries are fine. */
    static float max(MemorySegment x, long o, int n) {
        int i = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (n >= LANES) {
            FloatVector acc = FloatVector.broadcast(SPECIES, Float.NEGATIVE_INFINITY);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                acc = acc.max(load(x, o + i));
            }
            m = acc.reduceLanes(VectorOperators.MAX);
        }
        for (; i < n; i++) {
            m = Math.max(m, get(x, o + i));
        }
        return m;
    }

    /** Σ x[o + i], i < n, accumulated in fp32 lanes. */
    static float sum(MemorySegment x, long o, int n) {
        int i = 0;
        float sum = 0f;
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                acc = acc.add(load(x, o + i));
            }
            sum = acc.reduceLanes(VectorOperators.ADD);
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
    static float expSum(MemorySegment x, long o, int n, float shift, MemorySegment out, long oo) {
        int i = 0;
        float sum = 0f;
        FloatVector vs = FloatVector.broadcast(SPECIES, shift);
        if (n >= LANES) {
            FloatVector acc = FloatVector.zero(SPECIES);
            for (int bound = SPECIES.loopBound(n); i < bound; i += LANES) {
                FloatVector e = load(x, o + i).sub(vs).lanewise(VectorOperators.EXP);
                if (out != null) store(e, out, oo + i);
                acc = acc.add(e);
            }
            sum = acc.reduceLanes(VectorOperators.ADD);
        }
        for (; i < n; i++) {
            float e = (float) Math.exp(get(x, o + i) - shift);
            if (out != null) set(out, oo + i, e);
            sum += e;
        }
        return sum;
    }

    /** Σ x², accumulated per vector block in fp32 and across blocks in float64. */
    static double sumOfSquares(MemorySegment x, long o, int n) {
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
