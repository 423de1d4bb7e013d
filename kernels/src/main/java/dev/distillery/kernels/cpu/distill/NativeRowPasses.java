package dev.distillery.kernels.cpu.distill;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.distill.StudentPass.Student;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The C twins of the rows' passes ({@code cpu/src/main/c/distill_rows.inc} through
 * {@link DistilleryCpu}), where the library loaded and this CPU runs it. Every range the C code
 * reads or writes is checked here, once per row; its return codes become the Java rows' errors.
 */
final class NativeRowPasses implements RowPasses {

    static final NativeRowPasses INSTANCE = new NativeRowPasses();
    /** Tests run the Java rows too: they turn this off around a run. */
    private static volatile boolean enabled = true;
    /** The machine the rows run on: this CPU's best; tests also run the AVX2 rows on an AVX-512 CPU. */
    private static volatile int kind = DistilleryCpu.rowsKind();

    private NativeRowPasses() {
    }

    /** Whether rows go to the C passes now. */
    static boolean active() {
        return enabled && DistilleryCpu.available();
    }

    /** For tests: run the Java rows (false) or the C ones where they apply (true). */
    static void enable(boolean on) {
        enabled = on;
    }

    /** {@link DistilleryCpu#ROWS_AVX512} or {@link DistilleryCpu#ROWS_AVX2}: the machine the C rows run on. */
    static int kind() {
        return kind;
    }

    /** For tests: run the C rows on {@code rowsKind}, one this CPU runs ({@link DistilleryCpu#rowsKind()} or below). */
    static void useKind(int rowsKind) {
        if (rowsKind == DistilleryCpu.ROWS_NONE || rowsKind > DistilleryCpu.rowsKind()) {
            throw new IllegalArgumentException("native loss rows: kind " + rowsKind + " does not run on this CPU (its best is "
                    + DistilleryCpu.rowsKind() + ")");
        }
        kind = rowsKind;
    }

    @Override
    public float[] denseForwardKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                                  int power, float c1, float cq, RowScratch sc) {
        return denseRow(Row.FORWARD_KL, r, s, so, g, d, v, invT, power, 0f, c1, cq, sc);
    }

    @Override
    public float[] denseReverseKl(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                                  int power, float c1, float cq, RowScratch sc) {
        return denseRow(Row.REVERSE_KL, r, s, so, g, d, v, invT, power, 0f, c1, cq, sc);
    }

    @Override
    public float[] denseJsd(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v, float invT,
                            int power, float beta, float c1, float cq, RowScratch sc) {
        return denseRow(Row.JSD, r, s, so, g, d, v, invT, power, beta, c1, cq, sc);
    }

    /** The dense rows in C, with the scratch rows each takes. */
    private enum Row {
        FORWARD_KL(1), REVERSE_KL(2), JSD(2);

        final int scratchRows;

        Row(int scratchRows) {
            this.scratchRows = scratchRows;
        }
    }

    /** A dense row in C: forward KL (scratch: e_t), reverse KL (e_s and (t − m_t)/T) or JSD (e_s and e_t). */
    private static float[] denseRow(Row kind, int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d,
                                    int v, float invT, int power, float beta, float c1, float cq, RowScratch sc) {
        sc.nativeRows(v, kind.scratchRows);
        MemorySegment t = d.logits();
        boolean bf16 = d.type() == DType.BF16;
        long tBytes = bf16 ? 2L : 4L, next = sc.nextRow, to = sc.teacherAt * tBytes, nextTo = sc.nextTeacherAt * tBytes;
        Objects.checkFromIndexSize(so * 4L, 4L * v, s.byteSize());
        Objects.checkFromIndexSize(so * 4L, 4L * v, g.byteSize());
        Objects.checkFromIndexSize(to, v * tBytes, t.byteSize());
        Objects.checkFromIndexSize(next * v * 4L, 4L * v, s.byteSize());
        Objects.checkFromIndexSize(nextTo, v * tBytes, t.byteSize());
        long sa = s.address() + so * 4L, ga = g.address() + so * 4L, ta = t.address() + to, nextS = s.address() + next * v * 4L,
                nextT = t.address() + nextTo, scratch = sc.nativeE.address(), outAt = sc.nativeOut.address();
        int machine = NativeRowPasses.kind;
        int code = switch (kind) {
            case FORWARD_KL -> DistilleryCpu.denseForwardKlRow(machine, sa, ga, ta, bf16, v, invT, power, c1, cq, nextS, 4L * v, nextT,
                    v * tBytes, scratch, outAt);
            case REVERSE_KL -> DistilleryCpu.denseReverseKlRow(machine, sa, ga, ta, bf16, v, invT, power, c1, cq, nextS, 4L * v, nextT,
                    v * tBytes, scratch, outAt);
            case JSD -> DistilleryCpu.denseJsdRow(machine, sa, ga, ta, bf16, v, invT, power, beta, c1, cq, nextS, 4L * v, nextT,
                    v * tBytes, scratch, outAt);
        };
        MemorySegment out = sc.nativeOut;
        switch (code) {
            case DistilleryCpu.ROW_OK -> {
                sc.nativeRows++;
                sc.raises += (long) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 2);
                return new float[]{(float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 0), (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 1)};
            }
            case DistilleryCpu.ROW_NOT_FINITE -> {
                return null;
            }
            case DistilleryCpu.ROW_TEACHER_NAN -> {
                TeacherBlocks.checkSum(r, Double.NaN, d, sc.teacherAt);
                throw new AssertionError("teacher row " + r + ": NaN sum without a NaN or +inf logit");
            }
            case DistilleryCpu.ROW_TEACHER_MAX -> {
                TeacherBlocks.checkMax(r, (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 3));
                throw new AssertionError("teacher row " + r + ": a finite maximum reported as not finite");
            }
            default -> throw new IllegalStateException("the C " + kind + " row returned " + code + " for row " + r);
        }
    }

    /** e goes over the gradient row (s itself in place), which squaredGradient then forms over it: no e row in the cache. */
    @Override
    public Student studentPass(MemorySegment s, long so, MemorySegment g, int v, float invT, int power, RowScratch sc) {
        sc.nativeRows(v, 0);
        long next = sc.nextRow;
        Objects.checkFromIndexSize(so * 4L, 4L * v, s.byteSize());
        Objects.checkFromIndexSize(so * 4L, 4L * v, g.byteSize());
        Objects.checkFromIndexSize(next * v * 4L, 4L * v, s.byteSize());
        DistilleryCpu.studentPass(kind, s.address() + so * 4L, v, invT, power, g.address() + so * 4L, sc.nativeBlockMax.address(),
                s.address() + next * v * 4L, 4L * v, sc.nativeOut.address());
        sc.nativeRows++;
        MemorySegment out = sc.nativeOut;
        sc.raises += (long) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 3);
        return new Student((float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 0), (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 1),
                (float) out.getAtIndex(ValueLayout.JAVA_DOUBLE, 2));
    }

    @Override
    public void squaredGradient(long so, MemorySegment g, int v, Student st, float invT, float c1, float cqw, RowScratch sc) {
        Objects.checkFromIndexSize(so * 4L, 4L * v, g.byteSize());
        DistilleryCpu.squaredGradient(kind, g.address() + so * 4L, g.address() + so * 4L, sc.nativeBlockMax.address(), v, st.max(), invT,
                st.logZt(), st.logZ1(), c1, cqw);
    }
}
