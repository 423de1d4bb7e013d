package dev.distillery.kernels;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Optional;

import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The compute contract every backend implements: {@code CpuKernels} and {@code CudaKernels}, chosen
 * by {@link Backends#open}.
 *
 * <p>Conventions, for every method:
 * <ul>
 *   <li>Buffers are {@link MemorySegment}s positioned at element 0 of the argument, fp32 unless
 *       said otherwise, row-major and contiguous; token and target ids are int32.</li>
 *   <li>Shapes are given in the comment of each method ({@code inp is (N, C)}), sizes as ints.</li>
 *   <li>Forward kernels overwrite their outputs. Backward kernels <em>accumulate</em> into input
 *       gradients ({@code +=}); the caller zeroes gradients once per step.</li>
 *   <li>Kernels know buffers and sizes, never autograd or tensors.</li>
 * </ul>
 * Every kernel has a float64 twin in {@code kernels.reference.ReferenceKernels}; the math and the
 * derivations of the backward passes are in {@code docs/KERNELS.md}.
 */
public interface Kernels extends AutoCloseable {

    /** Short human name: "cpu (OpenBLAS, 2 threads)". */
    String describe();

    /** The arithmetic of {@link #gemm} and {@link #gemmStridedBatched}: fp32, or bf16 operands with fp32 sums. */
    default Precision precision() {
        return Precision.FP32;
    }

    // ---------------------------------------------------------------- memory

    /**
     * Whether the host may read and write this backend's buffers directly. True for the CPU; false
     * for CUDA, whose buffers carry device addresses that must never be dereferenced on the host
     * (use the copies below).
     */
    boolean hostAccessible();

    /**
     * How these kernels sum their buffers over processes where the buffers are not in host memory
     * (NCCL on CUDA, where libnccl loads); empty for the CPU backend, whose buffers MPI sums.
     */
    default Optional<DeviceCollectives> deviceCollectives() {
        return Optional.empty();
    }

    /**
     * A buffer of {@code bytes} for this backend's kernels: 64-byte aligned, contents undefined,
     * freed when {@code owner} closes (the owner must close before this backend does).
     */
    MemorySegment allocate(Arena owner, long bytes);

    /**
     * Host memory of {@code bytes} that {@link #copyFromHostAsync} reads fastest (page-locked on
     * CUDA), 64-byte aligned, freed when {@code owner} closes.
     */
    MemorySegment allocateStaging(Arena owner, long bytes);

    /** {@code bytes} from host memory into a buffer of this backend, ordered after the kernels already issued. */
    void copyFromHost(MemorySegment dst, MemorySegment hostSrc, long bytes);

    /** {@code bytes} from a buffer of this backend into host memory, once the kernels already issued have finished. */
    void copyToHost(MemorySegment hostDst, MemorySegment src, long bytes);

    /**
     * Starts copying {@code bytes} of staging memory ({@link #allocateStaging}) into a buffer of
     * this backend, overlapping the kernels in flight. Kernels issued after the next
     * {@link #joinCopies()} see the data; {@code hostSrc} must stay unchanged until a later
     * {@link #copyToHost} or {@link #sumOfSquares} has returned (both wait for the work before them).
     * Synchronous where the backend has no copy engine.
     */
    void copyFromHostAsync(MemorySegment dst, MemorySegment hostSrc, long bytes);

    /** Makes every kernel issued from now on wait for the {@link #copyFromHostAsync} copies started so far. */
    void joinCopies();

    /**
     * {@code bytes} from one buffer of this backend to another, ordered with the kernels: the
     * kernels and copies issued after it read the copied bytes. The host sees them after a copy to
     * the host or {@link #synchronize()} (a device backend does not wait for it on return).
     */
    void copy(MemorySegment dst, MemorySegment src, long bytes);

    /** Returns once every kernel and copy issued so far has finished (at once on the CPU, whose kernels return finished). */
    void synchronize();

    /**
     * {@code src} readable on the host: {@code src} itself where {@link #hostAccessible()}, else a
     * copy of its first {@code bytes} in {@code scratch}.
     */
    default MemorySegment hostView(MemorySegment src, long bytes, Arena scratch) {
        if (hostAccessible()) return src.asSlice(0, bytes);
        MemorySegment copy = scratch.allocate(Math.max(1, bytes), 64).asSlice(0, bytes);
        copyToHost(copy, src, bytes);
        return copy;
    }

    // ---------------------------------------------------------------- GEMM

    /**
     * Row-major GEMM: {@code C = alpha * op(A) * op(B) + beta * C}.
     * op(A) is (m, k), op(B) is (k, n), C is (m, n); lda/ldb/ldc are row strides in elements
     * of the matrices as stored (so A stored (k, m) when transA).
     */
    void gemm(boolean transA, boolean transB, int m, int n, int k,
              float alpha, MemorySegment a, int lda, MemorySegment b, int ldb,
              float beta, MemorySegment c, int ldc);

    /**
     * {@link #gemm} with either operand stored as bf16 ({@code aType}, {@code bType}: {@link DType#F32}
     * or {@link DType#BF16}; a bf16 operand's leading dimension counts bf16 elements). Only under
     * {@link Precision#BF16}, where it holds an activation that only GEMMs read
     * ({@link #storesBf16Activations}): a value stored as bf16 is what the GEMM would have rounded
     * it to, so the product is the same, bit for bit, as {@link #gemm} on the fp32 values.
     */
    default void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, DType aType, int lda,
                      MemorySegment b, DType bType, int ldb, float beta, MemorySegment c, int ldc) {
        if (aType != DType.F32 || bType != DType.F32) {
            throw new UnsupportedOperationException(describe() + ": a GEMM operand stored as " + (aType != DType.F32 ? aType : bType)
                    + " needs bf16 precision");
        }
        gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }

    /**
     * Whether the runtime should store an activation that only GEMMs read (a norm's output, the
     * input of a linear) as bf16: under {@link Precision#BF16}, where every GEMM rounds its operands
     * to bf16 anyway. Half the bytes, the same bits; the norms, GELU and SwiGLU write it (their
     * {@code outType}) and {@link #gemm}'s typed form reads it.
     */
    default boolean storesBf16Activations() {
        return precision() == Precision.BF16;
    }

    /**
     * Whether a kernel told to write its output as {@code outType} writes bf16 (true) or fp32
     * (false); any other type, or bf16 where these kernels do not store bf16 activations, is
     * refused naming {@code kernel}.
     */
    default boolean writesBf16(DType outType, String kernel) {
        if (outType == DType.F32) return false;
        if (outType == DType.BF16 && storesBf16Activations()) return true;
        throw new UnsupportedOperationException(describe() + ": " + kernel + "'s output as " + outType + " needs bf16 precision");
    }

    /**
     * Declares that the bytes of {@code operand} do not change until the returned hold is closed,
     * so that a backend may keep what it derives from them across {@link #gemm} calls: the CPU's
     * bf16 GEMM packs a B operand lying in it once per shape rather than at every call (the
     * chunked LM head's weight, the B of two GEMMs in every chunk). Writing a held operand before
     * the hold is closed leaves those GEMMs reading the old values. Backends with nothing to keep
     * return a hold that does nothing; CUDA under bf16 keeps a bf16 copy of the segment, made at
     * once, which every GEMM with an operand inside it reads instead of rounding its own (and holds
     * nothing where the device has no room for the copy).
     */
    default ConstantHold holdConstant(MemorySegment operand) {
        return ConstantHold.NONE;
    }

    /**
     * Declares that {@code parameters}, a model's whole parameter block, do not change until the
     * returned hold is closed: the forward and backward passes of one optimizer step, in which each
     * weight is read by a few GEMMs per micro-batch (as W and as Wᵀ). A backend keeps what pays
     * back at that reuse: under bf16, CUDA rounds the block once ({@link #holdConstant}), one copy
     * serving every GEMM of every weight, where it would round each weight at every GEMM. The CPU
     * keeps nothing: its bf16 packs are made per transpose, so with one micro-batch each would be
     * read once, and keeping them would cost memory for no time.
     */
    default ConstantHold holdStepParameters(MemorySegment parameters) {
        return ConstantHold.NONE;
    }

    /** What {@link #holdConstant} returns; closing it frees what was kept. */
    interface ConstantHold extends AutoCloseable {
        ConstantHold NONE = () -> { };

        @Override
        void close();
    }

    /**
     * {@code batch} independent GEMMs; matrix i of A starts {@code i * strideA} elements after
     * {@code a} (likewise B and C).
     */
    void gemmStridedBatched(boolean transA, boolean transB, int m, int n, int k,
                            float alpha, MemorySegment a, int lda, long strideA,
                            MemorySegment b, int ldb, long strideB,
                            float beta, MemorySegment c, int ldc, long strideC, int batch);

    // ---------------------------------------------------------------- linear (GPT-2's Conv1D layout) and projection (nn.Linear's)

    /**
     * {@code out = inp · weight + bias}. inp is (n, c), fp32 or bf16 ({@code inpType}, see the typed
     * {@link #gemm}), weight is (c, oc) (Hugging Face GPT-2's Conv1D layout), bias is (oc) or null,
     * out is (n, oc).
     */
    default void linearForward(MemorySegment out, MemorySegment inp, DType inpType, MemorySegment weight, MemorySegment bias,
                               int n, int c, int oc) {
        biasedProduct(false, out, inp, inpType, weight, bias, n, c, oc);
    }

    /**
     * Backward of {@link #linearForward}: {@code dinp = dout · weightᵀ + dinpBeta · dinp} (dinpBeta
     * 1 adds to a gradient, 0 writes a new one over whatever is there), {@code dweight += inpᵀ · dout},
     * {@code dbias += Σ_rows dout}. Any of dinp, dbias may be null (not needed); inp is stored as
     * {@code inpType}, the gradients are fp32.
     */
    default void linearBackward(MemorySegment dinp, float dinpBeta, MemorySegment dweight, MemorySegment dbias,
                                MemorySegment dout, MemorySegment inp, DType inpType, MemorySegment weight,
                                int n, int c, int oc) {
        if (dinp != null) {
            gemm(false, true, n, c, oc, 1f, dout, oc, weight, oc, dinpBeta, dinp, c);
        }
        gemm(true, false, c, oc, n, 1f, inp, inpType, c, dout, DType.F32, oc, 1f, dweight, oc);
        if (dbias != null) {
            sumRows(dbias, dout, n, oc);
        }
    }

    /**
     * {@code out = x · weightᵀ + bias}: x is (n, c), fp32 or bf16 ({@code xType}), weight is (v, c)
     * (PyTorch's nn.Linear layout: the Llama family's projections, every LM head), bias is (v) or
     * null, out is (n, v).
     */
    default void projectionForward(MemorySegment out, MemorySegment x, DType xType, MemorySegment weight, MemorySegment bias,
                                   int n, int c, int v) {
        biasedProduct(true, out, x, xType, weight, bias, n, c, v);
    }

    /**
     * {@code out = inp · weight + bias}, or {@code inp · weightᵀ + bias} with weightTransposed: the
     * bias broadcast into out, then the GEMM with beta 1 onto it.
     */
    private void biasedProduct(boolean weightTransposed, MemorySegment out, MemorySegment inp, DType inpType, MemorySegment weight,
                               MemorySegment bias, int n, int c, int oc) {
        if (bias != null) {
            broadcastRows(out, bias, n, oc);
        }
        gemm(false, weightTransposed, n, oc, c, 1f, inp, inpType, c, weight, DType.F32, weightTransposed ? c : oc,
                bias == null ? 0f : 1f, out, oc);
    }

    /**
     * Backward of {@link #projectionForward}: {@code dx = dout · weight + dxBeta · dx} (dxBeta as
     * {@link #linearBackward}'s dinpBeta), {@code dweight += doutᵀ · x}, {@code dbias += Σ_rows dout}.
     * Any of dx, dweight, dbias may be null (not needed); dout is held constant across the two
     * products ({@link #holdConstant}).
     */
    default void projectionBackward(MemorySegment dx, float dxBeta, MemorySegment dweight, MemorySegment dbias,
                                    MemorySegment dout, MemorySegment x, DType xType, MemorySegment weight,
                                    int n, int c, int v) {
        requireWriteOrAdd("projectionBackward", "dxBeta", dxBeta);
        try (ConstantHold both = holdConstant(dout.asSlice(0, 4L * n * v))) {   // read by both products
            if (dx != null) {
                gemm(false, false, n, c, v, 1f, dout, v, weight, c, dxBeta, dx, c);
            }
            if (dweight != null) {
                gemm(true, false, v, c, n, 1f, dout, DType.F32, v, x, xType, c, 1f, dweight, c);
            }
        }
        if (dbias != null) {
            sumRows(dbias, dout, n, v);
        }
    }

    /** {@code out[r, :] = row} for every r. out is (n, c), row is (c). */
    void broadcastRows(MemorySegment out, MemorySegment row, int n, int c);

    /** {@code acc[:] += Σ_r x[r, :]}. x is (n, c), acc is (c). */
    void sumRows(MemorySegment acc, MemorySegment x, int n, int c);

    // ---------------------------------------------------------------- embedding

    /**
     * {@code out[b,t,:] = wte[tokens[b,t], :] + wpe[t, :]}. tokens is int32 (b, t) with ids in
     * [0, vocab), wte is (vocab, c), wpe is (≥ t, c), out is (b, t, c). hostTokens: the same ids in
     * host memory, or null; a device backend checks them there instead of reading them back (a
     * wait for the device).
     *
     * @throws IllegalArgumentException naming the position when a token id is out of range
     */
    void embeddingForward(MemorySegment out, MemorySegment tokens, MemorySegment hostTokens, MemorySegment wte, MemorySegment wpe,
                          int b, int t, int c, int vocab);

    /**
     * {@code dwte[tokens[b,t]] += dout[b,t]}, {@code dwpe[t] += Σ_b dout[b,t]}. hostTokens as in
     * {@link #embeddingForward}: a device backend groups the positions by token from it.
     */
    void embeddingBackward(MemorySegment dwte, MemorySegment dwpe, MemorySegment dout, MemorySegment tokens, MemorySegment hostTokens,
                           int b, int t, int c);

    // ---------------------------------------------------------------- layernorm

    /**
     * Per row: {@code out = (inp - mean) * rstd * weight + bias}, eps 1e-5. inp, out are (n, c);
     * weight, bias (c); mean, rstd (n) are saved for the backward. out is written as
     * {@code outType}: F32, or BF16 (each value rounded to nearest even, as the bf16 GEMM rounds;
     * only where {@link #storesBf16Activations}).
     */
    void layerNormForward(MemorySegment out, DType outType, MemorySegment mean, MemorySegment rstd,
                          MemorySegment inp, MemorySegment weight, MemorySegment bias, int n, int c);

    /** Accumulates dinp (n, c), dweight (c), dbias (c). See docs/KERNELS.md#layernorm. */
    void layerNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dbias,
                           MemorySegment dout, MemorySegment inp, MemorySegment weight,
                           MemorySegment mean, MemorySegment rstd, int n, int c);

    // ---------------------------------------------------------------- GELU (GPT-2 tanh form)

    /**
     * {@code out = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))}, elementwise over n; out written as
     * {@code outType} (as {@link #layerNormForward}'s).
     */
    void geluForward(MemorySegment out, DType outType, MemorySegment inp, long n);

    /** {@code dinp += gelu'(inp) * dout}. */
    void geluBackward(MemorySegment dinp, MemorySegment inp, MemorySegment dout, long n);

    /**
     * The backward of {@link #linearForward} over gelu(inp), with gelu(inp) not kept from the
     * forward: inp (n, c) fp32, weight (c, oc); gelu (n, c) of {@code geluType} is scratch that
     * gets gelu(inp) again and dgelu (n, c) fp32 scratch for its gradient. {@code dinp =
     * gelu'(inp) · (dout · weightᵀ) + dinpBeta · dinp} (dinpBeta 1 adds to a gradient, 0 writes a
     * new one over whatever is there, with the bits of adding to zeros; dinp may be null: not
     * needed), dweight and dbias (may be null) added to as by {@link #linearBackward}. As written
     * here: GELU, the linear's backward, GELU's backward; a backend may order the work otherwise for
     * the same values (one pass for the GELU and its gradient once the linear's input gradient is there).
     */
    default void geluLinearBackward(MemorySegment dinp, float dinpBeta, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                                    MemorySegment inp, MemorySegment weight, MemorySegment gelu, DType geluType, MemorySegment dgelu,
                                    int n, int c, int oc) {
        requireWriteOrAdd("geluLinearBackward", "dinpBeta", dinpBeta);
        geluForward(gelu, geluType, inp, (long) n * c);
        linearBackward(dinp == null ? null : dgelu, 0f, dweight, dbias, dout, gelu, geluType, weight, n, c, oc);
        if (dinp != null) {
            if (dinpBeta == 0f) fill(dinp, 0f, (long) n * c);
            geluBackward(dinp, inp, dgelu, (long) n * c);
        }
    }

    /** A backward kernel's beta for a gradient it writes (0) or adds to (1); any other is refused, naming the kernel. */
    static void requireWriteOrAdd(String kernel, String name, float beta) {
        if (beta != 0f && beta != 1f) throw new IllegalArgumentException(kernel + ": " + name + " is 0 or 1, got " + beta);
    }

    // ---------------------------------------------------------------- RMSNorm (the Llama family)

    /**
     * Per row: {@code out = inp * rstd * weight}, {@code rstd = 1 / √(mean(inp²) + eps)}. inp, out
     * are (n, c); weight (c); rstd (n) is saved for the backward; out is written as {@code outType}
     * (as {@link #layerNormForward}'s). See docs/KERNELS.md#rmsnorm.
     */
    void rmsNormForward(MemorySegment out, DType outType, MemorySegment rstd, MemorySegment inp, MemorySegment weight, int n, int c, float eps);

    /**
     * Accumulates {@code dinp += rstd (g - norm · mean(g · norm))}, g = dout * weight, norm = inp * rstd,
     * and {@code dweight += Σ_rows dout * norm}; either output may be null. See docs/KERNELS.md#rmsnorm.
     */
    void rmsNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dout, MemorySegment inp,
                         MemorySegment weight, MemorySegment rstd, int n, int c);

    // ---------------------------------------------------------------- SwiGLU (the Llama family's MLP)

    /**
     * {@code out = silu(gate) * up}, {@code silu(x) = x σ(x)}, elementwise over n; out written as
     * {@code outType} (as {@link #layerNormForward}'s).
     */
    void swiGluForward(MemorySegment out, DType outType, MemorySegment gate, MemorySegment up, long n);

    /** Accumulates {@code dgate += dout * up * silu'(gate)} and {@code dup += dout * silu(gate)}, silu' = σ (1 + x (1 − σ)). */
    void swiGluBackward(MemorySegment dgate, MemorySegment dup, MemorySegment dout, MemorySegment gate, MemorySegment up, long n);

    // ---------------------------------------------------------------- rotary positions (the Llama family)

    /**
     * Rotary position embedding (Hugging Face's rotate_half layout). inp and out are (b, t, rowStride)
     * with head h of a row at {@code offset + h·hs}; for each head at position p and each j < hs/2
     * the pair (x_j, x_{j+hs/2}) is rotated by the angle whose cos and sin are
     * {@code cosSin[(p·hs/2 + j)·2 + 0..1]} ((t, hs/2, 2) floats). out may be inp. See docs/KERNELS.md#rope.
     */
    void ropeForward(MemorySegment out, MemorySegment inp, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset);

    /** Accumulates the inverse rotation of dout into dinp (same layout; dinp must not be dout). */
    void ropeBackward(MemorySegment dinp, MemorySegment dout, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset);

    // ---------------------------------------------------------------- heads shared by groups (grouped-query attention)

    /**
     * For each of {@code rows} rows: head h of out (at {@code outOffset + h·hs}, row stride
     * {@code outStride}) is head h / group of inp (at {@code inOffset}, stride {@code inStride}),
     * for h < heads·group: the k or v heads of grouped-query attention laid out for every q head.
     */
    void repeatHeadsForward(MemorySegment out, int outStride, int outOffset, MemorySegment inp, int inStride, int inOffset,
                            int rows, int heads, int group, int hs);

    /** Accumulates into head g of dinp the sum of the group's heads of dout (the same layouts). */
    void repeatHeadsBackward(MemorySegment dinp, int inStride, int inOffset, MemorySegment dout, int outStride, int outOffset,
                             int rows, int heads, int group, int hs);

    // ---------------------------------------------------------------- causal self-attention

    /**
     * Multi-head causal attention. qkv is (b, t, 3c) holding q, k, v side by side, each split into
     * nh heads of hs = c / nh; out is (b, t, c), written as {@code outType} (as
     * {@link #layerNormForward}'s); att is (b, nh, t, t) and receives the softmax probabilities
     * (zero above the diagonal), saved for {@link #attentionBackward}, or is null: then no (t, t)
     * is kept, the probabilities are made in bands of rows in the kernels' own scratch (the same
     * out), and the backward is {@link #attentionBackwardInBands}. Scale 1/√hs.
     */
    void attentionForward(MemorySegment out, DType outType, MemorySegment att, MemorySegment qkv, int b, int t, int c, int nh);

    /**
     * dqkv (b, t, 3c) = the gradient of the attention's input + dqkvBeta · dqkv: dqkvBeta 1 adds to a
     * gradient, 0 writes a new one over whatever is there (the values of adding to zeros). datt is
     * (b, nh, t, t) scratch the kernel may overwrite (the CPU kernels use it only on their
     * AVX512-BF16 path; elsewhere they work a band of rows at a time in scratch of their own); att
     * and qkv are the forward's.
     */
    void attentionBackward(MemorySegment dqkv, float dqkvBeta, MemorySegment datt, MemorySegment dout,
                           MemorySegment qkv, MemorySegment att, int b, int t, int c, int nh);

    /**
     * The backward of {@link #attentionForward} without kept probabilities: dqkv as
     * {@link #attentionBackward}'s, the probabilities made again from qkv a band of rows at a time
     * and their gradient formed a band at a time, in the kernels' own scratch (a few bands of
     * (rows, t) in flight, never (b, nh, t, t)). The same function as {@link #attentionBackward};
     * where that one's sums over the rows run in another order (a backend's products over whole
     * heads), the last bits may differ (docs/KERNELS.md#without-kept-probabilities).
     */
    void attentionBackwardInBands(MemorySegment dqkv, float dqkvBeta, MemorySegment dout, MemorySegment qkv, int b, int t, int c, int nh);

    /**
     * One new query row per sequence attending over a key/value cache (generation with a KV
     * cache; forward only). q is (b, nh·hs); keys and values are (b, maxLen, kvh·hs), rows
     * [0, len) filled, query head h reading key/value head h / (nh / kvh) (grouped-query
     * attention; kvh = nh for plain multi-head); out is (b, nh·hs); scores is (b, nh, maxLen)
     * scratch the kernel overwrites. Scale 1/√hs, softmax over the len positions; in fp32 under
     * either precision (one query row's products gain nothing from a bf16 GEMM).
     */
    void attentionDecode(MemorySegment out, MemorySegment scores, MemorySegment q, MemorySegment keys, MemorySegment values,
                         int b, int len, int maxLen, int nh, int kvh, int hs);

    // ---------------------------------------------------------------- residual

    /** {@code out = a + b}, elementwise over n. */
    void residualForward(MemorySegment out, MemorySegment a, MemorySegment b, long n);

    /** {@code dst += src}, elementwise over n: the residual's backward into each input. */
    void accumulate(MemorySegment dst, MemorySegment src, long n);

    // ---------------------------------------------------------------- fused softmax cross-entropy

    /**
     * Fused classifier, one pass per row (llm.c's): {@code losses[r] = -log softmax(logits[r])[targets[r]]},
     * and, when {@code writeGradient}, the gradient {@code gradScale * (softmax - onehot)} is
     * written <em>in place over</em> logits (so no separate (n, v) buffer exists).
     * Rows whose target equals {@code ignoreIndex} get loss 0 and gradient 0.
     * logits is (n, v), targets int32 (n), losses (n).
     *
     * @return the number of rows whose target is not ignoreIndex
     * @throws IllegalArgumentException naming the row when a target is outside [0, v) and not ignoreIndex
     */
    int softmaxCrossEntropy(MemorySegment losses, MemorySegment logits, MemorySegment targets,
                            int n, int v, int ignoreIndex, boolean writeGradient, float gradScale);

    /**
     * {@link #softmaxCrossEntropy} for a caller that has checked and counted the targets itself,
     * once for many calls (the chunked LM head, once a chunk): nothing comes back, so a device
     * backend need not read the targets or wait. A device backend leaves a row whose target is
     * outside [0, v) (and not ignoreIndex) NaN, loss and gradient, instead of reading past the row.
     */
    default void softmaxCrossEntropyRows(MemorySegment losses, MemorySegment logits, MemorySegment targets,
                                         int n, int v, int ignoreIndex, boolean writeGradient, float gradScale) {
        softmaxCrossEntropy(losses, logits, targets, n, v, ignoreIndex, writeGradient, gradScale);
    }

    // ---------------------------------------------------------------- rows of logits

    /**
     * Per row: {@code out[r] = log Σ_j exp(scale · x[r, j])} (the full-vocabulary logsumexp of
     * logits at temperature 1/scale). x is (n, v), not modified; out is (n); scale &gt; 0.
     */
    void logsumexpRows(MemorySegment out, MemorySegment x, int n, int v, float scale);

    /**
     * Per row: the index of the largest {@code x[r, j]}, the first on ties; NaN never wins; 0
     * when no entry is above −inf. x is (n, v), out int32 (n).
     */
    void argmaxRows(MemorySegment out, MemorySegment x, int n, int v);

    /**
     * Per row: a token id drawn from softmax(x[r] / temperature) over its topK largest entries
     * (ties to the lower index; topK 0 or ≥ v: every entry) with the uniform number u[r] ∈ [0, 1):
     * the first candidate j, in index order, with p_j &gt; 0 and Σ_{i ≤ j} p_i &gt; u[r] Σ_i p_i,
     * where p_j = exp((x[r, j] − max_r) / temperature) in float64. NaN entries are never
     * candidates (p = 0). temperature 0, or a row without mass (an entry of +inf), gives
     * {@link #argmaxRows}' index. x is (n, v) fp32, not modified; u float64 (n); out int32 (n).
     * Each backend sums in an order of its own, so a draw may differ between backends only where
     * u[r] Σ p lies within rounding of a boundary (docs/KERNELS.md, "sampling a token").
     */
    void sampleRows(MemorySegment out, MemorySegment x, MemorySegment u, int n, int v, double temperature, int topK);

    /** Whether sampleRows' arguments ask for the argmax (temperature 0), once they are checked: temperature finite and ≥ 0, topK ≥ 0. */
    static boolean greedy(double temperature, int topK) {
        if (!(temperature >= 0 && Double.isFinite(temperature))) throw new IllegalArgumentException("temperature must be a finite number >= 0, got " + temperature);
        if (topK < 0) throw new IllegalArgumentException("top-k must be >= 0, got " + topK);
        return temperature == 0;
    }

    // ---------------------------------------------------------------- fused distillation loss

    /**
     * The fused distillation loss over n token rows, one pass structure per row (see
     * docs/KERNELS.md#distillation-losses): per row
     * {@code total = alpha · CE(softmax(s), label) + (1 − alpha) · [T²] · D(p_T ‖ q_T)}.
     *
     * @param student       student logits (n, vocab), fp32
     * @param grad          where {@code gradScale · d(Σ_rows total)/ds} goes: null for none, the
     *                      student segment itself for in place, or another (n, vocab) buffer
     * @param teacher       dense, top-k or sampled targets; teacher vocabulary ≤ vocab
     * @param labels        int32 (n) hard labels, or null (then alpha must be 0); a label equal to
     *                      the ignore index masks its row out (loss 0, gradient 0)
     * @param rowCe         (n) fp32 per-row CE, or null
     * @param rowDivergence (n) fp32 per-row divergence (T²-scaled when on), or null
     * @return the sums over the rows that counted
     * @throws IllegalArgumentException naming the row, the id or the option on bad input
     */
    DistillSums distillLoss(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                            MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab,
                            DistillOptions options, float gradScale);

    /**
     * {@link #distillLoss} for a caller that adds the rows up itself, once for many calls
     * ({@link DistillSums#ofRows}): each row's CE and divergence go to rowCe and rowDivergence
     * (both required), the gradient as distillLoss writes it, and nothing comes back, so a device
     * backend need not wait for the call to finish (the chunked LM head calls it once a chunk and
     * reads the rows once a step). The caller has checked the labels
     * ({@link DistillOptions#checkLabels}); a device backend leaves a row with a label outside the
     * vocabulary NaN instead of reading past the row.
     */
    default void distillLossRows(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                                 MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab, DistillOptions options,
                                 float gradScale) {
        distillLoss(student, grad, teacher, labels, rowCe, rowDivergence, n, vocab, options, gradScale);
    }

    // ---------------------------------------------------------------- feature (hidden-state) distillation

    /**
     * The distance between student and teacher hidden states, fused per row (see
     * docs/KERNELS.md#feature-distances): student s (n, d) fp32 against teacher t (n, d) of
     * {@code teacherType} (F32, F16 or BF16). Per row
     * <pre>
     *   MSE:    loss = (1/d) Σ_k (s_k − t_k)²                          ds = (2/d)(s − t)
     *   cosine: loss = 1 − s·t / den, den = max(‖s‖, ε) max(‖t‖, ε)      ds = cos · s/‖s‖² − t/den   (‖s‖ &gt; ε)
     * </pre>
     * rowLoss (n) gets each row's loss; grad (n, d), when not null, gets
     * {@code += gradScale · d loss/ds}.
     */
    void featureDistance(FeatureDistance distance, MemorySegment rowLoss, MemorySegment grad, MemorySegment student,
                         MemorySegment teacher, DType teacherType, int n, int d, float gradScale);

    // ---------------------------------------------------------------- optimizer

    /**
     * AdamW with decoupled weight decay and bias correction, step ≥ 1, over n elements:
     * {@code m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²;
     * p -= lr (m̂ / (√v̂ + eps) + weightDecay p)}.
     */
    void adamW(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, long n,
               float lr, float beta1, float beta2, float eps, float weightDecay, int step);

    /**
     * {@link #adamW} over every span of a parameter block ({@code params}, {@code grads}, {@code m}
     * and {@code v} each the whole block), each span with its own weight decay, on the gradients
     * times {@code gradScale} (gradient clipping's factor, 1 when it does not clip): the bits of
     * {@link #scale} by it and then one {@code adamW} per span, which is what backends without a
     * faster way do (leaving the gradients scaled; a backend that folds the factor in leaves them
     * as they were). The CPU and CUDA fold it in, saving a pass over the gradients, and CUDA
     * updates the whole block in one launch instead of one per tensor.
     */
    default void adamWSpans(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, ParameterSpans spans,
                            float gradScale, float lr, float beta1, float beta2, float eps, int step) {
        for (int i = 0; i < spans.count(); i++) {
            long bytes = 4 * spans.offset(i), len = 4 * spans.length(i);
            if (gradScale != 1f) scale(grads.asSlice(bytes, len), gradScale, spans.length(i));
            adamW(params.asSlice(bytes, len), grads.asSlice(bytes, len), m.asSlice(bytes, len), v.asSlice(bytes, len), spans.length(i),
                    lr, beta1, beta2, eps, spans.weightDecay(i), step);
        }
    }

    /** {@code Σ x²} over n elements, accumulated in float64 (global gradient norm). */
    double sumOfSquares(MemorySegment x, long n);

    /** {@code x *= s} over n elements (gradient clipping). */
    void scale(MemorySegment x, float s, long n);

    /** {@code x[:] = value} over n fp32 elements. */
    void fill(MemorySegment x, float value, long n);

    /** Releases threads and native resources; the kernels must not be used afterwards. */
    @Override
    void close();
}
