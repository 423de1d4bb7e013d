package dev.distillery.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Supplier;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * A {@link Kernels} decorator that adds up wall time and calls per kernel, to see which kernels
 * dominate a training step ({@link StepProfile}). Composite kernels (linear) are timed as
 * themselves and not again as the GEMMs inside them. Memory and copies pass through untimed.
 * On a device (memory the host cannot read), each timed call is bracketed by waits for the
 * stream, so that its time is its device work plus its launches; the waits serialise host and
 * device, so the sum is an upper bound on the pipelined step.
 */
public final class TimedKernels implements Kernels {

    /** Total time and call count of one kernel. */
    public record Timing(long nanos, long calls) {
    }

    private final Kernels inner;
    private final boolean device;
    private final Map<String, long[]> totals = new LinkedHashMap<>();
    private int depth;

    public TimedKernels(Kernels inner) {
        this.inner = inner;
        this.device = !inner.hostAccessible();
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

    private <T> T time(String kernel, Supplier<T> call) {
        if (device && depth == 0) inner.synchronize();
        depth++;
        long t0 = System.nanoTime();
        try {
            return call.get();
        } finally {
            if (device && depth == 1) inner.synchronize();
            long dt = System.nanoTime() - t0;
            if (--depth == 0) {
                long[] acc = totals.computeIfAbsent(kernel, k -> new long[2]);
                acc[0] += dt;
                acc[1]++;
            }
        }
    }

    private void time(String kernel, Runnable call) {
        time(kernel, () -> {
            call.run();
            return null;
        });
    }

    @Override
    public Precision precision() {
        return inner.precision();
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
        time("copyFromHost", () -> inner.copyFromHost(dst, hostSrc, bytes));
    }

    @Override
    public void copyToHost(MemorySegment hostDst, MemorySegment src, long bytes) {
        time("copyToHost", () -> inner.copyToHost(hostDst, src, bytes));
    }

    @Override
    public void copyFromHostAsync(MemorySegment dst, MemorySegment hostSrc, long bytes) {
        time("copyFromHostAsync", () -> inner.copyFromHostAsync(dst, hostSrc, bytes));
    }

    @Override
    public void joinCopies() {
        inner.joinCopies();
    }

    @Override
    public void copy(MemorySegment dst, MemorySegment src, long bytes) {
        time("copy", () -> inner.copy(dst, src, bytes));
    }

    @Override
    public void synchronize() {
        time("synchronize", inner::synchronize);
    }

    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, int lda,
                     MemorySegment b, int ldb, float beta, MemorySegment c, int ldc) {
        time("gemm", () -> inner.gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc));
    }

    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, DType aType, int lda,
                     MemorySegment b, DType bType, int ldb, float beta, MemorySegment c, int ldc) {
        time("gemm", () -> inner.gemm(transA, transB, m, n, k, alpha, a, aType, lda, b, bType, ldb, beta, c, ldc));
    }

    @Override
    public boolean storesBf16Activations() {
        return inner.storesBf16Activations();
    }

    @Override
    public ConstantHold holdConstant(MemorySegment operand) {
        return inner.holdConstant(operand);
    }

    @Override
    public ConstantHold holdStepParameters(MemorySegment parameters) {
        return inner.holdStepParameters(parameters);
    }

    @Override
    public void gemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a,
                                   int lda, long strideA, MemorySegment b, int ldb, long strideB, float beta,
                                   MemorySegment c, int ldc, long strideC, int batch) {
        time("gemmStridedBatched", () -> inner.gemmStridedBatched(transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB,
                beta, c, ldc, strideC, batch));
    }

    @Override
    public void linearForward(MemorySegment out, MemorySegment inp, DType inpType, MemorySegment weight, MemorySegment bias,
                              int n, int c, int oc) {
        time("linearForward", () -> inner.linearForward(out, inp, inpType, weight, bias, n, c, oc));
    }

    @Override
    public void linearBackward(MemorySegment dinp, float dinpBeta, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                               MemorySegment inp, DType inpType, MemorySegment weight, int n, int c, int oc) {
        time("linearBackward", () -> inner.linearBackward(dinp, dinpBeta, dweight, dbias, dout, inp, inpType, weight, n, c, oc));
    }

    @Override
    public void projectionForward(MemorySegment out, MemorySegment x, DType xType, MemorySegment weight, MemorySegment bias,
                                  int n, int c, int v) {
        time("projectionForward", () -> inner.projectionForward(out, x, xType, weight, bias, n, c, v));
    }

    @Override
    public void projectionBackward(MemorySegment dx, float dxBeta, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                                   MemorySegment x, DType xType, MemorySegment weight, int n, int c, int v) {
        time("projectionBackward", () -> inner.projectionBackward(dx, dxBeta, dweight, dbias, dout, x, xType, weight, n, c, v));
    }

    @Override
    public void broadcastRows(MemorySegment out, MemorySegment row, int n, int c) {
        time("broadcastRows", () -> inner.broadcastRows(out, row, n, c));
    }

    @Override
    public void sumRows(MemorySegment acc, MemorySegment x, int n, int c) {
        time("sumRows", () -> inner.sumRows(acc, x, n, c));
    }

    @Override
    public void embeddingForward(MemorySegment out, MemorySegment tokens, MemorySegment hostTokens, MemorySegment wte, MemorySegment wpe,
                                 int b, int t, int c, int vocab) {
        time("embeddingForward", () -> inner.embeddingForward(out, tokens, hostTokens, wte, wpe, b, t, c, vocab));
    }

    @Override
    public void embeddingBackward(MemorySegment dwte, MemorySegment dwpe, MemorySegment dout, MemorySegment tokens, MemorySegment hostTokens,
                                  int b, int t, int c) {
        time("embeddingBackward", () -> inner.embeddingBackward(dwte, dwpe, dout, tokens, hostTokens, b, t, c));
    }

    @Override
    public void layerNormForward(MemorySegment out, DType outType, MemorySegment mean, MemorySegment rstd, MemorySegment inp,
                                 MemorySegment weight, MemorySegment bias, int n, int c) {
        time("layerNormForward", () -> inner.layerNormForward(out, outType, mean, rstd, inp, weight, bias, n, c));
    }

    @Override
    public void layerNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                                  MemorySegment inp, MemorySegment weight, MemorySegment mean, MemorySegment rstd,
                                  int n, int c) {
        time("layerNormBackward", () -> inner.layerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c));
    }

    @Override
    public void rmsNormForward(MemorySegment out, DType outType, MemorySegment rstd, MemorySegment inp, MemorySegment weight, int n, int c,
                               float eps) {
        time("rmsNormForward", () -> inner.rmsNormForward(out, outType, rstd, inp, weight, n, c, eps));
    }

    @Override
    public void rmsNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dout, MemorySegment inp,
                                MemorySegment weight, MemorySegment rstd, int n, int c) {
        time("rmsNormBackward", () -> inner.rmsNormBackward(dinp, dweight, dout, inp, weight, rstd, n, c));
    }

    @Override
    public void swiGluForward(MemorySegment out, DType outType, MemorySegment gate, MemorySegment up, long n) {
        time("swiGluForward", () -> inner.swiGluForward(out, outType, gate, up, n));
    }

    @Override
    public void swiGluBackward(MemorySegment dgate, MemorySegment dup, MemorySegment dout, MemorySegment gate, MemorySegment up, long n) {
        time("swiGluBackward", () -> inner.swiGluBackward(dgate, dup, dout, gate, up, n));
    }

    @Override
    public void ropeForward(MemorySegment out, MemorySegment inp, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        time("ropeForward", () -> inner.ropeForward(out, inp, cosSin, b, t, heads, hs, rowStride, offset));
    }

    @Override
    public void ropeBackward(MemorySegment dinp, MemorySegment dout, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        time("ropeBackward", () -> inner.ropeBackward(dinp, dout, cosSin, b, t, heads, hs, rowStride, offset));
    }

    @Override
    public void repeatHeadsForward(MemorySegment out, int outStride, int outOffset, MemorySegment inp, int inStride, int inOffset,
                                   int rows, int heads, int group, int hs) {
        time("repeatHeadsForward", () -> inner.repeatHeadsForward(out, outStride, outOffset, inp, inStride, inOffset, rows, heads, group, hs));
    }

    @Override
    public void repeatHeadsBackward(MemorySegment dinp, int inStride, int inOffset, MemorySegment dout, int outStride, int outOffset,
                                    int rows, int heads, int group, int hs) {
        time("repeatHeadsBackward", () -> inner.repeatHeadsBackward(dinp, inStride, inOffset, dout, outStride, outOffset, rows, heads, group, hs));
    }

    @Override
    public void geluForward(MemorySegment out, DType outType, MemorySegment inp, long n) {
        time("geluForward", () -> inner.geluForward(out, outType, inp, n));
    }

    @Override
    public void geluBackward(MemorySegment dinp, MemorySegment inp, MemorySegment dout, long n) {
        time("geluBackward", () -> inner.geluBackward(dinp, inp, dout, n));
    }

    @Override
    public void geluLinearBackward(MemorySegment dinp, float dinpBeta, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                                   MemorySegment inp, MemorySegment weight, MemorySegment gelu, DType geluType, MemorySegment dgelu,
                                   int n, int c, int oc) {
        time("geluLinearBackward", () -> inner.geluLinearBackward(dinp, dinpBeta, dweight, dbias, dout, inp, weight, gelu, geluType, dgelu, n, c, oc));
    }

    @Override
    public void attentionDecode(MemorySegment out, MemorySegment scores, MemorySegment q, MemorySegment keys, MemorySegment values,
                                int b, int len, int maxLen, int nh, int kvh, int hs) {
        time("attentionDecode", () -> inner.attentionDecode(out, scores, q, keys, values, b, len, maxLen, nh, kvh, hs));
    }

    @Override
    public void attentionForward(MemorySegment out, DType outType, MemorySegment att, MemorySegment qkv, int b, int t, int c, int nh) {
        time("attentionForward", () -> inner.attentionForward(out, outType, att, qkv, b, t, c, nh));
    }

    @Override
    public void attentionBackwardInBands(MemorySegment dqkv, float dqkvBeta, MemorySegment dout, MemorySegment qkv, int b, int t, int c, int nh) {
        time("attentionBackwardInBands", () -> inner.attentionBackwardInBands(dqkv, dqkvBeta, dout, qkv, b, t, c, nh));
    }

    @Override
    public void attentionBackward(MemorySegment dqkv, float dqkvBeta, MemorySegment datt, MemorySegment dout, MemorySegment qkv,
                                  MemorySegment att, int b, int t, int c, int nh) {
        time("attentionBackward", () -> inner.attentionBackward(dqkv, dqkvBeta, datt, dout, qkv, att, b, t, c, nh));
    }

    @Override
    public void residualForward(MemorySegment out, MemorySegment a, MemorySegment b, long n) {
        time("residualForward", () -> inner.residualForward(out, a, b, n));
    }

    @Override
    public void accumulate(MemorySegment dst, MemorySegment src, long n) {
        time("accumulate", () -> inner.accumulate(dst, src, n));
    }

    @Override
    public int softmaxCrossEntropy(MemorySegment losses, MemorySegment logits, MemorySegment targets, int n, int v,
                                   int ignoreIndex, boolean writeGradient, float gradScale) {
        return time("softmaxCrossEntropy", () -> inner.softmaxCrossEntropy(losses, logits, targets, n, v, ignoreIndex, writeGradient,
                gradScale));
    }

    @Override
    public void softmaxCrossEntropyRows(MemorySegment losses, MemorySegment logits, MemorySegment targets, int n, int v,
                                        int ignoreIndex, boolean writeGradient, float gradScale) {
        time("softmaxCrossEntropy", () -> inner.softmaxCrossEntropyRows(losses, logits, targets, n, v, ignoreIndex, writeGradient,
                gradScale));
    }

    @Override
    public void logsumexpRows(MemorySegment out, MemorySegment x, int n, int v, float scale) {
        time("logsumexpRows", () -> inner.logsumexpRows(out, x, n, v, scale));
    }

    @Override
    public void argmaxRows(MemorySegment out, MemorySegment x, int n, int v) {
        time("argmaxRows", () -> inner.argmaxRows(out, x, n, v));
    }

    @Override
    public void sampleRows(MemorySegment out, MemorySegment x, MemorySegment u, int n, int v, double temperature, int topK) {
        time("sampleRows", () -> inner.sampleRows(out, x, u, n, v, temperature, topK));
    }

    @Override
    public void featureDistance(FeatureDistance distance, MemorySegment rowLoss, MemorySegment grad, MemorySegment student,
                                MemorySegment teacher, DType teacherType, int n, int d, float gradScale) {
        time("featureDistance", () -> inner.featureDistance(distance, rowLoss, grad, student, teacher, teacherType, n, d, gradScale));
    }

    @Override
    public DistillSums distillLoss(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                                   MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab,
                                   DistillOptions options, float gradScale) {
        return time("distillLoss", () -> inner.distillLoss(student, grad, teacher, labels, rowCe, rowDivergence, n, vocab, options,
                gradScale));
    }

    @Override
    public void distillLossRows(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                                MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab, DistillOptions options,
                                float gradScale) {
        time("distillLoss", () -> inner.distillLossRows(student, grad, teacher, labels, rowCe, rowDivergence, n, vocab, options,
                gradScale));
    }

    @Override
    public void adamW(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, long n, float lr,
                      float beta1, float beta2, float eps, float weightDecay, int step) {
        time("adamW", () -> inner.adamW(params, grads, m, v, n, lr, beta1, beta2, eps, weightDecay, step));
    }

    @Override
    public void adamWSpans(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, ParameterSpans spans,
                           float gradScale, float lr, float beta1, float beta2, float eps, int step) {
        time("adamW", () -> inner.adamWSpans(params, grads, m, v, spans, gradScale, lr, beta1, beta2, eps, step));
    }

    @Override
    public double sumOfSquares(MemorySegment x, long n) {
        return time("sumOfSquares", () -> inner.sumOfSquares(x, n));
    }

    @Override
    public void scale(MemorySegment x, float s, long n) {
        time("scale", () -> inner.scale(x, s, n));
    }

    @Override
    public void fill(MemorySegment x, float value, long n) {
        time("fill", () -> inner.fill(x, value, n));
    }

    @Override
    public void close() {
        inner.close();
    }
}
