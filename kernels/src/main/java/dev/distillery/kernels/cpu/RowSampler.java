package dev.distillery.kernels.cpu;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.HostTopK;
import jdk.incubator.vector.DoubleVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * One row of {@code CpuKernels.sampleRows}: a token id drawn from a row of logits (docs/KERNELS.md,
 * "sampling a token"). With a 128k-token vocabulary one {@code Math.exp} an id and a running sum
 * walked id by id cost as much as a small model's forward, so:
 * <ul>
 *   <li>p = exp((logit − max) · (1/T)) in float64 vectors, summed over blocks of {@value #BLOCK}
 *       candidates; the draw's block is found from the block sums, and only its exps are formed
 *       again and walked one by one (a row's exps, kept, would be 1 MB at 128k ids, past L2).
 *       Where the native library runs ({@code cpu/src/main/c/sample_rows.inc}) the row's maximum
 *       is found in the pass that sums its exps, so the row is read once, and its exp is a table
 *       and a degree-7 polynomial (12 FMA-pipe operations a vector where {@link Float64Exp}'s
 *       degree 13 takes 18); elsewhere the maximum comes first and the exps are
 *       {@link Float64Exp}'s. Both exps lie within about 1 ulp of {@code Math.exp};</li>
 *   <li>the top k come from {@link HostTopK}: a bounded heap that looks only at vectors holding a
 *       logit above its worst kept one, over the blocks of the row whose maxima bound the top k
 *       from below.</li>
 * </ul>
 * Not thread-safe: one per thread, kept from call to call while the arguments stay the same.
 */
final class RowSampler {

    private static final VectorSpecies<Double> DOUBLES = DoubleVector.SPECIES_PREFERRED;
    /** As many floats as DOUBLES has lanes, widened into one of its vectors. */
    private static final VectorSpecies<Float> WIDENED = VectorSpecies.of(float.class, VectorShape.forBitSize(DOUBLES.vectorBitSize() / 2));
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Candidates a block sum covers: the walk over a row's blocks is (candidates / BLOCK) steps. */
    static final int BLOCK = 1024;

    private final int vocab;
    private final double temperature;
    /** Whether the exps are the native library's ({@link DistilleryCpu#sampleExps}). */
    private final boolean nativeExps;
    /** The top k's ids, ascending; null for the whole vocabulary. */
    private final int[] kept;
    /** The top k's scratch ({@link HostTopK#ids}). */
    private final float[] topScratch;
    /** The top k's logits, in id order. */
    private final MemorySegment candidates;
    private final double[] p = new double[BLOCK];
    private final double[] blockSums;
    /** p, blockSums and the block sums' maximum as the native exps write them, made once. */
    private final MemorySegment pOut = MemorySegment.ofArray(p), blockSumsOut, maxOut = MemorySegment.ofArray(new float[1]);

    /**
     * temperature &gt; 0; topK 0 or ≥ vocab: the whole vocabulary; nativeExps: the exps of the
     * native library (where {@link DistilleryCpu#available()}), else the Java ones.
     */
    RowSampler(int vocab, double temperature, int topK, boolean nativeExps) {
        if (nativeExps && !DistilleryCpu.available()) throw new IllegalStateException("native sampling exps: the native CPU library is " + DistilleryCpu.status());
        this.vocab = vocab;
        this.temperature = temperature;
        this.nativeExps = nativeExps;
        boolean top = topK > 0 && topK < vocab;
        this.kept = top ? new int[topK] : null;
        this.candidates = top ? MemorySegment.ofArray(new float[topK]) : null;
        this.topScratch = top ? HostTopK.scratch(topK) : null;
        this.blockSums = new double[((top ? topK : vocab) + BLOCK - 1) / BLOCK];
        this.blockSumsOut = MemorySegment.ofArray(blockSums);
    }

    /** Whether this sampler draws for these arguments (its scratch is sized by them). */
    boolean drawsFor(int vocab, double temperature, int topK) {
        return vocab == this.vocab && temperature == this.temperature && (kept == null ? topK <= 0 || topK >= vocab : topK == kept.length);
    }

    /** The id drawn from row {@code r} of x (rows of {@code vocab} floats) with the uniform number u ∈ [0, 1). */
    int draw(MemorySegment x, long r, double u) {
        long row = r * vocab;
        MemorySegment c = x;
        long from = row;
        int m = vocab;
        if (kept != null) {
            m = HostTopK.ids(x, row, vocab, kept, topScratch);
            for (int i = 0; i < m; i++) candidates.setAtIndex(F32, i, x.getAtIndex(F32, row + kept[i]));
            c = candidates;
            from = 0;
        }
        int blocks = (m + BLOCK - 1) / BLOCK;
        double sum = 0;
        float max;
        if (nativeExps) {   // the maximum found in the same pass: the row is read once
            sum = DistilleryCpu.sampleBlockSums(DistilleryCpu.rowsKind(), c.asSlice(4 * from, 4L * m), m, BLOCK, 1 / temperature, blockSumsOut, maxOut);
            max = maxOut.getAtIndex(F32, 0);
        } else {
            max = x.getAtIndex(F32, row + VectorOps.argmax(x, row, vocab));   // the candidates' too: the top k hold it
            for (int b = 0; b < blocks; b++) {
                blockSums[b] = blockExps(c, from + (long) b * BLOCK, Math.min(m - b * BLOCK, BLOCK), max);
                sum += blockSums[b];
            }
        }
        if (!(sum > 0)) return VectorOps.argmax(x, row, vocab);   // a logit of +inf takes all the mass
        double target = u * sum, walked = 0;
        int last = 0;   // the last block with mass, for a target at the very top
        for (int b = 0; b < blocks; b++) {
            if (blockSums[b] > 0) last = b;
            if (target < walked + blockSums[b]) {   // the draw lies in this block, unless the walk's own rounding carries it past
                int n = Math.min(m - b * BLOCK, BLOCK);
                blockExps(c, from + (long) b * BLOCK, n, max);
                double s = walked;
                for (int i = 0; i < n; i++) {
                    s += p[i];
                    if (p[i] > 0 && target < s) return id(b * BLOCK + i);
                }
            }
            walked += blockSums[b];
        }
        int n = Math.min(m - last * BLOCK, BLOCK);
        blockExps(c, from + (long) last * BLOCK, n, max);
        for (int i = n - 1; i > 0; i--) if (p[i] > 0) return id(last * BLOCK + i);
        return id(last * BLOCK);
    }

    private int id(int candidate) {
        return kept == null ? candidate : kept[candidate];
    }

    /**
     * p[0, n) = exp((x[from + i] − max) · (1/T)), 0 where x is NaN; returns their sum (here vector
     * lanes then across them; the native exps sum in their own order). Times 1/T, not over T: a
     * division a logit cost four times its exp, and the two differ by an ulp of the exponent.
     */
    private double blockExps(MemorySegment x, long from, int n, float max) {
        double top = max, scale = 1 / temperature;
        if (nativeExps) return DistilleryCpu.sampleExps(DistilleryCpu.rowsKind(), x.asSlice(4 * from, 4L * n), n, max, scale, pOut);
        int i = 0;
        for (int bound = n - n % DOUBLES.length(); i < bound; i += DOUBLES.length()) {
            ((DoubleVector) FloatVector.fromMemorySegment(WIDENED, x, 4 * (from + i), ByteOrder.nativeOrder())
                    .convertShape(VectorOperators.F2D, DOUBLES, 0)).sub(top).mul(scale).intoArray(p, i);
        }
        for (; i < n; i++) p[i] = (x.getAtIndex(F32, from + i) - top) * scale;
        Float64Exp.exp(p, p, n);
        i = 0;
        DoubleVector s = DoubleVector.zero(DOUBLES);
        for (int bound = n - n % DOUBLES.length(); i < bound; i += DOUBLES.length()) {
            DoubleVector e = DoubleVector.fromArray(DOUBLES, p, i);
            e = e.blend(0.0, e.test(VectorOperators.IS_NAN));
            e.intoArray(p, i);
            s = s.add(e);
        }
        double sum = s.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            if (Double.isNaN(p[i])) p[i] = 0;
            sum += p[i];
        }
        return sum;
    }
}
