package dev.distillery.kernels.cpu;

import static dev.distillery.kernels.cpu.VectorOps.F32;
import static dev.distillery.kernels.cpu.VectorOps.I32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.set;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;

import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;

/**
 * The fused distillation loss on the CPU: one row at a time per pool thread, in blocks of
 * {@link #BLOCK} columns so a row's working set stays in L1/L2.
 *
 * <p>Pass A streams the student row once and keeps online (running-max) sums for softmax(s/T)
 * and softmax(s) (the hard-label CE), and for a dense teacher the same for softmax(t/T). Pass B
 * streams student and teacher again and, for forward KL, computes the loss and writes dL/ds (in
 * place when the gradient buffer is the student's). Reverse KL and JSD need a row-wide sum
 * before their gradient, so they take a pass C. Sparse teachers (top-k, sampled) touch only their
 * k entries after pass A; pass B writes the gradient every non-listed column shares (through the
 * tail bucket), and the k listed columns are fixed up afterwards.
 *
 * <p>Teacher logits are converted to fp32 block by block into a per-thread buffer of BLOCK floats
 * (fp16/bf16 are never converted as a whole). Extra memory: O(threads × BLOCK) plus a
 * per-thread int[vocab] of marks for top-k rows. See docs/KERNELS.md#distillation-losses.
 */
final class FusedDistillLoss {

    static final int BLOCK = 2048;
    /** log of fp32's smallest normal: reverse KL charges zero teacher mass at this log-probability. */
    private static final float LOG_FLOOR = (float) Math.log(Float.MIN_NORMAL);

    private final WorkerPool pool;
    private Scratch[] scratch = new Scratch[0];

    FusedDistillLoss(WorkerPool pool) {
        this.pool = pool;
    }

    /** Per-thread buffers. */
    private static final class Scratch {
        final float[] teacher = new float[BLOCK];
        int[] marks = new int[0];
        int markRow;
        float[] q = new float[0], lq = new float[0], p = new float[0], lp = new float[0];
    }

    /** Per-row constants of the student after pass A. */
    private record Student(float max, float logZt, float logZ1) {
    }

    DistillSums run(MemorySegment s, MemorySegment g, TeacherTargets teacher, MemorySegment labels,
                    MemorySegment rowCe, MemorySegment rowDiv, int n, int v, DistillOptions o, float gradScale) {
        validate(teacher, labels, v, o);
        int chunks = pool.chunks(n, 1);
        if (scratch.length < chunks) {
            Scratch[] grown = Arrays.copyOf(scratch, chunks);
            for (int i = scratch.length; i < chunks; i++) grown[i] = new Scratch();
            scratch = grown;
        }
        double[][] sums = new double[chunks][4];
        pool.forEachChunk(n, 1, (chunk, start, end) -> {
            Scratch sc = scratch[chunk];
            double[] acc = sums[chunk];
            for (int r = start; r < end; r++) {
                float[] ceDiv = row(r, s, g, teacher, labels, v, o, gradScale, sc);
                if (rowCe != null) set(rowCe, r, ceDiv == null ? 0f : ceDiv[0]);
                if (rowDiv != null) set(rowDiv, r, ceDiv == null ? 0f : ceDiv[1]);
                if (ceDiv == null) continue;
                acc[0] += o.alpha() * ceDiv[0] + (1 - o.alpha()) * (double) ceDiv[1];
                acc[1] += ceDiv[0];
                acc[2] += ceDiv[1];
                acc[3]++;
            }
        });
        DistillSums total = DistillSums.zero();
        for (double[] a : sums) total = total.plus(new DistillSums(a[0], a[1], a[2], (int) a[3]));
        return total;
    }

    private static void validate(TeacherTargets teacher, MemorySegment labels, int v, DistillOptions o) {
        if (v < teacher.vocab()) {
            throw new IllegalArgumentException("student vocabulary " + v + " is smaller than the teacher's " + teacher.vocab()
                    + " (a larger student vocabulary is allowed: its extra columns get zero teacher mass)");
        }
        if (labels == null && o.alpha() > 0) {
            throw new IllegalArgumentException("alpha = " + o.alpha() + " weights a hard-label loss, but no labels were given");
        }
        switch (teacher) {
            case TeacherTargets.Sampled sm -> {
                if (!(o.divergence() instanceof Divergence.ForwardKl)) {
                    throw new IllegalArgumentException("sampled teacher targets support forward KL only (they estimate p, "
                            + "which reverse KL and JSD need everywhere); got " + o.divergence());
                }
                if (sm.shardTemperature() != o.temperature()) {
                    throw new IllegalArgumentException("sampled targets were drawn at temperature " + sm.shardTemperature()
                            + " and cannot be reweighted to temperature " + o.temperature());
                }
            }
            case TeacherTargets.TopK k -> {
                if (k.shardTemperature() != o.temperature() && o.topKMode() == DistillOptions.TopKMode.TAIL_BUCKET
                        && o.sparseTemperature() == DistillOptions.SparseTemperature.REQUIRE_MATCH) {
                    throw new IllegalArgumentException("top-k shard logsumexp is at temperature " + k.shardTemperature()
                            + " but the loss runs at " + o.temperature() + "; choose sparseTemperature=RESCALE_TOPK "
                            + "(keeps the shard's tail mass) or topKMode=RENORMALIZE explicitly");
                }
            }
            case TeacherTargets.Dense d -> {
            }
        }
    }

    /** Loss and gradient of row r; returns {ce, divergence}, or null when the row is masked out. */
    private float[] row(int r, MemorySegment s, MemorySegment g, TeacherTargets teacher, MemorySegment labels,
                        int v, DistillOptions o, float gradScale, Scratch sc) {
        long so = (long) r * v;
        int label = labels == null ? Integer.MIN_VALUE : labels.getAtIndex(I32, r);
        if (labels != null && label == o.ignoreIndex()) {
            if (g != null) VectorOps.fill(g, so, v, 0f);
            return null;
        }
        if (labels != null && (label < 0 || label >= v)) {
            throw new IllegalArgumentException("label " + label + " at row " + r + " is outside [0, " + v
                    + ") and is not the ignore index " + o.ignoreIndex());
        }
        float invT = 1f / o.temperature();
        Student st = studentPass(s, so, v, invT);
        float ce = label >= 0 ? st.max() + st.logZ1() - get(s, so + label) : 0f;
        float c1 = gradScale * o.alpha();                                  // on softmax(s) − onehot
        float cq = gradScale * (1 - o.alpha()) * o.gradientTemperatureFactor(); // on the divergence's (q − target)
        float div = switch (teacher) {
            case TeacherTargets.Dense d -> dense(r, s, so, g, d, v, st, invT, o, c1, cq, sc);
            case TeacherTargets.TopK k -> topK(r, s, so, g, k, v, st, invT, o, c1, cq, sc);
            case TeacherTargets.Sampled sm -> sampled(r, s, so, g, sm, v, st, invT, c1, cq, sc);
        };
        if (g != null && label >= 0) set(g, so + label, get(g, so + label) - c1);
        return new float[]{ce, div * o.divergenceScale()};
    }

    // ---------------------------------------------------------------- pass A

    /** Online max and Σexp for softmax(s/T) and softmax(s) over one student row. */
    private static Student studentPass(MemorySegment s, long so, int v, float invT) {
        float m = Float.NEGATIVE_INFINITY;
        double zt = 0, z1 = 0;
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            long o = so + j0;
            float bm = VectorOps.max(s, o, len);
            if (bm > m) {
                if (m != Float.NEGATIVE_INFINITY) {
                    zt *= Math.exp((m - bm) * (double) invT);
                    z1 *= Math.exp(m - (double) bm);
                }
                m = bm;
            }
            FloatVector accT = FloatVector.zero(SPECIES), acc1 = FloatVector.zero(SPECIES);
            int i = 0;
            for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                FloatVector x = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(m);
                acc1 = acc1.add(VectorOps.exp(x));
                accT = accT.add(VectorOps.exp(x.mul(invT)));
            }
            float sT = VectorOps.sumLanes(accT), s1 = VectorOps.sumLanes(acc1);
            for (; i < len; i++) {
                float x = get(s, o + i) - m;
                s1 += VectorOps.exp(x);
                sT += VectorOps.exp(x * invT);
            }
            zt += sT;
            z1 += s1;
        }
        return new Student(m, (float) Math.log(zt), (float) Math.log(z1));
    }

    /** Loads teacher columns [j0, j0 + len) of a dense row into buf as fp32; columns ≥ vt get −inf. */
    private static void loadTeacher(TeacherTargets.Dense d, long to, int j0, int len, float[] buf) {
        int real = Math.max(0, Math.min(len, d.vocab() - j0));
        switch (d.type()) {
            case F32 -> MemorySegment.copy(d.logits(), F32, (to + j0) * 4L, buf, 0, real);
            case F16, BF16 -> {
                for (int i = 0; i < real; i++) buf[i] = d.type().read(d.logits(), to + j0 + i);
            }
        }
        if (real < len) Arrays.fill(buf, real, len, Float.NEGATIVE_INFINITY);
    }

    // ---------------------------------------------------------------- dense teacher

    private static float dense(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, int v,
                               Student st, float invT, DistillOptions o, float c1, float cq, Scratch sc) {
        long to = (long) r * d.vocab();
        float[] tb = sc.teacher;
        // pass A for the teacher: online max and Σ exp((t − max)/T) over its own vocabulary
        float mt = Float.NEGATIVE_INFINITY;
        double zt = 0;
        for (int j0 = 0; j0 < d.vocab(); j0 += BLOCK) {
            int len = Math.min(BLOCK, d.vocab() - j0);
            loadTeacher(d, to, j0, len, tb);
            float bm = Float.NEGATIVE_INFINITY;
            for (int i = 0; i < len; i++) bm = Math.max(bm, tb[i]);
            if (bm > mt) {
                if (mt != Float.NEGATIVE_INFINITY) zt *= Math.exp((mt - bm) * (double) invT);
                mt = bm;
            }
            if (mt == Float.NEGATIVE_INFINITY) continue;
            FloatVector acc = FloatVector.zero(SPECIES);
            int i = 0;
            for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                acc = acc.add(VectorOps.exp(FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT)));
            }
            float sum = VectorOps.sumLanes(acc);
            for (; i < len; i++) sum += VectorOps.exp((tb[i] - mt) * invT);
            zt += sum;
        }
        if (mt == Float.NEGATIVE_INFINITY || Float.isNaN(mt) || mt == Float.POSITIVE_INFINITY) {
            throw new IllegalArgumentException("teacher row " + r + " has no finite maximum logit (max = " + mt + ")");
        }
        RowMath m = new RowMath(st.max(), st.logZt(), st.logZ1(), mt, (float) Math.log(zt), invT, c1, cq);
        return switch (o.divergence()) {
            case Divergence.ForwardKl ignored -> m.forwardKl(s, so, g, d, to, v, tb);
            case Divergence.ReverseKl ignored -> m.reverseKl(s, so, g, d, to, v, tb);
            case Divergence.Jsd jsd -> m.jsd(s, so, g, d, to, v, tb, (float) jsd.beta());
        };
    }

    /**
     * Row constants and the vectorized dense passes. lq = (s − ms)/T − log Zq, lp = (t − mt)/T − log Zp,
     * sm1 = exp(s − ms − log Z1) is softmax(s) for the hard-label CE.
     */
    private record RowMath(float ms, float lzq, float lz1, float mt, float lzp, float invT, float c1, float cq) {

        float forwardKl(MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, long to, int v, float[] tb) {
            double kl = 0;
            for (int j0 = 0; j0 < v; j0 += BLOCK) {
                int len = Math.min(BLOCK, v - j0);
                loadTeacher(d, to, j0, len, tb);
                long o = so + j0;
                FloatVector acc = FloatVector.zero(SPECIES);
                int i = 0;
                for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                    FloatVector sv = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER);
                    FloatVector lq = sv.sub(ms).mul(invT).sub(lzq);
                    FloatVector lp = FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT).sub(lzp);
                    FloatVector q = VectorOps.exp(lq), p = VectorOps.exp(lp);
                    VectorMask<Float> some = p.compare(VectorOperators.GT, 0f);
                    acc = acc.add(p.mul(lp.sub(lq)), some);
                    if (g != null) {
                        FloatVector gv = q.sub(p).mul(cq);
                        if (c1 != 0f) gv = VectorOps.exp(sv.sub(ms).sub(lz1)).mul(c1).add(gv);
                        gv.intoMemorySegment(g, (o + i) * 4L, ORDER);
                    }
                }
                float sum = VectorOps.sumLanes(acc);
                for (; i < len; i++) {
                    float sv = get(s, o + i);
                    float lq = (sv - ms) * invT - lzq, lp = (tb[i] - mt) * invT - lzp;
                    float q = VectorOps.exp(lq), p = VectorOps.exp(lp);
                    if (p > 0f) sum += p * (lp - lq);
                    if (g != null) set(g, o + i, (c1 != 0f ? VectorOps.exp(sv - ms - lz1) * c1 : 0f) + (q - p) * cq);
                }
                kl += sum;
            }
            return (float) kl;
        }

        float reverseKl(MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, long to, int v, float[] tb) {
            // pass B: RKL = Σ q (lq − max(lp, floor))
            double rkl = 0;
            for (int j0 = 0; j0 < v; j0 += BLOCK) {
                int len = Math.min(BLOCK, v - j0);
                loadTeacher(d, to, j0, len, tb);
                long o = so + j0;
                FloatVector acc = FloatVector.zero(SPECIES);
                int i = 0;
                for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                    FloatVector lq = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms).mul(invT).sub(lzq);
                    FloatVector lp = FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT).sub(lzp).max(LOG_FLOOR);
                    FloatVector q = VectorOps.exp(lq);
                    acc = acc.add(q.mul(lq.sub(lp)), q.compare(VectorOperators.GT, 0f));
                }
                float sum = VectorOps.sumLanes(acc);
                for (; i < len; i++) {
                    float lq = (get(s, o + i) - ms) * invT - lzq, lp = Math.max((tb[i] - mt) * invT - lzp, LOG_FLOOR);
                    float q = VectorOps.exp(lq);
                    if (q > 0f) sum += q * (lq - lp);
                }
                rkl += sum;
            }
            if (g == null) return (float) rkl;
            // pass C: dL/ds = cq · q (lq − lp − RKL) + CE
            float total = (float) rkl;
            for (int j0 = 0; j0 < v; j0 += BLOCK) {
                int len = Math.min(BLOCK, v - j0);
                loadTeacher(d, to, j0, len, tb);
                long o = so + j0;
                int i = 0;
                for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                    FloatVector sv = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER);
                    FloatVector lq = sv.sub(ms).mul(invT).sub(lzq);
                    FloatVector lp = FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT).sub(lzp).max(LOG_FLOOR);
                    FloatVector q = VectorOps.exp(lq);
                    FloatVector gv = q.mul(lq.sub(lp).sub(total)).mul(cq);
                    if (c1 != 0f) gv = VectorOps.exp(sv.sub(ms).sub(lz1)).mul(c1).add(gv);
                    gv.intoMemorySegment(g, (o + i) * 4L, ORDER);
                }
                for (; i < len; i++) {
                    float sv = get(s, o + i);
                    float lq = (sv - ms) * invT - lzq, lp = Math.max((tb[i] - mt) * invT - lzp, LOG_FLOOR);
                    float q = VectorOps.exp(lq);
                    set(g, o + i, (c1 != 0f ? VectorOps.exp(sv - ms - lz1) * c1 : 0f) + q * (lq - lp - total) * cq);
                }
            }
            return total;
        }

        float jsd(MemorySegment s, long so, MemorySegment g, TeacherTargets.Dense d, long to, int v, float[] tb, float beta) {
            // pass B: JSD and S = Σ q · (1−β) log(q/m), m = β p + (1−β) q
            double value = 0, sumQg = 0;
            float ob = 1f - beta;
            for (int j0 = 0; j0 < v; j0 += BLOCK) {
                int len = Math.min(BLOCK, v - j0);
                loadTeacher(d, to, j0, len, tb);
                long o = so + j0;
                FloatVector accV = FloatVector.zero(SPECIES), accS = FloatVector.zero(SPECIES);
                int i = 0;
                for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                    FloatVector lq = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(ms).mul(invT).sub(lzq);
                    FloatVector lp = FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT).sub(lzp);
                    FloatVector q = VectorOps.exp(lq), p = VectorOps.exp(lp);
                    FloatVector lm = VectorOps.log(p.mul(beta).add(q.mul(ob)));
                    VectorMask<Float> hasP = p.compare(VectorOperators.GT, 0f), hasQ = q.compare(VectorOperators.GT, 0f);
                    FloatVector gq = lq.sub(lm).mul(ob);
                    accV = accV.add(p.mul(lp.sub(lm)).mul(beta), hasP).add(q.mul(gq), hasQ);
                    accS = accS.add(q.mul(gq), hasQ);
                }
                float sv = VectorOps.sumLanes(accV), ss = VectorOps.sumLanes(accS);
                for (; i < len; i++) {
                    float lq = (get(s, o + i) - ms) * invT - lzq, lp = (tb[i] - mt) * invT - lzp;
                    float q = VectorOps.exp(lq), p = VectorOps.exp(lp);
                    float lm = VectorOps.log(p * beta + q * ob);
                    float gq = (lq - lm) * ob;
                    if (p > 0f) sv += p * (lp - lm) * beta;
                    if (q > 0f) {
                        sv += q * gq;
                        ss += q * gq;
                    }
                }
                value += sv;
                sumQg += ss;
            }
            if (g == null) return (float) value;
            // pass C: dL/ds = cq · q ((1−β) log(q/m) − S) + CE
            float sq = (float) sumQg;
            for (int j0 = 0; j0 < v; j0 += BLOCK) {
                int len = Math.min(BLOCK, v - j0);
                loadTeacher(d, to, j0, len, tb);
                long o = so + j0;
                int i = 0;
                for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                    FloatVector sv = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER);
                    FloatVector lq = sv.sub(ms).mul(invT).sub(lzq);
                    FloatVector lp = FloatVector.fromArray(SPECIES, tb, i).sub(mt).mul(invT).sub(lzp);
                    FloatVector q = VectorOps.exp(lq), p = VectorOps.exp(lp);
                    FloatVector lm = VectorOps.log(p.mul(beta).add(q.mul(ob)));
                    FloatVector gq = lq.sub(lm).mul(ob).blend(0f, q.compare(VectorOperators.LE, 0f));
                    FloatVector gv = q.mul(gq.sub(sq)).mul(cq);
                    if (c1 != 0f) gv = VectorOps.exp(sv.sub(ms).sub(lz1)).mul(c1).add(gv);
                    gv.intoMemorySegment(g, (o + i) * 4L, ORDER);
                }
                for (; i < len; i++) {
                    float sv = get(s, o + i);
                    float lq = (sv - ms) * invT - lzq, lp = (tb[i] - mt) * invT - lzp;
                    float q = VectorOps.exp(lq), p = VectorOps.exp(lp);
                    float gq = q > 0f ? (lq - VectorOps.log(p * beta + q * ob)) * ob : 0f;
                    set(g, o + i, (c1 != 0f ? VectorOps.exp(sv - ms - lz1) * c1 : 0f) + q * (gq - sq) * cq);
                }
            }
            return (float) value;
        }
    }

    // ---------------------------------------------------------------- sparse teachers

    /**
     * Writes dL/ds_j = c1 · softmax(s)_j + cq · q_j · w for every column (the gradient of a column
     * no sparse entry lists); the listed columns are fixed up by the caller.
     */
    private static void sharedGradient(MemorySegment s, long so, MemorySegment g, int v, Student st, float invT,
                                       float c1, float cqw) {
        for (int j0 = 0; j0 < v; j0 += BLOCK) {
            int len = Math.min(BLOCK, v - j0);
            long o = so + j0;
            int i = 0;
            for (int bound = SPECIES.loopBound(len); i < bound; i += LANES) {
                FloatVector x = FloatVector.fromMemorySegment(SPECIES, s, (o + i) * 4L, ORDER).sub(st.max());
                FloatVector gv = VectorOps.exp(x.mul(invT).sub(st.logZt())).mul(cqw);
                if (c1 != 0f) gv = VectorOps.exp(x.sub(st.logZ1())).mul(c1).add(gv);
                gv.intoMemorySegment(g, (o + i) * 4L, ORDER);
            }
            for (; i < len; i++) {
                float x = get(s, o + i) - st.max();
                set(g, o + i, (c1 != 0f ? VectorOps.exp(x - st.logZ1()) * c1 : 0f) + VectorOps.exp(x * invT - st.logZt()) * cqw);
            }
        }
    }

    private static void ensure(Scratch sc, int k, int v, boolean marks) {
        if (sc.q.length < k) {
            sc.q = new float[k];
            sc.lq = new float[k];
            sc.p = new float[k];
            sc.lp = new float[k];
        }
        if (marks && sc.marks.length < v) {
            sc.marks = new int[v];
            sc.markRow = 0;
        }
    }

    private static float topK(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.TopK t, int v,
                              Student st, float invT, DistillOptions o, float c1, float cq, Scratch sc) {
        int k = t.k();
        ensure(sc, k, v, true);
        int mark = ++sc.markRow; // marks[j] == mark ⇔ j listed in this row (no clearing between rows)
        if (mark == Integer.MAX_VALUE) {
            Arrays.fill(sc.marks, 0);
            sc.markRow = mark = 1;
        }
        long base = (long) r * k;
        boolean renormalize = o.topKMode() == DistillOptions.TopKMode.RENORMALIZE;
        double lse = get(t.logsumexp(), r), sumQ = 0, tailAtShard = 1, maxT = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < k; i++) {
            int id = t.ids().getAtIndex(I32, base + i);
            if (id < 0 || id >= t.vocab()) {
                throw new IllegalArgumentException("top-k id " + id + " at row " + r + ", entry " + i
                        + " is outside the teacher vocabulary [0, " + t.vocab() + ")");
            }
            if (sc.marks[id] == mark) {
                throw new IllegalArgumentException("top-k id " + id + " appears twice in row " + r);
            }
            sc.marks[id] = mark;
            float lq = (get(s, so + id) - st.max()) * invT - st.logZt();
            sc.lq[i] = lq;
            sc.q[i] = VectorOps.exp(lq);
            sumQ += sc.q[i];
            float logit = t.type().read(t.logits(), base + i);
            sc.p[i] = logit; // logits for now, probabilities below
            maxT = Math.max(maxT, logit);
            tailAtShard -= Math.exp(logit / (double) t.shardTemperature() - lse);
        }
        tailAtShard = Math.max(0, tailAtShard);
        boolean sameT = t.shardTemperature() == o.temperature();
        double renormZ = 0;
        if (renormalize || !sameT) {
            for (int i = 0; i < k; i++) renormZ += Math.exp((sc.p[i] - maxT) * invT);
        }
        boolean hasTail = k < v;
        // The teacher's tail is its mass outside the top-k within its own vocabulary: none when
        // renormalizing or when k covers that vocabulary (student padding columns hold no teacher mass).
        double pTail = renormalize || k == t.vocab() ? 0 : tailAtShard;
        double logRenormZ = Math.log(renormZ), logKept = Math.log(1 - tailAtShard);
        for (int i = 0; i < k; i++) {
            double lp;  // log p, in float64 from the stored logit (log of a rounded p would lose digits near p = 1)
            if (renormalize) lp = (sc.p[i] - maxT) * (double) invT - logRenormZ;
            else if (sameT) lp = sc.p[i] * (double) invT - lse;
            else lp = logKept + (sc.p[i] - maxT) * (double) invT - logRenormZ;
            sc.lp[i] = (float) lp;
            sc.p[i] = (float) Math.exp(lp);
        }
        double qTail = hasTail ? Math.max(0, 1 - sumQ) : 0;
        // per-category value and the gradient weight of the tail category ("w"), then fix-ups
        double value = 0, wTail, sumP = 1;
        double[] wListed = new double[k];
        switch (o.divergence()) {
            case Divergence.ForwardKl ignored -> {
                for (int i = 0; i < k; i++) {
                    if (sc.p[i] > 0) value += sc.p[i] * ((double) sc.lp[i] - sc.lq[i]);
                }
                double rho = qTail > 0 ? pTail / qTail : 0;
                if (pTail > 0) value += pTail * (Math.log(pTail) - Math.log(Math.max(qTail, Float.MIN_NORMAL)));
                // dL/ds_j = (1/T)(q_j ΣP − P_c q_j / Q_c): ΣP is 1 up to the rounding of stored logits
                // and logsumexp; using it keeps the gradient exact for the loss reported.
                sumP = pTail;
                for (int i = 0; i < k; i++) sumP += sc.p[i];
                wTail = sumP - rho;
            }
            case Divergence.ReverseKl ignored -> {
                double[] l = new double[k];
                double rkl = 0;
                for (int i = 0; i < k; i++) {
                    l[i] = sc.lq[i] - Math.max(sc.lp[i], LOG_FLOOR);
                    if (sc.q[i] > 0) rkl += sc.q[i] * l[i];
                }
                double lTail = qTail > 0 ? Math.log(qTail) - Math.max(pTail > 0 ? Math.log(pTail) : LOG_FLOOR, LOG_FLOOR) : 0;
                rkl += qTail * lTail;
                value = rkl;
                for (int i = 0; i < k; i++) wListed[i] = l[i] - rkl;
                wTail = lTail - rkl;
            }
            case Divergence.Jsd jsd -> {
                double b = jsd.beta();
                double[] gc = new double[k];
                double sumQg = 0;
                for (int i = 0; i < k; i++) {
                    double m = b * sc.p[i] + (1 - b) * sc.q[i];
                    if (sc.p[i] > 0) value += b * sc.p[i] * (sc.lp[i] - Math.log(m));
                    if (sc.q[i] > 0) {
                        gc[i] = (1 - b) * Math.log(sc.q[i] / m);
                        value += sc.q[i] * gc[i];
                        sumQg += sc.q[i] * gc[i];
                    }
                }
                double mTail = b * pTail + (1 - b) * qTail, gTail = 0;
                if (pTail > 0) value += b * pTail * Math.log(pTail / mTail);
                if (qTail > 0) {
                    gTail = (1 - b) * Math.log(qTail / mTail);
                    value += qTail * gTail;
                    sumQg += qTail * gTail;
                }
                for (int i = 0; i < k; i++) wListed[i] = gc[i] - sumQg;
                wTail = gTail - sumQg;
            }
        }
        if (g != null) {
            sharedGradient(s, so, g, v, st, invT, c1, (float) (cq * wTail));
            for (int i = 0; i < k; i++) {
                long idx = so + t.ids().getAtIndex(I32, base + i);
                double fix = o.divergence() instanceof Divergence.ForwardKl
                        ? cq * ((double) sc.q[i] * sumP - sc.p[i] - sc.q[i] * wTail)   // (q ΣP − p) in place of q·wTail
                        : cq * sc.q[i] * (wListed[i] - wTail);
                set(g, idx, (float) (get(g, idx) + fix));
            }
        }
        return (float) value;
    }

    private static float sampled(int r, MemorySegment s, long so, MemorySegment g, TeacherTargets.Sampled t, int v,
                                 Student st, float invT, float c1, float cq, Scratch sc) {
        int n = t.samples();
        ensure(sc, n, v, false);
        long base = (long) r * n;
        double weightSum = 0, crossEntropy = 0;
        for (int i = 0; i < n; i++) {
            int id = t.ids().getAtIndex(I32, base + i);
            float w = get(t.weights(), base + i);
            if (id < 0 || id >= t.vocab()) {
                throw new IllegalArgumentException("sampled id " + id + " at row " + r + ", sample " + i
                        + " is outside the teacher vocabulary [0, " + t.vocab() + ")");
            }
            if (!(w >= 0) || Float.isInfinite(w)) {
                throw new IllegalArgumentException("sampled weight " + w + " at row " + r + ", sample " + i + " is not a finite non-negative number");
            }
            float lq = (get(s, so + id) - st.max()) * invT - st.logZt();
            crossEntropy -= w * (double) lq;
            weightSum += w;
        }
        // H(p̂, q) = −Σ p̂ log q; dH/ds_j = (1/T)(q_j Σw − p̂_j)
        if (g != null) {
            sharedGradient(s, so, g, v, st, invT, c1, (float) (cq * weightSum));
            for (int i = 0; i < n; i++) {
                long idx = so + t.ids().getAtIndex(I32, base + i);
                set(g, idx, get(g, idx) - cq * get(t.weights(), base + i));
            }
        }
        return (float) crossEntropy;
    }
}
