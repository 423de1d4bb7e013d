package dev.distillery.runtime.distill;

import java.lang.foreign.MemorySegment;

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
        boolean backward = dHidden != null || dWeight != null;
        DistillSums total = DistillSums.zero();
        for (int r0 = 0; r0 < n; r0 += chunkRows) {
            int rows = Math.min(chunkRows, n - r0);
            MemorySegment h = hidden.asSlice(4L * r0 * d);
            kernels.gemm(false, true, rows, vocab, d, 1f, h, d, weight, d, 0f, logits, vocab);
            try {
                total = total.plus(kernels.distillLoss(logits, backward ? logits : null, teacher.rows(r0, r0 + rows),
                        labels == null ? null : labels.asSlice(4L * r0), null, null, rows, vocab, options, gradScale));
            } catch (BadRowException e) {
                throw e.shifted(r0);   // the row of the whole call, not of the chunk
            }
            if (dHidden != null) {
                kernels.gemm(false, false, rows, d, vocab, 1f, logits, vocab, weight, d, 1f, dHidden.asSlice(4L * r0 * d), d);
            }
            if (dWeight != null) {
                kernels.gemm(true, false, vocab, d, rows, 1f, logits, vocab, h, d, 1f, dWeight, d);
            }
        }
        return total;
    }
}
