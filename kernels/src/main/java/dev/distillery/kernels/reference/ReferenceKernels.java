package dev.distillery.kernels.reference;

import dev.distillery.kernels.distill.FeatureDistance;

/**
 * The float64 reference of every kernel in {@code Kernels}: plain loops over {@code double[]},
 * written for obviousness, never speed. Tests and {@code selftest} hold every backend to it; its
 * own backward passes are checked against central finite differences of its forward passes.
 * Shapes and semantics are exactly those of the {@code Kernels} method of the same name
 * (backward methods accumulate).
 */
public final class ReferenceKernels {

    public static final double LAYERNORM_EPS = 1e-5;
    private static final double GELU_SCALE = Math.sqrt(2.0 / Math.PI);

    private ReferenceKernels() {
    }

    /**
     * {@code x} as the fp32 the kernels receive, rounded to bf16 (the operands of bf16 mixed
     * precision's GEMMs): to nearest even, subnormals to zero, NaN kept. Twin of {@code to_bf16}
     * (cpu/src/main/c/bf16_gemm.c) and {@code ops_round_to_bf16} (transformer_ops.cu).
     */
    public static double roundToBf16(double x) {
        int u = Float.floatToRawIntBits((float) x);
        if ((u & 0x7fffffff) > 0x7f800000) return Double.NaN;
        if ((u & 0x7f800000) == 0) return (u & 0x80000000) != 0 ? -0.0 : 0.0;
        return Float.intBitsToFloat((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000);
    }

    /** Every element of {@code x} through {@link #roundToBf16}. */
    public static double[] roundToBf16(double[] x) {
        double[] r = new double[x.length];
        for (int i = 0; i < x.length; i++) r[i] = roundToBf16(x[i]);
        return r;
    }

    /** C(m,n) = alpha op(A) op(B) + beta C, row-major with leading dimensions. */
    public static void gemm(boolean transA, boolean transB, int m, int n, int k, double alpha,
                            double[] a, int lda, double[] b, int ldb, double beta, double[] c, int ldc) {
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    double av = transA ? a[p * lda + i] : a[i * lda + p];
                    double bv = transB ? b[j * ldb + p] : b[p * ldb + j];
                    s += av * bv;
                }
                c[i * ldc + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * ldc + j]);
            }
        }
    }

    /** out(n,oc) = inp(n,c) · weight(c,oc) + bias(oc); bias may be null. */
    public static void linearForward(double[] out, double[] inp, double[] weight, double[] bias, int n, int c, int oc) {
        for (int r = 0; r < n; r++) {
            for (int o = 0; o < oc; o++) {
                double s = bias == null ? 0 : bias[o];
                for (int i = 0; i < c; i++) s += inp[r * c + i] * weight[i * oc + o];
                out[r * oc + o] = s;
            }
        }
    }

    public static void linearBackward(double[] dinp, double[] dweight, double[] dbias, double[] dout,
                                      double[] inp, double[] weight, int n, int c, int oc) {
        for (int r = 0; r < n; r++) {
            for (int o = 0; o < oc; o++) {
                double g = dout[r * oc + o];
                if (dbias != null) dbias[o] += g;
                for (int i = 0; i < c; i++) {
                    dinp[r * c + i] += g * weight[i * oc + o];
                    dweight[i * oc + o] += g * inp[r * c + i];
                }
            }
        }
    }

    public static void embeddingForward(double[] out, int[] tokens, double[] wte, double[] wpe, int b, int t, int c) {
        for (int row = 0; row < b * t; row++) {
            for (int i = 0; i < c; i++) out[row * c + i] = wte[tokens[row] * c + i] + wpe[(row % t) * c + i];
        }
    }

    public static void embeddingBackward(double[] dwte, double[] dwpe, double[] dout, int[] tokens, int b, int t, int c) {
        for (int row = 0; row < b * t; row++) {
            for (int i = 0; i < c; i++) {
                dwte[tokens[row] * c + i] += dout[row * c + i];
                dwpe[(row % t) * c + i] += dout[row * c + i];
            }
        }
    }

    public static void layerNormForward(double[] out, double[] mean, double[] rstd, double[] inp,
                                        double[] weight, double[] bias, int n, int c) {
        for (int r = 0; r < n; r++) {
            double mu = 0;
            for (int i = 0; i < c; i++) mu += inp[r * c + i];
            mu /= c;
            double var = 0;
            for (int i = 0; i < c; i++) var += (inp[r * c + i] - mu) * (inp[r * c + i] - mu);
            double rs = 1 / Math.sqrt(var / c + LAYERNORM_EPS);
            mean[r] = mu;
            rstd[r] = rs;
            for (int i = 0; i < c; i++) out[r * c + i] = (inp[r * c + i] - mu) * rs * weight[i] + bias[i];
        }
    }

    public static void layerNormBackward(double[] dinp, double[] dweight, double[] dbias, double[] dout,
                                         double[] inp, double[] weight, double[] mean, double[] rstd, int n, int c) {
        for (int r = 0; r < n; r++) {
            double meanDnorm = 0, meanDnormNorm = 0;
            for (int i = 0; i < c; i++) {
                double norm = (inp[r * c + i] - mean[r]) * rstd[r];
                double dnorm = dout[r * c + i] * weight[i];
                meanDnorm += dnorm;
                meanDnormNorm += dnorm * norm;
                dweight[i] += norm * dout[r * c + i];
                dbias[i] += dout[r * c + i];
            }
            meanDnorm /= c;
            meanDnormNorm /= c;
            for (int i = 0; i < c; i++) {
                double norm = (inp[r * c + i] - mean[r]) * rstd[r];
                double dnorm = dout[r * c + i] * weight[i];
                dinp[r * c + i] += (dnorm - meanDnorm - norm * meanDnormNorm) * rstd[r];
            }
        }
    }

    /** out (n,c), rstd (n): out = inp · rstd · weight, rstd = 1/√(mean(inp²) + eps). */
    public static void rmsNormForward(double[] out, double[] rstd, double[] inp, double[] weight, int n, int c, double eps) {
        for (int r = 0; r < n; r++) {
            double ss = 0;
            for (int i = 0; i < c; i++) ss += inp[r * c + i] * inp[r * c + i];
            double rs = 1 / Math.sqrt(ss / c + eps);
            rstd[r] = rs;
            for (int i = 0; i < c; i++) out[r * c + i] = inp[r * c + i] * rs * weight[i];
        }
    }

    public static void rmsNormBackward(double[] dinp, double[] dweight, double[] dout, double[] inp, double[] weight, double[] rstd,
                                       int n, int c) {
        for (int r = 0; r < n; r++) {
            double meanGNorm = 0;
            for (int i = 0; i < c; i++) {
                double norm = inp[r * c + i] * rstd[r];
                meanGNorm += dout[r * c + i] * weight[i] * norm;
                dweight[i] += dout[r * c + i] * norm;
            }
            meanGNorm /= c;
            for (int i = 0; i < c; i++) {
                double norm = inp[r * c + i] * rstd[r];
                dinp[r * c + i] += rstd[r] * (dout[r * c + i] * weight[i] - norm * meanGNorm);
            }
        }
    }

    public static double silu(double x) {
        return x / (1 + Math.exp(-x));
    }

    public static void swiGluForward(double[] out, double[] gate, double[] up, int n) {
        for (int i = 0; i < n; i++) out[i] = silu(gate[i]) * up[i];
    }

    public static void swiGluBackward(double[] dgate, double[] dup, double[] dout, double[] gate, double[] up, int n) {
        for (int i = 0; i < n; i++) {
            double s = 1 / (1 + Math.exp(-gate[i]));
            dgate[i] += dout[i] * up[i] * s * (1 + gate[i] * (1 - s));
            dup[i] += dout[i] * gate[i] * s;
        }
    }

    /** out and inp (b, t, rowStride), heads at offset + h·hs, cosSin (t, hs/2, 2); out may be inp. */
    public static void ropeForward(double[] out, double[] inp, double[] cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        rotate(out, inp, cosSin, b, t, heads, hs, rowStride, offset, 1, false);
    }

    public static void ropeBackward(double[] dinp, double[] dout, double[] cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        rotate(dinp, dout, cosSin, b, t, heads, hs, rowStride, offset, -1, true);
    }

    private static void rotate(double[] out, double[] inp, double[] cosSin, int b, int t, int heads, int hs, int rowStride, int offset,
                               int sign, boolean accumulate) {
        int half = hs / 2;
        for (int r = 0; r < b * t; r++) {
            int p = r % t;
            for (int h = 0; h < heads; h++) {
                int at = r * rowStride + offset + h * hs;
                for (int j = 0; j < half; j++) {
                    double c = cosSin[(p * half + j) * 2], s = sign * cosSin[(p * half + j) * 2 + 1];
                    double x1 = inp[at + j], x2 = inp[at + j + half];
                    double y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
                    out[at + j] = accumulate ? out[at + j] + y1 : y1;
                    out[at + j + half] = accumulate ? out[at + j + half] + y2 : y2;
                }
            }
        }
    }

    public static void repeatHeadsForward(double[] out, int outStride, int outOffset, double[] inp, int inStride, int inOffset,
                                          int rows, int heads, int group, int hs) {
        for (int r = 0; r < rows; r++) {
            for (int h = 0; h < heads * group; h++) {
                for (int i = 0; i < hs; i++) out[r * outStride + outOffset + h * hs + i] = inp[r * inStride + inOffset + (h / group) * hs + i];
            }
        }
    }

    public static void repeatHeadsBackward(double[] dinp, int inStride, int inOffset, double[] dout, int outStride, int outOffset,
                                           int rows, int heads, int group, int hs) {
        for (int r = 0; r < rows; r++) {
            for (int h = 0; h < heads * group; h++) {
                for (int i = 0; i < hs; i++) dinp[r * inStride + inOffset + (h / group) * hs + i] += dout[r * outStride + outOffset + h * hs + i];
            }
        }
    }

    public static double gelu(double x) {
        return 0.5 * x * (1 + Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)));
    }

    public static double geluGrad(double x) {
        double th = Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x));
        return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_SCALE * (1 + 3 * 0.044715 * x * x);
    }

    public static void geluForward(double[] out, double[] inp, int n) {
        for (int i = 0; i < n; i++) out[i] = gelu(inp[i]);
    }

    public static void geluBackward(double[] dinp, double[] inp, double[] dout, int n) {
        for (int i = 0; i < n; i++) dinp[i] += geluGrad(inp[i]) * dout[i];
    }

    /** The feature distance per row in float64 (see Kernels#featureDistance); grad (n·d), when not null, gets += gradScale · dloss/ds. */
    public static void featureDistance(FeatureDistance distance, double[] rowLoss, double[] grad, double[] s, double[] t, int n, int d,
                                       double gradScale) {
        for (int r = 0; r < n; r++) {
            int o = r * d;
            if (distance == FeatureDistance.MSE) {
                double acc = 0;
                for (int k = 0; k < d; k++) acc += (s[o + k] - t[o + k]) * (s[o + k] - t[o + k]);
                rowLoss[r] = acc / d;
                if (grad != null) for (int k = 0; k < d; k++) grad[o + k] += gradScale * 2 * (s[o + k] - t[o + k]) / d;
                continue;
            }
            double st = 0, ss = 0, tt = 0;
            for (int k = 0; k < d; k++) {
                st += s[o + k] * t[o + k];
                ss += s[o + k] * s[o + k];
                tt += t[o + k] * t[o + k];
            }
            double ns = Math.sqrt(ss), den = Math.max(ns, FeatureDistance.EPS) * Math.max(Math.sqrt(tt), FeatureDistance.EPS), cos = st / den;
            rowLoss[r] = 1 - cos;
            if (grad == null) continue;
            double cs = ns > FeatureDistance.EPS ? cos / ss : 0;
            for (int k = 0; k < d; k++) grad[o + k] += gradScale * (cs * s[o + k] - t[o + k] / den);
        }
    }

    /** out (b, nh·hs); q (b, nh·hs); keys, values (b, maxLen, kvh·hs), rows [0, len) used; head h reads kv head h / (nh / kvh). */
    public static void attentionDecode(double[] out, double[] q, double[] keys, double[] values, int b, int len, int maxLen, int nh, int kvh,
                                       int hs) {
        double scale = 1 / Math.sqrt(hs);
        int width = kvh * hs, group = nh / kvh;
        double[] p = new double[len];
        for (int bb = 0; bb < b; bb++) {
            for (int h = 0; h < nh; h++) {
                int qh = (bb * nh + h) * hs;
                double mx = Double.NEGATIVE_INFINITY, sum = 0;
                for (int j = 0; j < len; j++) {
                    int k = (bb * maxLen + j) * width + (h / group) * hs;
                    double s = 0;
                    for (int d = 0; d < hs; d++) s += q[qh + d] * keys[k + d];
                    p[j] = s * scale;
                    mx = Math.max(mx, p[j]);
                }
                for (int j = 0; j < len; j++) sum += p[j] = Math.exp(p[j] - mx);
                for (int d = 0; d < hs; d++) {
                    double acc = 0;
                    for (int j = 0; j < len; j++) acc += p[j] / sum * values[(bb * maxLen + j) * width + (h / group) * hs + d];
                    out[qh + d] = acc;
                }
            }
        }
    }

    /** out (b,t,c), att (b,nh,t,t) probabilities, qkv (b,t,3c). */
    public static void attentionForward(double[] out, double[] att, double[] qkv, int b, int t, int c, int nh) {
        int hs = c / nh;
        double scale = 1 / Math.sqrt(hs);
        for (int bb = 0; bb < b; bb++) {
            for (int h = 0; h < nh; h++) {
                for (int i = 0; i < t; i++) {
                    int q = (bb * t + i) * 3 * c + h * hs;
                    int arow = ((bb * nh + h) * t + i) * t;
                    double mx = Double.NEGATIVE_INFINITY;
                    for (int j = 0; j <= i; j++) {
                        int k = (bb * t + j) * 3 * c + c + h * hs;
                        double s = 0;
                        for (int d = 0; d < hs; d++) s += qkv[q + d] * qkv[k + d];
                        att[arow + j] = s * scale;
                        mx = Math.max(mx, s * scale);
                    }
                    double sum = 0;
                    for (int j = 0; j <= i; j++) {
                        att[arow + j] = Math.exp(att[arow + j] - mx);
                        sum += att[arow + j];
                    }
                    for (int j = 0; j < t; j++) att[arow + j] = j <= i ? att[arow + j] / sum : 0;
                    for (int d = 0; d < hs; d++) {
                        double s = 0;
                        for (int j = 0; j <= i; j++) s += att[arow + j] * qkv[(bb * t + j) * 3 * c + 2 * c + h * hs + d];
                        out[(bb * t + i) * c + h * hs + d] = s;
                    }
                }
            }
        }
    }

    public static void attentionBackward(double[] dqkv, double[] dout, double[] qkv, double[] att,
                                         int b, int t, int c, int nh) {
        int hs = c / nh;
        double scale = 1 / Math.sqrt(hs);
        double[] datt = new double[t];
        for (int bb = 0; bb < b; bb++) {
            for (int h = 0; h < nh; h++) {
                for (int i = 0; i < t; i++) {
                    int q = (bb * t + i) * 3 * c + h * hs;
                    int o = (bb * t + i) * c + h * hs;
                    int arow = ((bb * nh + h) * t + i) * t;
                    for (int j = 0; j <= i; j++) {
                        int v = (bb * t + j) * 3 * c + 2 * c + h * hs;
                        double s = 0;
                        for (int d = 0; d < hs; d++) {
                            s += dout[o + d] * qkv[v + d];
                            dqkv[v + d] += att[arow + j] * dout[o + d];
                        }
                        datt[j] = s;
                    }
                    double dotAll = 0;
                    for (int j = 0; j <= i; j++) dotAll += att[arow + j] * datt[j];
                    for (int j = 0; j <= i; j++) {
                        double dpre = scale * att[arow + j] * (datt[j] - dotAll);
                        int k = (bb * t + j) * 3 * c + c + h * hs;
                        for (int d = 0; d < hs; d++) {
                            dqkv[q + d] += dpre * qkv[k + d];
                            dqkv[k + d] += dpre * qkv[q + d];
                        }
                    }
                }
            }
        }
    }

    /**
     * Softmax cross-entropy per row; returns per-row losses and writes {@code gradScale (softmax - onehot)}
     * into dlogits when it is non-null (ignored rows: loss 0, gradient 0).
     */
    public static double[] softmaxCrossEntropy(double[] logits, int[] targets, int n, int v, int ignoreIndex,
                                               double[] dlogits, double gradScale) {
        double[] losses = new double[n];
        for (int r = 0; r < n; r++) {
            if (targets[r] == ignoreIndex) {
                if (dlogits != null) java.util.Arrays.fill(dlogits, r * v, (r + 1) * v, 0);
                continue;
            }
            double lse = logSumExp(logits, r * v, v);
            losses[r] = lse - logits[r * v + targets[r]];
            if (dlogits != null) {
                for (int i = 0; i < v; i++) {
                    dlogits[r * v + i] = gradScale * (Math.exp(logits[r * v + i] - lse) - (i == targets[r] ? 1 : 0));
                }
            }
        }
        return losses;
    }

    /** Per row: log Σ_j exp(scale · x[r, j]). The twin of {@code Kernels.logsumexpRows}. */
    public static double[] logsumexpRows(double[] x, int n, int v, double scale) {
        double[] out = new double[n], row = new double[v];
        for (int r = 0; r < n; r++) {
            for (int j = 0; j < v; j++) row[j] = scale * x[r * v + j];
            out[r] = logSumExp(row, 0, v);
        }
        return out;
    }

    /** Per row: the first index of the largest x[r, j]; NaN never wins; 0 when none is above −inf. The twin of {@code Kernels.argmaxRows}. */
    public static int[] argmaxRows(double[] x, int n, int v) {
        int[] out = new int[n];
        for (int r = 0; r < n; r++) {
            double best = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < v; j++) {
                if (x[r * v + j] > best) {
                    best = x[r * v + j];
                    out[r] = j;
                }
            }
        }
        return out;
    }

    /**
     * Per row: the draw of {@code Kernels.sampleRows} by its definition: the top k by a stable sort
     * (NaN below every number), one {@code Math.exp} a candidate, the running sum walked id by id.
     * x holds fp32 values; u is (n). The twin of {@code Kernels.sampleRows}.
     */
    public static int[] sampleRows(double[] x, double[] u, int n, int v, double temperature, int topK) {
        int[] argmax = argmaxRows(x, n, v), out = new int[n];
        for (int r = 0; r < n; r++) {
            out[r] = argmax[r];
            if (temperature == 0) continue;
            int o = r * v, m = topK > 0 && topK < v ? topK : v;
            int[] ids = java.util.stream.IntStream.range(0, v).toArray();
            if (m < v) {
                Integer[] order = java.util.stream.IntStream.range(0, v).boxed().toArray(Integer[]::new);
                java.util.Arrays.sort(order, (a, b) -> {
                    double xa = x[o + a], xb = x[o + b];
                    if (Double.isNaN(xa) || Double.isNaN(xb)) return Boolean.compare(Double.isNaN(xa), Double.isNaN(xb));
                    return xa == xb ? 0 : xa > xb ? -1 : 1;   // larger first; the sort is stable, so ties keep id order
                });
                ids = java.util.Arrays.stream(order, 0, m).mapToInt(Integer::intValue).sorted().toArray();
            }
            double max = x[o + argmax[r]], sum = 0;
            double[] p = new double[m];
            for (int i = 0; i < m; i++) {
                p[i] = Math.exp((x[o + ids[i]] - max) / temperature);
                if (Double.isNaN(p[i])) p[i] = 0;
                sum += p[i];
            }
            if (!(sum > 0)) continue;
            double target = u[r] * sum, walked = 0;
            for (int i = 0; i < m; i++) {
                walked += p[i];
                if (p[i] > 0) out[r] = ids[i];
                if (p[i] > 0 && target < walked) break;
            }
        }
        return out;
    }

    /** log Σ exp(x[o + i]), i < n, shifted by the max. */
    public static double logSumExp(double[] x, int o, int n) {
        double mx = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) mx = Math.max(mx, x[o + i]);
        if (mx == Double.NEGATIVE_INFINITY) return mx;
        double s = 0;
        for (int i = 0; i < n; i++) s += Math.exp(x[o + i] - mx);
        return mx + Math.log(s);
    }

    public static void adamW(double[] params, double[] grads, double[] m, double[] v, double lr, double beta1,
                             double beta2, double eps, double weightDecay, int step) {
        for (int i = 0; i < params.length; i++) {
            m[i] = beta1 * m[i] + (1 - beta1) * grads[i];
            v[i] = beta2 * v[i] + (1 - beta2) * grads[i] * grads[i];
            double mhat = m[i] / (1 - Math.pow(beta1, step));
            double vhat = v[i] / (1 - Math.pow(beta2, step));
            params[i] -= lr * (mhat / (Math.sqrt(vhat) + eps) + weightDecay * params[i]);
        }
    }

    public static double sumOfSquares(double[] x) {
        double s = 0;
        for (double value : x) s += value * value;
        return s;
    }
}
