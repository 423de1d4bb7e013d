package dev.distillery.runtime.distill;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.List;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.BadRowException;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;

/**
 * The LM head and the distillation loss fused over chunks of rows, so the (n, vocab) logits never
 * exist whole. For each chunk of rows [r0, r1):
 * <pre>
 *   logits = h[r0:r1] · Wᵀ                     (chunk, V)   one GEMM into a (chunk, V) buffer
 *   loss, dlogits = fused loss (in place)      (chunk, V)
 *   dh[r0:r1] += dlogits · W                   (chunk, d)
 *   dW        += dlogitsᵀ · h[r0:r1]            (V, d)
 * </pre>
 * h is (n, d), W is (V, d) (the LM head). The teacher's targets are asked for one chunk at a
 * time ({@link TeacherRows}), so an in-process teacher's logits exist one chunk at a time too.
 * The hard-label step ({@link #crossEntropy}) runs the same loop with the fused softmax
 * cross-entropy as the chunk's loss. Extra memory: chunk × V floats.
 */
public final class ChunkedLinearDistillLoss {

    private ChunkedLinearDistillLoss() {
    }

    /** The logits one chunk holds unless a config says otherwise: 32 MiB, 256 rows of a 32,000 vocabulary. */
    private static final long DEFAULT_CHUNK_BYTES = 32L << 20;

    /**
     * Rows per chunk so that one chunk's logits fit in the default 32 MiB (at least 1 row), a
     * multiple of 32 from 32 rows on: the chunk's rows are the k of its weight-gradient GEMM and the
     * m of the other two, and the bf16 GEMM pads both to 32 (262 rows would compute 288).
     */
    public static int defaultChunkRows(int vocab) {
        int rows = (int) Math.max(1, Math.min(Integer.MAX_VALUE, DEFAULT_CHUNK_BYTES / (4L * vocab)));
        return rows >= 32 ? rows / 32 * 32 : rows;
    }

    /**
     * Loss sums over all n rows; when {@code dHidden}/{@code dWeight} are non-null, accumulates
     * {@code gradScale · d(Σ_rows total)/dh} and {@code /dW} into them.
     *
     * @param logits     scratch of at least chunkRows × vocab floats
     * @param labels     int32 (n) where the kernels read them, or null
     * @param hostLabels the same n labels on the host (null when labels is), checked here without
     *                   a read back from a device
     * @param rowLosses  scratch of at least 2n floats: each row's CE, then each row's divergence
     */
    public static DistillSums run(Kernels kernels, MemorySegment hidden, MemorySegment weight,
                                  MemorySegment dHidden, MemorySegment dWeight, TeacherRows teacher, MemorySegment labels,
                                  int[] hostLabels, int n, int d, int vocab, DistillOptions options, float gradScale,
                                  int chunkRows, MemorySegment logits, MemorySegment rowLosses) {
        return chunks(kernels, hidden, weight, dHidden, dWeight, List.of(teacher), new float[]{1f}, labels, hostLabels, n, d, vocab, options,
                gradScale, chunkRows, logits, logits, null, rowLosses);
    }

    /**
     * As above against the weighted mean of several teachers' losses (TeacherEnsemble's
     * MEAN_OF_LOSSES): per chunk, teacher i's loss with gradient factor w_i · gradScale, the
     * gradients summed in {@code gradSum} (teacher 1 writes it, the others go through
     * {@code gradOne} and are added), then one backward through the LM head. The logits stay
     * intact while the teachers read them. Extra memory: two more (chunk, vocab) buffers, and
     * rowLosses of 2n floats a teacher.
     */
    public static DistillSums runMean(Kernels kernels, MemorySegment hidden, MemorySegment weight, MemorySegment dHidden,
                                      MemorySegment dWeight, List<TeacherRows> teachers, float[] weights, MemorySegment labels,
                                      int[] hostLabels, int n, int d, int vocab, DistillOptions options, float gradScale, int chunkRows,
                                      MemorySegment logits, MemorySegment gradSum, MemorySegment gradOne, MemorySegment rowLosses) {
        return chunks(kernels, hidden, weight, dHidden, dWeight, teachers, weights, labels, hostLabels, n, d, vocab, options, gradScale,
                chunkRows, logits, gradSum, gradOne, rowLosses);
    }

    /**
     * The chunk loop of both: logits of each chunk, each teacher's fused loss over them with its
     * gradient into {@code gradSum} (the first; in place when gradSum is the logits) or
     * {@code gradOne} then added, the LM head's backward once. The labels are checked once, before
     * the first chunk, on the host; each chunk's rows go to rowLosses and are added up after the last
     * (Kernels.distillLossRows), so a device backend reads its losses back once a call, not once a
     * chunk.
     */
    private static DistillSums chunks(Kernels kernels, MemorySegment hidden, MemorySegment weight, MemorySegment dHidden,
                                      MemorySegment dWeight, List<TeacherRows> teachers, float[] weights, MemorySegment labels,
                                      int[] lab, int n, int d, int vocab, DistillOptions options, float gradScale, int chunkRows,
                                      MemorySegment logits, MemorySegment gradSum, MemorySegment gradOne, MemorySegment rowLosses) {
        boolean backward = dHidden != null || dWeight != null;
        long perTeacher = 2L * n;
        if (rowLosses.byteSize() < 4L * perTeacher * teachers.size()) {
            throw new IllegalArgumentException("row-loss scratch holds " + rowLosses.byteSize() + " bytes; " + teachers.size()
                    + " teacher(s) of " + n + " rows need " + 4L * perTeacher * teachers.size());
        }
        if ((labels == null) != (lab == null)) throw new IllegalArgumentException("labels and their host copy come together");
        if (lab != null) options.checkLabels(lab, n, vocab);
        overChunks(kernels, hidden, weight, dHidden, dWeight, n, d, vocab, chunkRows, logits, gradSum, (r0, rows) -> {
            for (int i = 0; i < teachers.size(); i++) {
                MemorySegment grad = !backward ? null : i == 0 ? gradSum : gradOne;
                MemorySegment ce = rowLosses.asSlice(4L * (i * perTeacher + r0), 4L * rows);
                MemorySegment div = rowLosses.asSlice(4L * (i * perTeacher + n + r0), 4L * rows);
                try {
                    kernels.distillLossRows(logits, grad, teachers.get(i).rows(r0, r0 + rows), labels == null ? null : labels.asSlice(4L * r0),
                            ce, div, rows, vocab, options, weights[i] * gradScale);
                } catch (BadRowException e) {
                    throw e.shifted(r0);   // the row of the whole call, not of the chunk
                }
                if (backward && i > 0) kernels.accumulate(gradSum, gradOne, (long) rows * vocab);
            }
        });
        float[] all;
        try (Arena host = Arena.ofConfined()) {
            all = kernels.hostView(rowLosses, 4L * perTeacher * teachers.size(), host).toArray(ValueLayout.JAVA_FLOAT);
        }
        DistillSums total = DistillSums.zero();
        for (int i = 0; i < teachers.size(); i++) {
            float[] ce = Arrays.copyOfRange(all, (int) (i * perTeacher), (int) (i * perTeacher + n));
            float[] div = Arrays.copyOfRange(all, (int) (i * perTeacher + n), (int) ((i + 1) * perTeacher));
            DistillSums sums = DistillSums.ofRows(ce, div, lab, n, options);
            total = total.plus(new DistillSums(sums.total() * weights[i], sums.ce() * weights[i], sums.divergence() * weights[i],
                    i == 0 ? sums.rows() : 0));
        }
        return total;
    }

    /**
     * The hard-label loss through the chunked LM head: {@code losses[r] = −log softmax(h[r] · Wᵀ)[targets[r]]}
     * (0 where the target is {@code ignoreIndex}), and, when {@code dHidden}/{@code dWeight} are
     * non-null, {@code gradScale · d(Σ_rows losses)/dh} and {@code /dW} accumulated into them. The
     * fused cross-entropy writes each chunk's gradient over its logits, as it does over whole logits.
     * Targets are checked by the caller, once for all chunks (Kernels.softmaxCrossEntropyRows: a
     * device backend reads nothing back per chunk).
     *
     * @param logits scratch of at least min(chunkRows, n) × vocab floats
     * @param losses (n) floats
     */
    public static void crossEntropy(Kernels kernels, MemorySegment hidden, MemorySegment weight, MemorySegment dHidden,
                                    MemorySegment dWeight, MemorySegment targets, MemorySegment losses, int n, int d, int vocab,
                                    int ignoreIndex, float gradScale, int chunkRows, MemorySegment logits) {
        boolean backward = dHidden != null || dWeight != null;
        overChunks(kernels, hidden, weight, dHidden, dWeight, n, d, vocab, chunkRows, logits, logits, (r0, rows) ->
                kernels.softmaxCrossEntropyRows(losses.asSlice(4L * r0), logits, targets.asSlice(4L * r0), rows, vocab, ignoreIndex,
                        backward, gradScale));
    }

    /** A chunk's loss over the logits of rows [r0, r0 + rows), its gradient written where the loop reads it. */
    private interface ChunkLoss {
        void apply(int r0, int rows);
    }

    /** logits = h · Wᵀ per chunk, the chunk's loss, then dh += grad · W and dW += gradᵀ · h. */
    private static void overChunks(Kernels kernels, MemorySegment hidden, MemorySegment weight, MemorySegment dHidden,
                                   MemorySegment dWeight, int n, int d, int vocab, int chunkRows, MemorySegment logits,
                                   MemorySegment grad, ChunkLoss loss) {
        if (chunkRows < 1) throw new IllegalArgumentException("chunk rows must be >= 1, got " + chunkRows);
        if (logits.byteSize() < 4L * Math.min(chunkRows, n) * vocab) {
            throw new IllegalArgumentException("logit scratch holds " + logits.byteSize() + " bytes; " + Math.min(chunkRows, n)
                    + " rows of vocab " + vocab + " need " + 4L * Math.min(chunkRows, n) * vocab);
        }
        try (Kernels.ConstantHold unchanged = kernels.holdConstant(weight)) {   // W is the same in every chunk
            for (int r0 = 0; r0 < n; r0 += chunkRows) {
                int rows = Math.min(chunkRows, n - r0);
                MemorySegment h = hidden.asSlice(4L * r0 * d);
                kernels.projectionForward(logits, h, DType.F32, weight, null, rows, d, vocab);
                loss.apply(r0, rows);
                if (dHidden == null && dWeight == null) continue;
                kernels.projectionBackward(dHidden == null ? null : dHidden.asSlice(4L * r0 * d), 1f, dWeight, null,
                        grad, h, DType.F32, weight, rows, d, vocab);
            }
        }
    }
}