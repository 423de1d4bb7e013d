package dev.distillery.runtime.autograd;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.distill.ChunkedLinearDistillLoss;
import dev.distillery.runtime.distill.TeacherEnsemble;
import dev.distillery.runtime.distill.TeacherRows;

/**
 * The ops a GPT-style model is made of. Each one runs its forward kernel into a tensor from the
 * {@link Workspace} and, when an input needs a gradient, records its backward kernel on the
 * {@link Tape}. Activation gradients are allocated in the workspace the first time a backward
 * writes them; parameter gradients already live in the parameter store. Backward kernels
 * accumulate, so a tensor used twice (the residual stream) sums its gradients: a new gradient
 * is zeroed first, except where its first contribution is written whole (a GEMM with beta 0, a
 * copy), which gives the same sums without the zeros.
 *
 * <p>Activations are 2-D (rows = batch × time, columns = channels); ops that need the batch and
 * time split (embedding, attention) take them as arguments.
 */
public final class DifferentiableOps {

    /** The target id that masks a row out of the cross-entropy. */
    public static final int IGNORE_INDEX = -100;

    private final Kernels kernels;
    private final Workspace workspace;
    private final Tape tape;
    private final DType gemmOperandType;
    private boolean recomputeAttention;

    public DifferentiableOps(Kernels kernels, Workspace workspace, Tape tape) {
        this(kernels, workspace, tape, kernels.storesBf16Activations() ? DType.BF16 : DType.F32);
    }

    /**
     * With {@link #gemmOperandType} given: F32 keeps every activation fp32 even under bf16 (the
     * same bits in twice the bytes; a way to check that, or to rule it out); BF16 only where
     * {@link Kernels#storesBf16Activations}.
     */
    public DifferentiableOps(Kernels kernels, Workspace workspace, Tape tape, DType gemmOperandType) {
        if (gemmOperandType != DType.F32 && !(gemmOperandType == DType.BF16 && kernels.storesBf16Activations())) {
            throw new IllegalArgumentException("activations read by GEMMs as " + gemmOperandType + ": " + kernels.describe()
                    + " takes fp32" + (kernels.storesBf16Activations() ? " or bf16" : ""));
        }
        this.kernels = kernels;
        this.workspace = workspace;
        this.tape = tape;
        this.gemmOperandType = gemmOperandType;
    }

    public Kernels kernels() {
        return kernels;
    }

    public Workspace workspace() {
        return workspace;
    }

    public Tape tape() {
        return tape;
    }

    private boolean tracks(Tensor... inputs) {
        if (!tape.enabled()) return false;
        for (Tensor t : inputs) {
            if (t != null && t.requiresGrad()) return true;
        }
        return false;
    }

    private Tensor output(String name, boolean requiresGrad, int... shape) {
        return output(name, DType.F32, requiresGrad, shape);
    }

    private Tensor output(String name, DType dtype, boolean requiresGrad, int... shape) {
        Tensor t = workspace.tensor(name, dtype, shape);
        return requiresGrad ? new Tensor(name, shape, dtype, t.device(), t.data(), true) : t;
    }

    /**
     * The element type for an activation that only GEMMs read (a norm's output, a linear's input):
     * bf16 where the kernels' GEMMs round their operands to bf16 anyway ({@link Kernels#storesBf16Activations}),
     * so it is stored in half the bytes with the bits those GEMMs would make; fp32 otherwise. Its
     * gradient stays fp32.
     */
    public DType gemmOperandType() {
        return gemmOperandType;
    }

    /**
     * Records the backward of the op that made {@code out}. The tape runs newest first, so every
     * op that read {@code out} has added its share to out's gradient before this runs, and nothing
     * reads that gradient after: it goes back to the workspace, where the next gradient of its size
     * reuses it (the backward holds about one layer's activation gradients at a time).
     */
    private void recordBackward(Tensor out, Runnable backward) {
        tape.record(() -> {
            backward.run();
            Tensor g = out.grad();
            if (g != null) {
                out.setGrad(null);
                workspace.release(g.data());
            }
        });
    }

    /** Scratch of one backward kernel: dead once the kernel has run, so released at once. */
    private void releaseScratch(Tensor scratch) {
        workspace.release(scratch.data());
    }

    /** The ops other than the GEMMs read fp32 only: a bf16 activation reaching one is a wiring error, named here. */
    private static void requireF32(String op, Tensor... inputs) {
        for (Tensor t : inputs) {
            if (t != null && t.dtype() != DType.F32) {
                throw new IllegalArgumentException(op + ": " + t.name() + " is " + t.dtype() + "; this op reads fp32 (only GEMMs read bf16 activations)");
            }
        }
    }

    /** The gradient buffer of t for a kernel that adds to it, zero-allocated on first use; null when t needs no gradient. */
    private MemorySegment grad(Tensor t) {
        if (t == null || !t.requiresGrad()) return null;
        if (t.grad() == null) {
            Tensor g = workspace.tensor(t.name() + ".grad", t.shape());
            kernels.fill(g.data(), 0f, g.numel());
            t.setGrad(g);
        }
        return t.grad().data();
    }

    /**
     * The gradient buffer of t for a GEMM that writes every element of it, with the beta that GEMM
     * takes: 0 when the buffer is new (the first contribution is written over undefined memory
     * instead of added to zeros that were written for it), 1 when an earlier one is there. The
     * same sums as {@link #grad} with beta 1, since 0 + x is x. Null when t needs no gradient.
     */
    private GradTarget gradToWrite(Tensor t) {
        if (t == null || !t.requiresGrad()) return null;
        if (t.grad() != null) return new GradTarget(t.grad().data(), 1f);
        Tensor g = workspace.tensor(t.name() + ".grad", t.shape());
        t.setGrad(g);
        return new GradTarget(g.data(), 0f);
    }

    private record GradTarget(MemorySegment data, float beta) {
    }

    /** {@code Kernels.linearBackward} with the input gradient dx (null: none) written when new, added to when not. */
    private void linearBackward(GradTarget dx, MemorySegment dout, Tensor x, Tensor weight, Tensor bias, int n, int c, int oc) {
        kernels.linearBackward(dx == null ? null : dx.data(), dx == null ? 1f : dx.beta(), grad(weight), bias == null ? null : grad(bias),
                dout, x.data(), x.dtype(), weight.data(), n, c, oc);
    }

    /** tokens int32 (b, t); wte (vocab, c); wpe (maxT, c) → (b·t, c). */
    public Tensor embedding(Tensor tokens, Tensor wte, Tensor wpe, int b, int t) {
        int c = wte.dim(1), vocab = wte.dim(0);
        if (t > wpe.dim(0)) {
            throw new IllegalArgumentException("sequence length " + t + " exceeds the model's context " + wpe.dim(0));
        }
        boolean track = tracks(wte, wpe);
        Tensor out = output("embedding", track, b * t, c);
        kernels.embeddingForward(out.data(), tokens.data(), tokens.hostCopy(), wte.data(), wpe.data(), b, t, c, vocab);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() != null) {
                    kernels.embeddingBackward(grad(wte), grad(wpe), out.grad().data(), tokens.data(), tokens.hostCopy(), b, t, c);
                }
            });
        }
        return out;
    }

    /**
     * tokens int32 (b, t); wte (vocab, c) → (b·t, c), rows of wte alone (the Llama family has no
     * position embedding). The embedding kernels add a zero position table, whose gradient is
     * scratch.
     */
    public Tensor tokenEmbedding(Tensor tokens, Tensor wte, int b, int t) {
        int c = wte.dim(1), vocab = wte.dim(0);
        boolean track = tracks(wte);
        Tensor out = output("embedding", track, b * t, c);
        Tensor zeros = workspace.zeros("embedding.positions", t, c);
        kernels.embeddingForward(out.data(), tokens.data(), tokens.hostCopy(), wte.data(), zeros.data(), b, t, c, vocab);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() != null) {
                    Tensor scratch = workspace.tensor("embedding.dpositions", t, c);
                    kernels.embeddingBackward(grad(wte), scratch.data(), out.grad().data(), tokens.data(), tokens.hostCopy(), b, t, c);
                    releaseScratch(scratch);
                }
            });
        }
        return out;
    }

    /** x (n, c), weight (c), bias (c) → (n, c), fp32. */
    public Tensor layerNorm(Tensor x, Tensor weight, Tensor bias) {
        return layerNorm(x, weight, bias, DType.F32);
    }

    /** x (n, c), weight (c), bias (c) → (n, c) stored as {@code outType} (F32, or {@link #gemmOperandType} for an output only GEMMs read). */
    public Tensor layerNorm(Tensor x, Tensor weight, Tensor bias, DType outType) {
        requireF32("layerNorm", x);
        int n = x.dim(0), c = x.dim(1);
        boolean track = tracks(x, weight, bias);
        Tensor out = output("layernorm", outType, track, n, c);
        Tensor mean = workspace.tensor("layernorm.mean", n);
        Tensor rstd = workspace.tensor("layernorm.rstd", n);
        kernels.layerNormForward(out.data(), outType, mean.data(), rstd.data(), x.data(), weight.data(), bias.data(), n, c);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() != null) {
                    kernels.layerNormBackward(grad(x), grad(weight), grad(bias), out.grad().data(), x.data(),
                            weight.data(), mean.data(), rstd.data(), n, c);
                }
            });
        }
        return out;
    }

    /** A (c, oc) weight against an input of c columns. */
    private static void requireInputWidth(Tensor weight, int c) {
        if (weight.dim(0) != c) {
            throw new IllegalArgumentException("linear " + weight.name() + ": input has " + c + " columns, weight has " + weight.dim(0) + " rows");
        }
    }

    /** x (n, c), fp32 or bf16 ({@link #gemmOperandType}), · weight (c, oc) + bias (oc) → (n, oc); bias may be null. */
    public Tensor linear(Tensor x, Tensor weight, Tensor bias) {
        int n = x.dim(0), c = x.dim(1), oc = weight.dim(1);
        requireInputWidth(weight, c);
        boolean track = tracks(x, weight, bias);
        Tensor out = output("linear", track, n, oc);
        // an fp32 x is read by this product and by the weight gradient's: held from here to the
        // backward (CUDA under bf16 rounds it once; the CPU keeps nothing, x is an A operand in
        // both); a bf16 x is read as it is
        if (track && x.dtype() == DType.F32) tape.keepUntilBackward(kernels.holdConstant(x.data()));
        kernels.linearForward(out.data(), x.data(), x.dtype(), weight.data(), bias == null ? null : bias.data(), n, c, oc);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() != null) linearBackward(gradToWrite(x), out.grad().data(), x, weight, bias, n, c, oc);
            });
        }
        return out;
    }

    /**
     * x (n, in) · weightᵀ + bias → (n, out), weight (out, in) in PyTorch's nn.Linear layout (the
     * Llama family's projections, every LM head); bias (out) or null.
     */
    public Tensor projection(Tensor x, Tensor weight, Tensor bias) {
        int n = x.dim(0), c = x.dim(1), v = weight.dim(0);
        if (weight.dim(1) != c) {
            throw new IllegalArgumentException("projection " + weight.name() + ": input has " + c + " columns, weight has " + weight.dim(1));
        }
        boolean track = tracks(x, weight, bias);
        Tensor out = output("projection", track, n, v);
        kernels.projectionForward(out.data(), x.data(), x.dtype(), weight.data(), bias == null ? null : bias.data(), n, c, v);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() == null) return;
                var dx = gradToWrite(x);
                kernels.projectionBackward(dx == null ? null : dx.data(), dx == null ? 1f : dx.beta(), grad(weight), grad(bias),
                        out.grad().data(), x.data(), x.dtype(), weight.data(), n, c, v);
            });
        }
        return out;
    }

    /**
     * Whether {@link #attention} keeps no probabilities: the forward makes them a band of rows at a
     * time and the backward makes them again the same way ({@code Kernels.attentionBackwardInBands}),
     * so no (b, heads, t, t) block exists, for one more score product and softmax per layer. Off by
     * default.
     */
    public void setRecomputeAttention(boolean recompute) {
        this.recomputeAttention = recompute;
    }

    /** Whether {@link #setRecomputeAttention} asked for no kept probabilities. */
    public boolean recomputesAttention() {
        return recomputeAttention;
    }

    /**
     * Causal multi-head attention: qkv (b·t, 3c) → (b·t, c), stored as {@code outType} (F32, or
     * {@link #gemmOperandType} for an output only GEMMs read). The (b, heads, t, t) probabilities
     * are kept for the backward, or, with {@link #setRecomputeAttention} or in a pass with no
     * backward (evaluation, a teacher's forward, generation's prompt), never kept whole.
     */
    public Tensor attention(Tensor qkv, int b, int t, int heads, DType outType) {
        requireF32("attention", qkv);
        int c = qkv.dim(1) / 3;
        boolean track = tracks(qkv);
        Tensor out = output("attention", outType, track, b * t, c);
        if (recomputeAttention || !track) {
            kernels.attentionForward(out.data(), outType, null, qkv.data(), b, t, c, heads);
            if (track) {
                recordBackward(out, () -> {
                    if (out.grad() != null) {
                        GradTarget dqkv = gradToWrite(qkv);   // not null: qkv is tracked
                        kernels.attentionBackwardInBands(dqkv.data(), dqkv.beta(), out.grad().data(), qkv.data(), b, t, c, heads);
                    }
                });
            }
            return out;
        }
        Tensor att = workspace.tensor("attention.probs", b, heads, t, t);
        kernels.attentionForward(out.data(), outType, att.data(), qkv.data(), b, t, c, heads);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() != null) {
                    Tensor scratch = workspace.tensor("attention.dprobs", b, heads, t, t);
                    GradTarget dqkv = gradToWrite(qkv);   // not null: qkv is tracked
                    kernels.attentionBackward(dqkv.data(), dqkv.beta(), scratch.data(), out.grad().data(), qkv.data(), att.data(),
                            b, t, c, heads);
                    releaseScratch(scratch);
                }
            });
        }
        return out;
    }

    /**
     * linear(gelu(x), weight, bias), x (n, c), weight (c, oc) → (n, oc), without keeping gelu(x):
     * it lives in a buffer given back as soon as the linear has read it, and the backward computes
     * it again from x (llm.c's GELU recomputation). A GPT-2 MLP then holds one (n, 4c) activation
     * for the backward instead of two, for one more GELU per step; the values are those of
     * a GELU then {@link #linear}, bit for bit. gelu(x), which only the linear's GEMMs read, is
     * stored as {@link #gemmOperandType}.
     */
    public Tensor geluLinear(Tensor x, Tensor weight, Tensor bias) {
        requireF32("geluLinear", x);
        int n = x.dim(0), c = x.dim(1), oc = weight.dim(1);
        requireInputWidth(weight, c);
        boolean track = tracks(x, weight, bias);
        Tensor out = output("linear", track, n, oc);
        Tensor g = workspace.tensor("gelu", gemmOperandType, n, c);
        kernels.geluForward(g.data(), gemmOperandType, x.data(), x.numel());
        kernels.linearForward(out.data(), g.data(), gemmOperandType, weight.data(), bias == null ? null : bias.data(), n, c, oc);
        releaseScratch(g);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() == null) return;
                Tensor again = workspace.tensor("gelu", gemmOperandType, n, c);
                Tensor dg = workspace.tensor("gelu.grad", n, c);
                GradTarget dx = gradToWrite(x);
                kernels.geluLinearBackward(dx == null ? null : dx.data(), dx == null ? 1f : dx.beta(), grad(weight),
                        bias == null ? null : grad(bias), out.grad().data(), x.data(), weight.data(), again.data(), gemmOperandType,
                        dg.data(), n, c, oc);
                releaseScratch(again);
                releaseScratch(dg);
            });
        }
        return out;
    }

    // ---------------------------------------------------------------- the Llama family's pieces

    /** x (n, c), weight (c) → (n, c): RMSNorm, fp32. */
    public Tensor rmsNorm(Tensor x, Tensor weight, float eps) {
        return rmsNorm(x, weight, eps, DType.F32);
    }

    /** x (n, c), weight (c) → (n, c): RMSNorm, stored as {@code outType} (as {@link #layerNorm}'s). */
    public Tensor rmsNorm(Tensor x, Tensor weight, float eps, DType outType) {
        requireF32("rmsNorm", x);
        int n = x.dim(0), c = x.dim(1);
        boolean track = tracks(x, weight);
        Tensor out = output("rmsnorm", outType, track, n, c);
        Tensor rstd = workspace.tensor("rmsnorm.rstd", n);
        kernels.rmsNormForward(out.data(), outType, rstd.data(), x.data(), weight.data(), n, c, eps);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() != null) {
                    kernels.rmsNormBackward(grad(x), grad(weight), out.grad().data(), x.data(), weight.data(), rstd.data(), n, c);
                }
            });
        }
        return out;
    }

    /** x (b·t, heads·hs) with its heads rotated by position; cosSin (t, hs/2, 2) as {@code Kernels.ropeForward} reads it. */
    public Tensor rope(Tensor x, Tensor cosSin, int b, int t, int heads) {
        requireF32("rope", x);
        int n = x.dim(0), width = x.dim(1), hs = width / heads;
        boolean track = tracks(x);
        Tensor out = output("rope", track, n, width);
        kernels.ropeForward(out.data(), x.data(), cosSin.data(), b, t, heads, hs, width, 0);
        if (track) {
            recordBackward(out, () -> {
                var dx = grad(x);
                if (out.grad() != null && dx != null) kernels.ropeBackward(dx, out.grad().data(), cosSin.data(), b, t, heads, hs, width, 0);
            });
        }
        return out;
    }

    /**
     * q (n, heads·hs), k and v (n, kvHeads·hs) → qkv (n, 3·heads·hs), the layout {@link #attention}
     * takes, each k and v head repeated for its group of heads / kvHeads query heads.
     */
    public Tensor packQkv(Tensor q, Tensor k, Tensor v, int heads, int kvHeads) {
        requireF32("packQkv", q, k, v);
        int n = q.dim(0), a = q.dim(1), hs = a / heads, kvA = k.dim(1), group = heads / kvHeads;
        boolean track = tracks(q, k, v);
        Tensor out = output("qkv", track, n, 3 * a);
        kernels.repeatHeadsForward(out.data(), 3 * a, 0, q.data(), a, 0, n, heads, 1, hs);
        kernels.repeatHeadsForward(out.data(), 3 * a, a, k.data(), kvA, 0, n, kvHeads, group, hs);
        kernels.repeatHeadsForward(out.data(), 3 * a, 2 * a, v.data(), kvA, 0, n, kvHeads, group, hs);
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() == null) return;
                var d = out.grad().data();
                var dq = grad(q);
                if (dq != null) kernels.repeatHeadsBackward(dq, a, 0, d, 3 * a, 0, n, heads, 1, hs);
                var dk = grad(k);
                if (dk != null) kernels.repeatHeadsBackward(dk, kvA, 0, d, 3 * a, a, n, kvHeads, group, hs);
                var dv = grad(v);
                if (dv != null) kernels.repeatHeadsBackward(dv, kvA, 0, d, 3 * a, 2 * a, n, kvHeads, group, hs);
            });
        }
        return out;
    }

    /**
     * silu(gate) · up, elementwise: the Llama family's MLP middle, stored as {@code outType} (F32, or
     * {@link #gemmOperandType} for an output only GEMMs read). Both inputs get a gradient when either needs one.
     */
    public Tensor swiGlu(Tensor gate, Tensor up, DType outType) {
        requireF32("swiGlu", gate, up);
        if (gate.numel() != up.numel()) throw new IllegalArgumentException("swiGlu: " + gate + " and " + up + " differ in size");
        boolean track = tracks(gate, up);
        Tensor out = output("swiglu", outType, track, gate.shape());
        kernels.swiGluForward(out.data(), outType, gate.data(), up.data(), gate.numel());
        if (track) {
            recordBackward(out, () -> {
                if (out.grad() == null) return;
                var dg = gate.requiresGrad() ? grad(gate) : workspace.tensor("swiglu.dgate", gate.shape()).data();
                var du = up.requiresGrad() ? grad(up) : workspace.tensor("swiglu.dup", up.shape()).data();
                kernels.swiGluBackward(dg, du, out.grad().data(), gate.data(), up.data(), gate.numel());
            });
        }
        return out;
    }

    /** The residual connection a + b. */
    public Tensor add(Tensor a, Tensor b) {
        requireF32("add", a, b);
        if (a.numel() != b.numel()) throw new IllegalArgumentException("add: " + a + " and " + b + " differ in size");
        boolean track = tracks(a, b);
        Tensor out = output("residual", track, a.shape());
        kernels.residualForward(out.data(), a.data(), b.data(), a.numel());
        if (track) {
            recordBackward(out, () -> {
                Tensor dout = out.grad();
                if (dout == null) return;
                // Each input's gradient gains dout. A new one is dout: b's a copy, a's dout's own buffer,
                // which out gives up (recordBackward then has nothing to release). b goes first, so
                // a + a sums dout twice.
                if (b.requiresGrad()) {
                    if (b.grad() == null) {
                        Tensor g = workspace.tensor(b.name() + ".grad", b.shape());
                        kernels.copy(g.data(), dout.data(), dout.byteSize());
                        b.setGrad(g);
                    } else {
                        kernels.accumulate(b.grad().data(), dout.data(), b.numel());
                    }
                }
                if (a.requiresGrad()) {
                    if (a.grad() == null) {
                        a.setGrad(new Tensor(a.name() + ".grad", a.shape(), DType.F32, dout.device(), dout.data(), false));
                        out.setGrad(null);
                    } else {
                        kernels.accumulate(a.grad().data(), dout.data(), a.numel());
                    }
                }
            });
        }
        return out;
    }

    /** How the per-row distillation losses are reduced. */
    public enum Reduction { MEAN, SUM }

    /**
     * The reduced distillation loss and its parts: total = alpha·ce + (1 − alpha)·divergence
     * [+ weight·feature with feature distillation; feature is 0 without it].
     */
    public record DistillLoss(double total, double ce, double divergence, int rows, double feature) {
        public DistillLoss(double total, double ce, double divergence, int rows) {
            this(total, ce, divergence, rows, 0);
        }

        /** This loss with an unweighted feature loss added at {@code weight}. */
        public DistillLoss plusFeature(double feature, double weight) {
            return new DistillLoss(total + weight * feature, ce, divergence, rows, feature);
        }
    }

    /**
     * The LM head (hidden · weightᵀ, weight (vocab, d)) and the fused distillation loss, chunked so
     * that no more than {@code chunkRows} rows of logits exist at a time, with an extra factor on
     * the gradient (1/k for gradient accumulation over k micro-batches; the returned loss is
     * unscaled). Like {@link #crossEntropy} this is the root of the graph: with the tape enabled it
     * writes the gradients of hidden and weight during the call.
     *
     * @param teacher the targets of each chunk of rows (stored, or an in-process teacher's logits)
     * @param labels  int32 (n) hard labels, with their host copy where the caller has one, or null (alpha must then be 0)
     */
    public DistillLoss distillationLoss(Tensor hidden, Tensor weight, TeacherRows teacher, Labels labels, DistillOptions options,
                                        Reduction reduction, int chunkRows, float gradScale) {
        int n = hidden.dim(0), d = hidden.dim(1), v = weight.dim(0);
        int[] lab = labels == null ? null : hostIds(labels, n);
        int valid = labels == null ? n : countNot(lab, options.ignoreIndex(), 0);
        float scale = gradScale * (reduction == Reduction.SUM ? 1f : valid == 0 ? 0f : 1f / valid);
        boolean backward = tracks(hidden, weight);
        int chunk = Math.min(chunkRows, Math.max(1, n));
        Tensor logits = workspace.tensor("logits.chunk", chunk, v);
        var sums = ChunkedLinearDistillLoss.run(kernels, hidden.data(), weight.data(), backward ? grad(hidden) : null,
                backward ? grad(weight) : null, teacher, labels == null ? null : labels.ids().data(), lab, n, d, v, options, scale, chunk,
                logits.data(), workspace.tensor("distill.rows", 2, n).data());
        double norm = reduction == Reduction.SUM ? 1 : valid == 0 ? 0 : 1.0 / valid;
        return new DistillLoss(sums.total() * norm, sums.ce() * norm, sums.divergence() * norm, sums.rows());
    }

    /**
     * As above against several teachers ({@link TeacherEnsemble}): their mixture, which the fused
     * loss reads from every teacher's rows; or the weighted mean of their losses.
     */
    public DistillLoss distillationLoss(Tensor hidden, Tensor weight, TeacherEnsemble teachers, Labels labels, DistillOptions options,
                                        Reduction reduction, int chunkRows, float gradScale) {
        int n = hidden.dim(0), d = hidden.dim(1), v = weight.dim(0);
        int chunk = Math.min(chunkRows, Math.max(1, n));
        if (teachers.teachers().size() == 1) {
            return distillationLoss(hidden, weight, teachers.teachers().getFirst(), labels, options, reduction, chunkRows, gradScale);
        }
        if (teachers.combination() == TeacherEnsemble.Combination.MIXTURE) {
            return distillationLoss(hidden, weight, teachers.mixture(), labels, options, reduction, chunkRows, gradScale);
        }
        int[] lab = labels == null ? null : hostIds(labels, n);
        int valid = labels == null ? n : countNot(lab, options.ignoreIndex(), 0);
        float scale = gradScale * (reduction == Reduction.SUM ? 1f : valid == 0 ? 0f : 1f / valid);
        boolean backward = tracks(hidden, weight);
        var sums = ChunkedLinearDistillLoss.runMean(kernels, hidden.data(), weight.data(), backward ? grad(hidden) : null,
                backward ? grad(weight) : null, teachers.teachers(), teachers.weights(), labels == null ? null : labels.ids().data(), lab,
                n, d, v, options, scale, chunk, workspace.tensor("logits.chunk", chunk, v).data(), workspace.tensor("logits.chunk.grad", chunk, v).data(),
                workspace.tensor("logits.chunk.grad.one", chunk, v).data(),
                workspace.tensor("distill.rows", teachers.teachers().size(), 2, n).data());
        double norm = reduction == Reduction.SUM ? 1 : valid == 0 ? 0 : 1.0 / valid;
        return new DistillLoss(sums.total() * norm, sums.ce() * norm, sums.divergence() * norm, sums.rows());
    }

    /** As above for stored targets where the kernels read them, with gradient factor 1. */
    public DistillLoss distillationLoss(Tensor hidden, Tensor weight, TeacherTargets teacher, Labels labels, DistillOptions options,
                                        Reduction reduction, int chunkRows) {
        return distillationLoss(hidden, weight, TeacherRows.stored(teacher, null), labels, options, reduction, chunkRows, 1f);
    }

    /**
     * Feature distillation against one teacher layer: the mean over the n rows of
     * {@code distance(x[r], teacher[r])}, x (n, d) fp32, teacher (n, d) of {@code teacherType}
     * where the kernels read it. Like {@link #crossEntropy} a root of the graph: with the tape
     * enabled it adds {@code gradScale / n · d(Σ_rows loss)/dx} to x's gradient now, and the
     * backward carries it from there.
     */
    public double featureDistance(Tensor x, MemorySegment teacher, DType teacherType, FeatureDistance distance, float gradScale) {
        int n = x.dim(0), d = x.dim(1);
        Tensor losses = workspace.tensor("feature.losses", n);
        kernels.featureDistance(distance, losses.data(), tracks(x) ? grad(x) : null, x.data(), teacher, teacherType, n, d, gradScale / n);
        return sumOnHost(losses, n) / n;
    }

    /** The mean cross-entropy over non-ignored rows and how many rows counted. */
    public record Loss(double mean, int rows) {
    }

    /**
     * Mean softmax cross-entropy of logits (n, v) against int32 targets (n), rows with target
     * {@link #IGNORE_INDEX} excluded. With the tape enabled the fused kernel writes
     * {@code gradScale · d(mean)/d(logits)} over the logits in place and they become the logits'
     * gradient: this must be the last op of the forward (the loss is the root of the graph).
     *
     * @param gradScale extra factor on the gradient (1, or 1/k for gradient accumulation over k micro-batches)
     * @throws IllegalArgumentException naming the row when a target is outside [0, v) and not the ignore index
     */
    public Loss crossEntropy(Tensor logits, Labels targets, float gradScale) {
        int n = logits.dim(0), v = logits.dim(1);
        int valid = countNot(hostIds(targets, n), IGNORE_INDEX, v);
        boolean writeGradient = tracks(logits);
        float scale = valid == 0 ? 0f : gradScale / valid;
        Tensor losses = workspace.tensor("losses", n);
        kernels.softmaxCrossEntropyRows(losses.data(), logits.data(), targets.ids().data(), n, v, IGNORE_INDEX, writeGradient, scale);
        double sum = sumOnHost(losses, n);
        if (writeGradient) {
            logits.setGrad(new Tensor("logits.grad", logits.shape(), DType.F32, logits.device(), logits.data(), false));
        }
        return new Loss(valid == 0 ? 0 : sum / valid, valid);
    }

    /**
     * The LM head (hidden · weightᵀ, weight (vocab, d)) and the mean softmax cross-entropy against
     * int32 targets (n), rows with target {@link #IGNORE_INDEX} excluded, chunked as
     * {@link #distillationLoss} is, so no more than {@code chunkRows} rows of logits exist at a time:
     * {@link #projection} then {@link #crossEntropy} without the (n, vocab) logits. A root of the
     * graph like them: with the tape enabled it writes the gradients of hidden and weight
     * ({@code gradScale · d(mean)/d·}) during the call.
     *
     * @throws IllegalArgumentException naming the row when a target is outside [0, vocab) and not the ignore index
     */
    public Loss linearCrossEntropy(Tensor hidden, Tensor weight, Labels targets, float gradScale, int chunkRows) {
        int n = hidden.dim(0), d = hidden.dim(1), v = weight.dim(0);
        int valid = countNot(hostIds(targets, n), IGNORE_INDEX, v);
        boolean backward = tracks(hidden, weight);
        float scale = valid == 0 ? 0f : gradScale / valid;
        int chunk = Math.min(chunkRows, Math.max(1, n));
        Tensor logits = workspace.tensor("logits.chunk", chunk, v);
        Tensor losses = workspace.tensor("losses", n);
        ChunkedLinearDistillLoss.crossEntropy(kernels, hidden.data(), weight.data(), backward ? grad(hidden) : null, backward ? grad(weight) : null,
                targets.ids().data(), losses.data(), n, d, v, IGNORE_INDEX, scale, chunk, logits.data());
        return new Loss(valid == 0 ? 0 : sumOnHost(losses, n) / valid, valid);
    }

    /** Σ of the first n floats of a kernel buffer, in double, read on the host. */
    private double sumOnHost(Tensor values, int n) {
        double sum = 0;
        try (Arena host = Arena.ofConfined()) {
            MemorySegment l = kernels.hostView(values.data(), 4L * n, host);
            for (int r = 0; r < n; r++) sum += l.getAtIndex(ValueLayout.JAVA_FLOAT, r);
        }
        return sum;
    }

    /** The first n of the ids on the host: the caller's copy, or read back from where the kernels hold them (a wait on a device). */
    private int[] hostIds(Labels labels, int n) {
        int[] ids = labels.hostIds(n);
        if (ids != null) return ids;
        try (Arena host = Arena.ofConfined()) {
            return kernels.hostView(labels.ids().data(), 4L * n, host).toArray(ValueLayout.JAVA_INT);
        }
    }

    /**
     * How many ids differ from {@code ignore}; with {@code vocab} above 0 each of those is checked
     * to lie in [0, vocab), naming the row.
     */
    private static int countNot(int[] ids, int ignore, int vocab) {
        int count = 0;
        for (int r = 0; r < ids.length; r++) {
            int id = ids[r];
            if (id == ignore) continue;
            if (vocab > 0 && (id < 0 || id >= vocab)) {
                throw new IllegalArgumentException("target " + id + " at row " + r + " is outside [0, " + vocab
                        + ") and is not the ignore index " + ignore);
            }
            count++;
        }
        return count;
    }
}
