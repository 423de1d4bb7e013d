package dev.distillery.kernels;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Map;

import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * A {@link Kernels} decorator that adds up wall time and calls per kernel, to see which kernels
 * dominate a training step ({@code bench}'s {@code StepProfile}, a trainer's profile report).
 * Composite kernels (linear) are timed as themselves and not again as the GEMMs inside them.
 */
public final class TimedKernels implements Kernels {

    /** Total time and call count of one kernel. */
    public record Timing(long nanos, long calls) {
    }

    private final Kernels inner;
    private final Map<String, long[]> totals = new LinkedHashMap<>();
    private int depth;

    public TimedKernels(Kernels inner) {
        this.inner = inner;
    }

    /** Per kernel: time and calls since construction or the last {@link #reset()}, in first-call order. */
    public Map<String, Timing> timings() {
        Map<String, Timing> out = new LinkedHashMap<>();
        totals.forEach((k, v) -> out.put(k, new Timing(v[0], v[1])));
        return out;
    }

    public void reset() {
        totals.clear();
    }

    private long begin() {
        depth++;
        return System.nanoTime();
    }

    private void end(String kernel, long t0) {
        long dt = System.nanoTime() - t0;
        if (--depth == 0) {
            long[] acc = totals.computeIfAbsent(kernel, k -> new long[2]);
            acc[0] += dt;
            acc[1]++;
        }
    }

    @Override
    public String describe() {
        return inner.describe() + " (timed)";
    }

    @Override
    public boolean hostAccessible() {
        return inner.hostAccessible();
    }

    @Override
    public MemorySegment allocate(Arena owner, long bytes) {
        return inner.allocate(owner, bytes);
    }

    @Override
    public MemorySegment allocateStaging(Arena owner, long bytes) {
        return inner.allocateStaging(owner, bytes);
    }

    @Override
    public void copyFromHost(MemorySegment dst, MemorySegment hostSrc, long bytes) {
        long t0 = begin();
        inner.copyFromHost(dst, hostSrc, bytes);
        end("copyFromHost", t0);
    }

    @Override
    public void copyToHost(MemorySegment hostDst, MemorySegment src, long bytes) {
        long t0 = begin();
        inner.copyToHost(hostDst, src, bytes);
        end("copyToHost", t0);
    }

    @Override
    public void copyFromHostAsync(MemorySegment dst, MemorySegment hostSrc, long bytes) {
        long t0 = begin();
        inner.copyFromHostAsync(dst, hostSrc, bytes);
        end("copyFromHostAsync", t0);
    }

    @Override
    public void joinCopies() {
        inner.joinCopies();
    }

    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, int lda,
                     MemorySegment b, int ldb, float beta, MemorySegment c, int ldc) {
        long t0 = begin();
        inner.gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        end("gemm", t0);
    }

    @Override
    public void gemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a,
                                   int lda, long strideA, MemorySegment b, int ldb, long strideB, float beta,
                                   MemorySegment c, int ldc, long strideC, int batch) {
        long t0 = begin();
        inner.gemmStridedBatched(transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);
        end("gemmStridedBatched", t0);
    }

    @Override
    public void linearForward(MemorySegment out, MemorySegment inp, MemorySegment weight, MemorySegment bias,
                              int n, int c, int oc) {
        long t0 = begin();
        inner.linearForward(out, inp, weight, bias, n, c, oc);
        end("linearForward", t0);
    }

    @Override
    public void linearBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                               MemorySegment inp, MemorySegment weight, int n, int c, int oc) {
        long t0 = begin();
        inner.linearBackward(dinp, dweight, dbias, dout, inp, weight, n, c, oc);
        end("linearBackward", t0);
    }

    @Override
    public void broadcastRows(MemorySegment out, MemorySegment row, int n, int c) {
        long t0 = begin();
        inner.broadcastRows(out, row, n, c);
        end("broadcastRows", t0);
    }

    @Override
    public void sumRows(MemorySegment acc, MemorySegment x, int n, int c) {
        long t0 = begin();
        inner.sumRows(acc, x, n, c);
        end("sumRows", t0);
    }

    @Override
    public void embeddingForward(MemorySegment out, MemorySegment tokens, MemorySegment wte, MemorySegment wpe,
                                 int b, int t, int c, int vocab) {
        long t0 = begin();
        inner.embeddingForward(out, tokens, wte, wpe, b, t, c, vocab);
        end("embeddingForward", t0);
    }

    @Override
    public void embeddingBackward(MemorySegment dwte, MemorySegment dwpe, MemorySegment dout, MemorySegment tokens,
                                  int b, int t, int c) {
        long t0 = begin();
        inner.embeddingBackward(dwte, dwpe, dout, tokens, b, t, c);
        end("embeddingBackward", t0);
    }

    @Override
    public void layerNormForward(MemorySegment out, MemorySegment mean, MemorySegment rstd, MemorySegment inp,
                                 MemorySegment weight, MemorySegment bias, int n, int c) {
        long t0 = begin();
        inner.layerNormForward(out, mean, rstd, inp, weight, bias, n, c);
        end("layerNormForward", t0);
    }

    @Override
    public void layerNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                                  MemorySegment inp, MemorySegment weight, MemorySegment mean, MemorySegment rstd,
                                  int n, int c) {
        long t0 = begin();
        inner.layerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c);
        end("layerNormBackward", t0);
    }

    @Override
    public void geluForward(MemorySegment out, MemorySegment inp, long n) {
        long t0 = begin();
        inner.geluForward(out, inp, n);
        end("geluForward", t0);
    }

    @Override
    public void geluBackward(MemorySegment dinp, MemorySegment inp, MemorySegment dout, long n) {
        long t0 = begin();
        inner.geluBackward(dinp, inp, dout, n);
        end("geluBackward", t0);
    }

    @Override
    public void attentionForward(MemorySegment out, MemorySegment att, MemorySegment qkv, int b, int t, int c, int nh) {
        long t0 = begin();
        inner.attentionForward(out, att, qkv, b, t, c, nh);
        end("attentionForward", t0);
    }

    @Override
    public void attentionBackward(MemorySegment dqkv, MemorySegment datt, MemorySegment dout, MemorySegment qkv,
                                  MemorySegment att, int b, int t, int c, int nh) {
        long t0 = begin();
        inner.attentionBackward(dqkv, datt, dout, qkv, att, b, t, c, nh);
        end("attentionBackward", t0);
    }

    @Override
    public void residualForward(MemorySegment out, MemorySegment a, MemorySegment b, long n) {
        long t0 = begin();
        inner.residualForward(out, a, b, n);
        end("residualForward", t0);
    }

    @Override
    public void accumulate(MemorySegment dst, MemorySegment src, long n) {
        long t0 = begin();
        inner.accumulate(dst, src, n);
        end("accumulate", t0);
    }

    @Override
    public int softmaxCrossEntropy(MemorySegment losses, MemorySegment logits, MemorySegment targets, int n, int v,
                                   int ignoreIndex, boolean writeGradient, float gradScale) {
        long t0 = begin();
        int r = inner.softmaxCrossEntropy(losses, logits, targets, n, v, ignoreIndex, writeGradient, gradScale);
        end("softmaxCrossEntropy", t0);
        return r;
    }

    @Override
    public DistillSums distillLoss(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                                   MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab,
                                   DistillOptions options, float gradScale) {
        long t0 = begin();
        DistillSums r = inner.distillLoss(student, grad, teacher, labels, rowCe, rowDivergence, n, vocab, options, gradScale);
        end("distillLoss", t0);
        return r;
    }

    @Override
    public void adamW(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, long n, float lr,
                      float beta1, float beta2, float eps, float weightDecay, int step) {
        long t0 = begin();
        inner.adamW(params, grads, m, v, n, lr, beta1, beta2, eps, weightDecay, step);
        end("adamW", t0);
    }

    @Override
    public double sumOfSquares(MemorySegment x, long n) {
        long t0 = begin();
        double r = inner.sumOfSquares(x, n);
        end("sumOfSquares", t0);
        return r;
    }

    @Override
    public void scale(MemorySegment x, float s, long n) {
        long t0 = begin();
        inner.scale(x, s, n);
        end("scale", t0);
    }

    @Override
    public void fill(MemorySegment x, float value, long n) {
        long t0 = begin();
        inner.fill(x, value, n);
        end("fill", t0);
    }

    @Override
    public void close() {
        inner.close();
    }
}
