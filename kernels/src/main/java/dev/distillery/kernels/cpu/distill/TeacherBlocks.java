package dev.distillery.kernels.cpu.distill;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.VectorOps;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * A dense teacher row read block by block: fp16 and bf16 logits widened to fp32 one block at a
 * time (never converted as a whole), the row's maxima, and the errors that name a teacher row
 * and column. C twin: {@code teacher_max} and the bf16 loads of {@code fkl_block} in
 * cpu/src/main/c/distill_rows.inc.
 */
final class TeacherBlocks {

    private static final ValueLayout.OfShort SHORT = ValueLayout.JAVA_SHORT_UNALIGNED;
    /** Shorts at half the float width (so one short vector widens to one float vector) and ints at full width. */
    private static final VectorSpecies<Short> HALF_SPECIES = switch (SPECIES.vectorBitSize()) {
        case 512 -> ShortVector.SPECIES_256;
        case 256 -> ShortVector.SPECIES_128;
        default -> ShortVector.SPECIES_64;
    };
    private static final VectorSpecies<Integer> INT_SPECIES = switch (SPECIES.vectorBitSize()) {
        case 512 -> IntVector.SPECIES_512;
        case 256 -> IntVector.SPECIES_256;
        default -> IntVector.SPECIES_128;
    };
    /** Per-thread staging for fp16 teacher logits. */
    private static final ThreadLocal<short[]> RAW = ThreadLocal.withInitial(() -> new short[FusedDistillLoss.BLOCK]);

    private TeacherBlocks() {
    }

    /** Loads teacher columns [j0, j0 + len) of a dense row (at element to) into buf as fp32; columns ≥ the teacher's vocabulary get −inf. */
    static void load(TeacherTargets.Dense d, long to, int j0, int len, float[] buf) {
        int real = Math.max(0, Math.min(len, d.vocab() - j0));
        MemorySegment t = d.logits();
        long base = to + j0;
        // a block wholly past the teacher's vocabulary: base can lie past the segment's end (the
        // last rows), where even an empty copy is out of bounds
        if (real == 0) {
            Arrays.fill(buf, 0, len, Float.NEGATIVE_INFINITY);
            return;
        }
        switch (d.type()) {
            case F32 -> MemorySegment.copy(t, F32, base * 4L, buf, 0, real);
            case BF16 -> {
                int i = 0;
                for (int bound = SPECIES.loopBound(real); i < bound; i += LANES) widen(t, base + i).intoArray(buf, i);
                for (; i < real; i++) buf[i] = Float.intBitsToFloat(t.getAtIndex(SHORT, base + i) << 16);
            }
            case F16 -> {
                short[] raw = RAW.get();
                MemorySegment.copy(t, SHORT, base * 2L, raw, 0, real);
                for (int i = 0; i < real; i++) buf[i] = Float.float16ToFloat(raw[i]);
            }
        }
        if (real < len) Arrays.fill(buf, real, len, Float.NEGATIVE_INFINITY);
    }

    /** LANES bf16 values at element index e, as fp32: bf16 is the top half of an fp32, so widen the lanes and shift them up. */
    static FloatVector widen(MemorySegment t, long e) {
        ShortVector h = ShortVector.fromMemorySegment(HALF_SPECIES, t, e * 2L, ORDER);
        return ((IntVector) h.convertShape(VectorOperators.S2I, INT_SPECIES, 0)).lanewise(VectorOperators.LSHL, 16)
                .reinterpretAsFloats();
    }

    /**
     * Max of the non-NaN logits of a dense teacher row's first vt columns at element to (bf16
     * widened in registers; other types through buf), −inf when there are none; see
     * VectorOps.maxSkippingNaN.
     */
    static float max(TeacherTargets.Dense d, long to, int vt, float[] buf) {
        if (d.type() != DType.BF16) {
            float m = Float.NEGATIVE_INFINITY;
            for (int j0 = 0; j0 < vt; j0 += FusedDistillLoss.BLOCK) {
                int len = Math.min(FusedDistillLoss.BLOCK, vt - j0);
                load(d, to, j0, len, buf);
                m = VectorOps.greater(m, VectorOps.maxSkippingNaN(buf, len));
            }
            return m;
        }
        MemorySegment t = d.logits();
        int i = 0;
        float m = Float.NEGATIVE_INFINITY;
        if (vt >= LANES) {
            FloatVector m0 = FloatVector.broadcast(SPECIES, m), m1 = m0;
            for (int bound = SPECIES.loopBound(vt) - 2 * LANES; i <= bound; i += 2 * LANES) {
                FloatVector x0 = widen(t, to + i), x1 = widen(t, to + i + LANES);
                m0 = m0.blend(x0, x0.compare(VectorOperators.GT, m0));
                m1 = m1.blend(x1, x1.compare(VectorOperators.GT, m1));
            }
            for (int bound = SPECIES.loopBound(vt); i < bound; i += LANES) {
                FloatVector x0 = widen(t, to + i);
                m0 = m0.blend(x0, x0.compare(VectorOperators.GT, m0));
            }
            m0 = m0.blend(m1, m1.compare(VectorOperators.GT, m0));
            for (int l = 0; l < LANES; l++) m = VectorOps.greater(m, m0.lane(l));
        }
        for (; i < vt; i++) m = VectorOps.greater(m, Float.intBitsToFloat(t.getAtIndex(SHORT, to + i) << 16));
        return m;
    }

    /** A teacher row needs a finite maximum: −inf everywhere, or a +inf logit, is an error naming the row. */
    static void checkMax(int r, float mt) {
        if (mt == Float.NEGATIVE_INFINITY || Float.isNaN(mt) || mt == Float.POSITIVE_INFINITY) {
            throw new BadRowException(r, "the teacher's logits have no finite maximum (max = " + mt + ")");
        }
    }

    /**
     * After pass A of a dense row: a NaN teacher sum means a NaN logit (the maxima skip NaN) or a
     * +inf one outside the block the maxima started from (2^(+inf − m) is NaN), an error that
     * names the row, the first such column and its value.
     */
    static void checkSum(int r, double zt, TeacherTargets.Dense d, long to) {
        if (!Double.isNaN(zt)) return;
        int column = 0;
        float x = 0f;
        while (column < d.vocab() && !Float.isNaN(x = d.type().read(d.logits(), to + column)) && x != Float.POSITIVE_INFINITY) column++;
        throw new BadRowException(r, "the teacher's logit at column " + column + (Float.isNaN(x) ? " is NaN" : " is +inf"));
    }
}
