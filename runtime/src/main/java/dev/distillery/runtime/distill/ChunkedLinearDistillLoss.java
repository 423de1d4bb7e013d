package dev.distillery.runtime.distill;

import java.lang.foreign.MemorySegment;
import java.util.List;

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
 * Extra memory: chunk × V floats.
 */
public final class ChunkedLinearDistillLoss {

    private ChunkedLinearDistillLoss() {
    }

    /** Rows per chunk so that one chunk's logits fit in {@code budgetBytes} (at least 1 row). */
    public static int chunkRowsFor(long budgetBytes, int vocab) {
        return (int) Math.max(1, Math.min(Integer.MAX_VALUE, budgetBytes / (4L * vocab)));
    }

    /**
     * Loss sums over all n rows; when {@code dHidden}/{@code dWeight} are non-null, accumulates
     * {@code gradScale · d(Σ_rows total)/dh} and {@code /dW} into them.
     *
     * @param logits scratch of at least chunkRows × vocab floats
     * @param labels int32 (n) or null
     */
    public static DistillSums run(Kernels kernels, MemorySegment hidden, MemorySegment weight,
                                  MemorySegment dHidden, MemorySegment dWeight, TeacherRows teacher, MemorySegment labels,
                                  int n, int d, int vocab, DistillOptions options, float gradScale,
                                  int chunkRows, MemorySegment logits) {
        if (chunkRows < 1) throw new IllegalArgumentException("chunk rows must be >= 1, got " + chunkRows);
        if (logits.byteSize() < 4L * Math.min(chunkRows, n) * vocab) {
            throw new IllegalArgumentException("logit scratch holds " + logits.byteSize() + " bytes; " + Math.min(chunkRows, n)
                    + " rows of vocab " + vocab + " need " + 4L * Math.min(chunkRows, n) * vocab);
        }
        return chunks(kernels, hidden, weight, dHidden, dWeight, List.of(teacher), new float[]{1f}, labels, n, d, vocab, options, gradScale,
                chunkRows, logits, logits, null);
    }

    /**
     * As above against the weighted mean of several teachers' losses (TeacherEnsemble's
     * MEAN_OF_LOSSES): per chunk, teacher i's loss with gradient factor w_i · gradScale, the
     * gradients summed in {@code gradSum} (teacher 1 writes it, the others go through
     * {@code gradOne} and are added), then one backward through the LM head. The logits stay
     * intact while the teachers read them. Extra memory: two more (chunk, vocab) buffers.
     */
    public static DistillSums runMean(Kernels kernels, MemorySegment hidden, MemorySegment weight, MemorySegment dHidden,
                                      MemorySegment dWeight, List<TeacherRows> teachers, float[] weights, MemorySegment labels,
                                      int n, int d, int vocab, DistillOptions options, float gradScale, int chunkRows,
                                      MemorySegment logits, MemorySegment gradSum, MemorySegment gradOne) {
        return chunks(kernels, hidden, weight, dHidden, dWeight, teachers, weights, labels, n, d, vocab, options, gradScale, chunkRows, logits,
                gradSum, gradOne);
    }

    /**
     * The chunk loop of both: logits of each chunk, each teacher's fused loss over them with its
     * gradient into {@code gradSum} (the first; in place when gradSum is the logits) or
     * {@code gradOne} then added, the LM head's backward once.
     */
    private static DistillSums chunks(Kernels kernels, MemorySegment hidden, MemorySegment weight, MemorySegment dHidden,
                                      MemorySegment dWeight, List<TeacherRows> teachers, float[] weights, MemorySegment labels,
                                      int n, int d, int vocab, DistillOptions options, float gradScale, int chunkRows,
                                      MemorySegment logits, MemorySegment gradSum, MemorySegment gradOne) {
        boolean backward = dHidden != null || dWeight != null;
        DistillSums total = DistillSums.zero();
        for (int r0 = 0; r0 < n; r0 += chunkRows) {
            int rows = Math.min(chunkRows, n - r0);
            MemorySegment h = hidden.asSlice(4L * r0 * d);
            kernels.gemm(false, true, rows, vocab, d, 1f, h, d, weight, d, 0f, logits, vocab);
            for (int i = 0; i < teachers.size(); i++) {
                MemorySegment grad = !backward ? null : i == 0 ? gradSum : gradOne;
                DistillSums sums;
                try {
                    sums = kernels.distillLoss(logits, grad, teachers.get(i).rows(r0, r0 + rows), labels == null ? null : labels.asSlice(4L * r0),
                            null, null, rows, vocab, options, weights[i] * gradScale);
                } catch (BadRowException e) {
                    throw e.shifted(r0);   // the row of the whole call, not of the chunk
                }
                total = total.plus(new DistillSums(sums.total() * weights[i], sums.ce() * weights[i], sums.divergence() * weights[i],
                        i == 0 ? sums.rows() : 0));
                if (backward && i > 0) kernels.accumulate(gradSum, gradOne, (long) rows * vocab);
            }
            if (dHidden != null) {
                kernels.gemm(false, false, rows, d, vocab, 1f, gradSum, vocab, weight, d, 1f, dHidden.asSlice(4L * r0 * d), d);
            }
            if (dWeight != null) {
                kernels.gemm(true, false, vocab, d, rows, 1f, gradSum, vocab, h, d, 1f, dWeight, d);
            }
        }
        return total;
    }
}