package dev.distillery.kernels;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;

import java.lang.foreign.MemorySegment;

import jdk.incubator.vector.FloatVector;

/**
 * Sums of fp32 vectors in host memory, in a fixed order, for code that adds outside a kernel: the
 * gradients of a data-parallel run, every rank's added in rank order ({@code
 * runtime.parallel.MpiCollective}), on whichever backend computes. One pass with the machine's
 * vectors; each element gets the same additions in the same order as a scalar loop would give it,
 * so the same bits.
 */
public final class HostSums {

    private HostSums() {
    }

    /**
     * sum[i] ← ((first ? p₀[i] : sum[i] + p₀[i]) + p₁[i]) + … + p_{k−1}[i] for i &lt; n, where
     * p_r is the n floats at float offset r·n of {@code parts}. sum may be p₀.
     */
    public static void addInOrder(MemorySegment sum, MemorySegment parts, int k, int n, boolean first) {
        if (k < 1 || n < 0 || sum.byteSize() < 4L * n || parts.byteSize() < 4L * k * n) {
            throw new IllegalArgumentException("adding " + k + " parts of " + n + " floats from " + parts.byteSize()
                    + " bytes into " + sum.byteSize());
        }
        int i = 0;
        for (int bound = SPECIES.loopBound(n); i < bound; i += SPECIES.length()) {
            FloatVector p0 = FloatVector.fromMemorySegment(SPECIES, parts, 4L * i, ORDER);
            FloatVector acc = first ? p0 : FloatVector.fromMemorySegment(SPECIES, sum, 4L * i, ORDER).add(p0);
            for (int r = 1; r < k; r++) acc = acc.add(FloatVector.fromMemorySegment(SPECIES, parts, 4L * ((long) r * n + i), ORDER));
            acc.intoMemorySegment(sum, 4L * i, ORDER);
        }
        for (; i < n; i++) {
            float p0 = parts.getAtIndex(F32, i);
            float acc = first ? p0 : sum.getAtIndex(F32, i) + p0;
            for (int r = 1; r < k; r++) acc += parts.getAtIndex(F32, (long) r * n + i);
            sum.setAtIndex(F32, i, acc);
        }
    }
}
