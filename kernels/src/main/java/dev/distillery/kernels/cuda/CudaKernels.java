package dev.distillery.kernels.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import dev.distillery.bindings.CudaException;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.DeviceCollectives;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The {@link Kernels} contract on a GPU: every op is a kernel of the fatbin
 * ({@code cuda/src/main/cuda}) or a cuBLAS GEMM, launched through a {@link CudaBackend}.
 *
 * <p>Buffers are <em>device</em> memory: each {@code MemorySegment} argument carries a device
 * address ({@link #allocate(long)} makes them), which is never dereferenced on the host. The few
 * values the contract returns or validates on the host (token ids, targets and labels to check,
 * per-row losses to sum, gradient-norm partials) are copied back explicitly.
 *
 * <p>Attention takes its heads apart into one (t, hs) matrix per (batch element, head), so that
 * each of its products is one strided-batched GEMM over all of them, around the causal softmax
 * kernels (docs/DESIGN-NOTES.md, 39).
 *
 * <p>Status: passes the same {@code KernelConformance} suite as {@code CpuKernels}, and trains the
 * student like {@code CpuKernels} does, under the CPU emulation of the backend (tests); never yet
 * run on a GPU from this project's machines.
 */
public final class CudaKernels implements Kernels {

    private final CudaBackend gpu;
    private final boolean ownsBackend;
    private final Precision precision;
    private final DeviceScratch scratch = new DeviceScratch();
    /** bf16 copies of the two operands of a GEMM under {@link Precision#BF16}. */
    private final DeviceScratch bf16Operands = new DeviceScratch();
    /** Attention's heads apart, their products and (under bf16) the rounded probabilities. */
    private final DeviceScratch attentionHeads = new DeviceScratch();
    /** The chunks of the last {@link ParameterSpans} AdamW updated ({@link #adamWSpans}). */
    private final DeviceScratch adamWChunks = new DeviceScratch();
    /** The partial column sums of {@link ColumnSums}: bias, layernorm and RMSNorm parameter gradients. */
    private final DeviceScratch columnPartials = new DeviceScratch();
    /** The positions grouped by token for the embedding's backward ({@link EmbeddingGrads}). */
    private final DeviceScratch embeddingGroups = new DeviceScratch();
    private ParameterSpans chunked;
    private int chunks;
    /** Elements of one chunk of {@code ops_adamw_chunks}, one thread block's work. */
    static final long ADAMW_CHUNK = 1 << 16;
    /** The bf16 copies of held segments ({@link #holdConstant} under bf16). */
    private final List<HeldCopy> held = new ArrayList<>();
    /**
     * The copies of closed holds by size, for the next hold of that size: a training step holds its
     * parameters every step, and a cuMemAlloc / cuMemFree pair each time would wait for the device.
     */
    private final Map<Long, ArrayDeque<Long>> spareCopies = new HashMap<>();
    private boolean closed;

    /** Kernels on {@code gpu}, which the caller keeps and closes after these kernels. */
    public CudaKernels(CudaBackend gpu) {
        this(gpu, false, Precision.FP32);
    }

    /** Kernels on {@code gpu} (not closed with them) with the GEMMs' {@code precision}. */
    public CudaKernels(CudaBackend gpu, Precision precision) {
        this(gpu, false, precision);
    }

    /** Kernels on {@code gpu} with the GEMMs' {@code precision}, closing {@code gpu} when they close. */
    public static CudaKernels owning(CudaBackend gpu, Precision precision) {
        return new CudaKernels(gpu, true, precision);
    }

    private CudaKernels(CudaBackend gpu, boolean ownsBackend, Precision precision) {
        this.gpu = gpu;
        this.ownsBackend = ownsBackend;
        this.precision = precision;
    }

    @Override
    public Precision precision() {
        return precision;
    }

    /** Kernels on CUDA device {@code ordinal} ({@link CudaDevice#open}); closing them closes the device. */
    public static CudaKernels open(int ordinal, boolean tf32) {
        return open(ordinal, tf32, Precision.FP32);
    }

    /** {@link #open(int, boolean)} with the GEMMs' {@code precision}. */
    public static CudaKernels open(int ordinal, boolean tf32, Precision precision) {
        return new CudaKernels(CudaDevice.open(ordinal, tf32), true, precision);
    }

    @Override
    public String describe() {
        return "cuda (" + gpu.describe() + (precision == Precision.BF16 ? ", bf16 GEMMs with fp32 sums" : "") + ")";
    }

    // ---------------------------------------------------------------- memory

    /** NCCL when this is a real device and libnccl loads (not under the CPU emulation). */
    @Override
    public Optional<DeviceCollectives> deviceCollectives() {
        return gpu instanceof CudaDevice d ? Optional.ofNullable(NcclCollectives.on(d)) : Optional.empty();
    }

    @Override
    public boolean hostAccessible() {
        return false;
    }

    /**
     * Device memory: a segment whose address is the device pointer, sized but never to be read on
     * the host; {@code cuMemFree} runs when {@code owner} closes (skipped once these kernels are
     * closed: the context's teardown has released it).
     */
    @Override
    public MemorySegment allocate(Arena owner, long bytes) {
        long address = deviceAlloc(bytes);
        return MemorySegment.ofAddress(address).reinterpret(bytes, owner, s -> {
            if (!closed) gpu.free(address);
        });
    }

    /** Page-locked host memory ({@code cuMemAllocHost}), freed when {@code owner} closes. */
    @Override
    public MemorySegment allocateStaging(Arena owner, long bytes) {
        MemorySegment host = gpu.allocHost(bytes);
        return host.reinterpret(bytes, owner, s -> {
            if (!closed) gpu.freeHost(host);
        });
    }

    @Override
    public void copyFromHost(MemorySegment dst, MemorySegment hostSrc, long bytes) {
        if (bytes > 0) gpu.upload(dst.address(), hostSrc, bytes);
    }

    @Override
    public void copyToHost(MemorySegment hostDst, MemorySegment src, long bytes) {
        if (bytes > 0) gpu.download(hostDst, src.address(), bytes);
    }

    @Override
    public void copyFromHostAsync(MemorySegment dst, MemorySegment hostSrc, long bytes) {
        if (bytes > 0) gpu.uploadAsync(dst.address(), hostSrc, bytes);
    }

    @Override
    public void joinCopies() {
        gpu.joinCopies();
    }

    @Override
    public void copy(MemorySegment dst, MemorySegment src, long bytes) {
        if (bytes > 0) gpu.copyDeviceToDevice(dst.address(), src.address(), bytes);
    }

    @Override
    public void synchronize() {
        gpu.synchronize();
    }

    private static CudaBackend.Ptr p(MemorySegment s) {
        return new CudaBackend.Ptr(s == null ? 0L : s.address());
    }

    private static CudaBackend.Ptr p(long address) {
        return new CudaBackend.Ptr(address);
    }

    private int grid(long n) {
        return gpu.grid(n);
    }

    /**
     * {@code bytes} of device memory. The closed holds' copies kept for the next hold are a cache:
     * where the device is full they are freed (after the kernels that may still read them) and the
     * allocation tried once more, so keeping them never makes an allocation fail.
     */
    private long deviceAlloc(long bytes) {
        try {
            return gpu.alloc(bytes);
        } catch (CudaException e) {
            if (!outOfMemory(e) || spareCopies.values().stream().allMatch(ArrayDeque::isEmpty)) throw e;
            gpu.synchronize();
            freeSpareCopies();
            return gpu.alloc(bytes);
        }
    }

    private static boolean outOfMemory(CudaException e) {
        return "CUDA_ERROR_OUT_OF_MEMORY".equals(e.statusName());
    }

    private void freeSpareCopies() {
        for (ArrayDeque<Long> spare : spareCopies.values()) for (long copy : spare) gpu.free(copy);
        spareCopies.clear();
    }

    /** A device buffer reused across calls, grown when a call needs more. */
    private final class DeviceScratch {
        private long address;
        private long bytes;

        /** The buffer, at least {@code need} bytes long. */
        long atLeast(long need) {
            if (need > bytes) {
                // cuMemFree "may" wait for the kernels still reading the old buffer, not must;
                // growing is rare (a step's first calls), so wait here
                if (address != 0) gpu.synchronize();
                free();
                address = deviceAlloc(need);
                bytes = need;
            }
            return address;
        }

        void free() {
            if (address != 0) gpu.free(address);
            address = 0;
            bytes = 0;
        }
    }

    /** {@code bytes} rounded up to 256, so that the pieces of one scratch buffer stay aligned. */
    private static long aligned(long bytes) {
        return (bytes + 255) / 256 * 256;
    }

    /** n token ids: from their host copy where the caller has one, else read back from the device (a wait). */
    private int[] tokenIds(MemorySegment device, MemorySegment host, int n) {
        return host != null ? host.asSlice(0, 4L * n).toArray(ValueLayout.JAVA_INT) : ints(device, 0, n);
    }

    private int[] ints(MemorySegment device, long offsetElements, int n) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment h = a.allocate(4L * Math.max(1, n), 64);
            gpu.download(h, device.address() + 4 * offsetElements, 4L * n);
            return h.toArray(ValueLayout.JAVA_INT);
        }
    }

    private float[] floats(long device, int n) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment h = a.allocate(4L * Math.max(1, n), 64);
            gpu.download(h, device, 4L * n);
            return h.asSlice(0, 4L * n).toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    // ---------------------------------------------------------------- GEMM

    /**
     * Row-major (the {@link Kernels#gemm} contract) through column-major cuBLAS: C^T = op(B)^T op(A)^T,
     * so the operands and m/n swap while the strides stay. Batched when {@code batch} &gt; 1.
     */
    static void rowMajorGemm(CudaBackend gpu, boolean transA, boolean transB, int m, int n, int k, float alpha,
                             long a, int lda, long strideA, long b, int ldb, long strideB, float beta, long c, int ldc,
                             long strideC, int batch) {
        if (batch == 1) gpu.sgemm(transB, transA, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
        else gpu.sgemmStridedBatched(transB, transA, n, m, k, alpha, b, ldb, strideB, a, lda, strideA, beta, c, ldc, strideC, batch);
    }

    /**
     * {@link #rowMajorGemm} in this kernels' precision. Under bf16, each operand's span (every
     * element from its first to its last, strides kept) is rounded into a bf16 copy
     * ({@code ops_round_to_bf16}), or read from a held segment's copy ({@link #holdConstant}), and
     * cuBLAS multiplies the copies with fp32 sums; an operand already stored as bf16
     * ({@code aBf16}, {@code bBf16}, only under bf16) goes to cuBLAS as it is.
     */
    private void gemmIn(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, boolean aBf16, int lda, long strideA,
                        long b, boolean bBf16, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch) {
        if (precision == Precision.FP32) {
            rowMajorGemm(gpu, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);
            return;
        }
        long spanA = span(transA ? k : m, transA ? m : k, lda, strideA, batch), spanB = span(transB ? n : k, transB ? k : n, ldb, strideB, batch);
        long copies = bf16Operands.atLeast(aligned(2 * spanA) + 2 * spanB);
        long a16 = aBf16 ? a : rounded(a, spanA, copies), b16 = bBf16 ? b : rounded(b, spanB, copies + aligned(2 * spanA));
        gpu.gemmBf16StridedBatched(transB, transA, n, m, k, alpha, b16, ldb, strideB, a16, lda, strideA, beta, c, ldc, strideC, batch);
    }

    /**
     * The typed {@link Kernels#gemm}: under bf16 an operand stored as bf16 goes to cuBLAS as it is,
     * and only an fp32 one is rounded (or read from its hold), so a GEMM on a bf16 activation
     * launches one rounding fewer.
     */
    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, DType aType, int lda,
                     MemorySegment b, DType bType, int ldb, float beta, MemorySegment c, int ldc) {
        if (aType == DType.F32 && bType == DType.F32) {
            gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        if (precision != Precision.BF16 || (aType != DType.F32 && aType != DType.BF16) || (bType != DType.F32 && bType != DType.BF16)) {
            Kernels.super.gemm(transA, transB, m, n, k, alpha, a, aType, lda, b, bType, ldb, beta, c, ldc);
            return;
        }
        if (m == 0 || n == 0) return;
        gemmIn(transA, transB, m, n, k, alpha, a.address(), aType == DType.BF16, lda, 0, b.address(), bType == DType.BF16, ldb, 0, beta,
                c.address(), ldc, 0, 1);
    }

    /** The bf16 copy of the {@code n} fp32 values at {@code x}: a hold's, or rounded now into {@code into}. */
    private long rounded(long x, long n, long into) {
        long held = heldCopy(x, n);
        return held != 0 ? held : stored(x, n, into);
    }

    /**
     * Under bf16, dout rounded once for both products (and each operand not already held), where
     * two GEMM calls would round it twice; under fp32 the contract's two GEMMs.
     */
    @Override
    public void linearBackward(MemorySegment dinp, float dinpBeta, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                               MemorySegment inp, DType inpType, MemorySegment weight, int n, int c, int oc) {
        if (precision == Precision.FP32 || n == 0 || c == 0 || oc == 0) {
            Kernels.super.linearBackward(dinp, dinpBeta, dweight, dbias, dout, inp, inpType, weight, n, c, oc);
            return;
        }
        long nd = (long) n * oc, nx = (long) n * c, nw = (long) c * oc;
        long copies = bf16Operands.atLeast(aligned(2 * nd) + aligned(2 * nx) + 2 * nw);
        long d16 = rounded(dout.address(), nd, copies);
        if (dinp != null) {
            long w16 = rounded(weight.address(), nw, copies + aligned(2 * nd) + aligned(2 * nx));
            storedGemm(false, true, n, c, oc, d16, oc, 0, w16, oc, 0, dinpBeta, dinp.address(), c, 0, 1);
        }
        long x16 = inpType == DType.BF16 ? inp.address() : rounded(inp.address(), nx, copies + aligned(2 * nd));
        storedGemm(true, false, c, oc, n, x16, c, 0, d16, oc, 0, 1f, dweight.address(), oc, 0, 1);
        if (dbias != null) sumRows(dbias, dout, n, oc);
    }

    /** A held segment's fp32 addresses [from, to) and the address of its bf16 copy. */
    private record HeldCopy(long from, long to, long copy) {
    }

    /** Where the bf16 copy of the {@code elements} fp32 values at {@code address} lies, when a hold has them; 0 otherwise. */
    private long heldCopy(long address, long elements) {
        for (HeldCopy h : held) {
            if (address >= h.from() && address + 4 * elements <= h.to()) return h.copy() + (address - h.from()) / 2;
        }
        return 0;
    }

    /**
     * Under bf16, the segment rounded once into a bf16 copy that every GEMM with an operand inside
     * it reads until the hold closes (the same bits as rounding at each GEMM, one launch instead of
     * one per GEMM). Nothing under fp32, or for a segment inside one already held.
     */
    @Override
    public ConstantHold holdConstant(MemorySegment operand) {
        long n = operand.byteSize() / 4;
        if (precision == Precision.FP32 || n == 0 || heldCopy(operand.address(), n) != 0) return ConstantHold.NONE;
        ArrayDeque<Long> spare = spareCopies.get(2 * n);
        long copy;
        if (spare != null && !spare.isEmpty()) {
            copy = spare.pop();
        } else {
            try {
                copy = deviceAlloc(2 * n);
            } catch (CudaException e) {
                // a hold saves time, not memory: with no room for the copy (a large model's bf16 half beside
                // it) each GEMM rounds its own operands, as without the hold
                if (outOfMemory(e)) return ConstantHold.NONE;
                throw e;
            }
        }
        gpu.launch(CudaKernel.OPS_ROUND_TO_BF16, grid(n), gpu.block(), p(copy), p(operand), n);
        HeldCopy h = new HeldCopy(operand.address(), operand.address() + 4 * n, copy);
        held.add(h);
        return () -> {   // the copy kept for the next hold of its size (deviceAlloc frees it where the device is full)
            if (held.remove(h)) spareCopies.computeIfAbsent(2 * n, bytes -> new ArrayDeque<>()).push(copy);
        };
    }

    /** The step's parameters rounded once under bf16 ({@link #holdConstant}): every weight is read by several GEMMs a step. */
    @Override
    public ConstantHold holdStepParameters(MemorySegment parameters) {
        return holdConstant(parameters);
    }

    /**
     * {@link #rowMajorGemm} on operands already stored in this kernels' precision (bf16 elements
     * under {@link Precision#BF16}, fp32 otherwise): nothing is rounded or copied.
     */
    private void storedGemm(boolean transA, boolean transB, int m, int n, int k, long a, int lda, long strideA, long b, int ldb,
                            long strideB, float beta, long c, int ldc, long strideC, int batch) {
        if (precision == Precision.FP32) rowMajorGemm(gpu, transA, transB, m, n, k, 1f, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);
        else gpu.gemmBf16StridedBatched(transB, transA, n, m, k, 1f, b, ldb, strideB, a, lda, strideA, beta, c, ldc, strideC, batch);
    }

    /** Bytes of one GEMM operand element as {@link #storedGemm} takes it. */
    private int storedBytes() {
        return precision == Precision.FP32 ? 4 : 2;
    }

    /**
     * {@code n} fp32 values at {@code x} as {@link #storedGemm} takes them: x itself under fp32,
     * their bf16 rounding written to {@code into} under bf16.
     */
    private long stored(long x, long n, long into) {
        if (precision == Precision.FP32) return x;
        gpu.launch(CudaKernel.OPS_ROUND_TO_BF16, grid(n), gpu.block(), p(into), p(x), n);
        return into;
    }

    /** {@code ops_heads_split}: parts of (b·t, parts·nh·hs) rows to (parts, b, nh, t, hs) at {@code out}, stored for {@link #storedGemm}. */
    private void splitHeads(long out, long in, int b, int t, int nh, int hs, int parts) {
        long n = (long) parts * b * t * nh * hs;
        CudaKernel split = precision == Precision.FP32 ? CudaKernel.OPS_HEADS_SPLIT : CudaKernel.OPS_HEADS_SPLIT_BF16;
        gpu.launch(split, grid(n), gpu.block(), p(out), p(in), b, t, nh, hs, parts);
    }

    /** {@code ops_heads_merge}: (parts, b, nh, t, hs) at {@code in} to the (b·t, parts·nh·hs) rows of {@code out}, written or added. */
    private void mergeHeads(long out, long in, int b, int t, int nh, int hs, int parts, boolean accumulate) {
        long n = (long) parts * b * t * nh * hs;
        gpu.launch(CudaKernel.OPS_HEADS_MERGE, grid(n), gpu.block(), p(out), p(in), b, t, nh, hs, parts, accumulate ? 1 : 0);
    }

    /** Elements from the first to the last of {@code batch} row-major (rows, cols) matrices at row stride ld. */
    private static long span(int rows, int cols, int ld, long stride, int batch) {
        return (batch - 1) * stride + (long) (rows - 1) * ld + cols;
    }

    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, int lda,
                     MemorySegment b, int ldb, float beta, MemorySegment c, int ldc) {
        if (m == 0 || n == 0) return;
        gemmIn(transA, transB, m, n, k, alpha, a.address(), false, lda, 0, b.address(), false, ldb, 0, beta, c.address(), ldc, 0, 1);
    }

    @Override
    public void gemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, int lda,
                                   long strideA, MemorySegment b, int ldb, long strideB, float beta, MemorySegment c, int ldc,
                                   long strideC, int batch) {
        if (m == 0 || n == 0 || batch == 0) return;
        gemmIn(transA, transB, m, n, k, alpha, a.address(), false, lda, strideA, b.address(), false, ldb, strideB, beta, c.address(),
                ldc, strideC, batch);
    }

    // ---------------------------------------------------------------- rows, embedding, layernorm, GELU, residual

    @Override
    public void broadcastRows(MemorySegment out, MemorySegment row, int n, int c) {
        gpu.launch(CudaKernel.OPS_BROADCAST_ROWS, grid((long) n * c), gpu.block(), p(out), p(row), n, c);
    }

    @Override
    public void sumRows(MemorySegment acc, MemorySegment x, int n, int c) {
        if (n == 0) return;
        ColumnSums.sumRows(gpu, columnPartials.atLeast(ColumnSums.scratchBytes(n, c, 1)), p(acc), p(x), n, c);
    }

    @Override
    public void embeddingForward(MemorySegment out, MemorySegment tokens, MemorySegment hostTokens, MemorySegment wte, MemorySegment wpe,
                                 int b, int t, int c, int vocab) {
        int[] ids = tokenIds(tokens, hostTokens, b * t);
        for (int row = 0; row < ids.length; row++) {
            if (ids[row] < 0 || ids[row] >= vocab) {
                throw new IllegalArgumentException("token id " + ids[row] + " at position " + row + " (batch " + row / t + ", time "
                        + row % t + ") is outside the vocabulary [0, " + vocab + ")");
            }
        }
        gpu.launch(CudaKernel.OPS_EMBEDDING_FORWARD, grid((long) b * t * c), gpu.block(), p(out), p(tokens), p(wte), p(wpe), b, t, c);
    }

    @Override
    public void embeddingBackward(MemorySegment dwte, MemorySegment dwpe, MemorySegment dout, MemorySegment tokens, MemorySegment hostTokens,
                                  int b, int t, int c) {
        if (b * t == 0) return;
        // the grouping up (and without a host copy the ids back first): one wait (two), at the end
        // of the backward where the device has little left to do
        int[] grouping = EmbeddingGrads.grouping(tokenIds(tokens, hostTokens, b * t), b, t);
        long device = embeddingGroups.atLeast(4L * (3L * b * t + 1));  // the most a grouping takes (every token distinct)
        try (Arena a = Arena.ofConfined()) {
            gpu.upload(device, a.allocateFrom(ValueLayout.JAVA_INT, grouping), 4L * grouping.length);
        }
        EmbeddingGrads.backward(gpu, p(dwte), p(dwpe), p(dout), p(device), EmbeddingGrads.groups(grouping, b * t), b, t, c);
    }

    @Override
    public void layerNormForward(MemorySegment out, DType outType, MemorySegment mean, MemorySegment rstd, MemorySegment inp,
                                 MemorySegment weight, MemorySegment bias, int n, int c) {
        CudaKernel kernel = writesBf16(outType, "layernorm") ? CudaKernel.OPS_LAYERNORM_FORWARD_BF16 : CudaKernel.OPS_LAYERNORM_FORWARD;
        if (n == 0) return;
        gpu.launch(kernel, n, gpu.block(), p(out), p(mean), p(rstd), p(inp), p(weight), p(bias), n, c);
    }

    @Override
    public void layerNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dbias, MemorySegment dout, MemorySegment inp,
                                  MemorySegment weight, MemorySegment mean, MemorySegment rstd, int n, int c) {
        if (n == 0) return;
        if (dinp != null) {
            gpu.launch(CudaKernel.OPS_LAYERNORM_BACKWARD_INPUT, n, gpu.block(), p(dinp), p(dout), p(inp), p(weight), p(mean), p(rstd), n, c);
        }
        if (dweight != null && dbias != null) {
            ColumnSums.layerNormParams(gpu, columnPartials.atLeast(ColumnSums.scratchBytes(n, c, 2)), p(dweight), p(dbias), p(dout), p(inp),
                    p(mean), p(rstd), n, c);
        }
    }

    @Override
    public void rmsNormForward(MemorySegment out, DType outType, MemorySegment rstd, MemorySegment inp, MemorySegment weight, int n, int c,
                               float eps) {
        CudaKernel kernel = writesBf16(outType, "RMSNorm") ? CudaKernel.OPS_RMSNORM_FORWARD_BF16 : CudaKernel.OPS_RMSNORM_FORWARD;
        if (n == 0) return;
        gpu.launch(kernel, n, gpu.block(), p(out), p(rstd), p(inp), p(weight), n, c, eps);
    }

    @Override
    public void rmsNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dout, MemorySegment inp,
                                MemorySegment weight, MemorySegment rstd, int n, int c) {
        if (n == 0) return;
        if (dinp != null) gpu.launch(CudaKernel.OPS_RMSNORM_BACKWARD_INPUT, n, gpu.block(), p(dinp), p(dout), p(inp), p(weight), p(rstd), n, c);
        if (dweight != null) {
            ColumnSums.rmsNormWeight(gpu, columnPartials.atLeast(ColumnSums.scratchBytes(n, c, 1)), p(dweight), p(dout), p(inp), p(rstd), n, c);
        }
    }

    @Override
    public void swiGluForward(MemorySegment out, DType outType, MemorySegment gate, MemorySegment up, long n) {
        CudaKernel kernel = writesBf16(outType, "SwiGLU") ? CudaKernel.OPS_SWIGLU_FORWARD_BF16 : CudaKernel.OPS_SWIGLU_FORWARD;
        gpu.launch(kernel, grid(n), gpu.block(), p(out), p(gate), p(up), n);
    }

    @Override
    public void swiGluBackward(MemorySegment dgate, MemorySegment dup, MemorySegment dout, MemorySegment gate, MemorySegment up, long n) {
        gpu.launch(CudaKernel.OPS_SWIGLU_BACKWARD, grid(n), gpu.block(), p(dgate), p(dup), p(dout), p(gate), p(up), n);
    }

    @Override
    public void ropeForward(MemorySegment out, MemorySegment inp, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        gpu.launch(CudaKernel.OPS_ROPE_ROTATE, grid((long) b * t * heads * (hs / 2)), gpu.block(), p(out), p(inp), p(cosSin), b * t, t, heads, hs,
                rowStride, offset, 1f, 0);
    }

    @Override
    public void ropeBackward(MemorySegment dinp, MemorySegment dout, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        gpu.launch(CudaKernel.OPS_ROPE_ROTATE, grid((long) b * t * heads * (hs / 2)), gpu.block(), p(dinp), p(dout), p(cosSin), b * t, t, heads, hs,
                rowStride, offset, -1f, 1);
    }

    @Override
    public void repeatHeadsForward(MemorySegment out, int outStride, int outOffset, MemorySegment inp, int inStride, int inOffset,
                                   int rows, int heads, int group, int hs) {
        gpu.launch(CudaKernel.OPS_REPEAT_HEADS_FORWARD, grid((long) rows * heads * group * hs), gpu.block(), p(out), outStride, outOffset,
                p(inp), inStride, inOffset, rows, heads, group, hs);
    }

    @Override
    public void repeatHeadsBackward(MemorySegment dinp, int inStride, int inOffset, MemorySegment dout, int outStride, int outOffset,
                                    int rows, int heads, int group, int hs) {
        gpu.launch(CudaKernel.OPS_REPEAT_HEADS_BACKWARD, grid((long) rows * heads * hs), gpu.block(), p(dinp), inStride, inOffset,
                p(dout), outStride, outOffset, rows, heads, group, hs);
    }

    @Override
    public void geluForward(MemorySegment out, DType outType, MemorySegment inp, long n) {
        CudaKernel kernel = writesBf16(outType, "GELU") ? CudaKernel.OPS_GELU_FORWARD_BF16 : CudaKernel.OPS_GELU_FORWARD;
        gpu.launch(kernel, grid(n), gpu.block(), p(out), p(inp), n);
    }

    @Override
    public void geluBackward(MemorySegment dinp, MemorySegment inp, MemorySegment dout, long n) {
        gpu.launch(CudaKernel.OPS_GELU_BACKWARD, grid(n), gpu.block(), p(dinp), p(inp), p(dout), n);
    }

    @Override
    public void residualForward(MemorySegment out, MemorySegment a, MemorySegment b, long n) {
        gpu.launch(CudaKernel.OPS_RESIDUAL_FORWARD, grid(n), gpu.block(), p(out), p(a), p(b), n);
    }

    @Override
    public void accumulate(MemorySegment dst, MemorySegment src, long n) {
        gpu.launch(CudaKernel.OPS_ACCUMULATE, grid(n), gpu.block(), p(dst), p(src), n);
    }

    // ---------------------------------------------------------------- attention

    /**
     * Attention over every (batch element, head) at once: q, k and v taken apart into (3, b, nh,
     * t, hs) (rounded to bf16 on the way under bf16), one strided-batched GEMM for the scores, the
     * causal softmax, one GEMM for att · V, and the heads put back into (b·t, c) rows. Without att,
     * the same a band of query rows at a time ({@link #attentionBand}).
     */
    @Override
    public void attentionForward(MemorySegment out, DType outType, MemorySegment att, MemorySegment qkv, int b, int t, int c, int nh) {
        boolean bf16 = writesBf16(outType, "attention");
        int hs = c / nh, bh = b * nh;
        long n = (long) b * t * c, tt = (long) t * t, th = (long) t * hs;
        int es = storedBytes();
        if (att == null) {
            int bandRows = attentionBandRows(bh, t);
            long band = (long) bh * bandRows * t;
            long heads = attentionHeads.atLeast(aligned(3 * n * es) + aligned(4 * n) + aligned(4 * band) + 2 * band);
            long q = heads, k = q + n * es, v = k + n * es, y = heads + aligned(3 * n * es), probs = y + aligned(4 * n);
            splitHeads(q, qkv.address(), b, t, nh, hs, 3);
            for (int i0 = 0; i0 < t; i0 += bandRows) {
                int i1 = Math.min(t, i0 + bandRows), rows = i1 - i0;
                long ps = attentionBand(probs, probs + aligned(4 * band), q, k, i0, i1, bh, t, hs);
                // y[bh] rows [i0, i1) = probs · V[0, i1)
                storedGemm(false, false, rows, hs, i1, ps, i1, (long) rows * i1, v, hs, th, 0f, y + 4L * i0 * hs, hs, th, bh);
            }
            mergeAttentionOutput(out, bf16, y, b, t, nh, hs);
            return;
        }
        long heads = attentionHeads.atLeast(aligned(3 * n * es) + aligned(4 * n) + 2 * bh * tt);
        long v = heads + 2 * n * es, y = heads + aligned(3 * n * es), probs = y + aligned(4 * n);
        long q = heads, k = q + n * es;
        splitHeads(q, qkv.address(), b, t, nh, hs, 3);
        storedGemm(false, true, t, t, hs, q, hs, th, k, hs, th, 0f, att.address(), t, tt, bh);
        gpu.launch(CudaKernel.OPS_ATTENTION_SOFTMAX_FORWARD, bh * t, gpu.block(), p(att), p(att), bh * t, t, 0, t, (float) (1 / Math.sqrt(hs)));
        // y[bh] (t, hs) = att · V
        storedGemm(false, false, t, hs, t, stored(att.address(), bh * tt, probs), t, tt, v, hs, th, 0f, y, hs, th, bh);
        mergeAttentionOutput(out, bf16, y, b, t, nh, hs);
    }

    private void mergeAttentionOutput(MemorySegment out, boolean bf16, long y, int b, int t, int nh, int hs) {
        if (bf16) gpu.launch(CudaKernel.OPS_HEADS_MERGE_BF16, grid((long) b * t * nh * hs), gpu.block(), p(out), p(y), b, t, nh, hs, 1);
        else mergeHeads(out.address(), y, b, t, nh, hs, 1, false);
    }

    /**
     * Bytes of one band of fp32 scores a band-wise attention keeps in flight, over all heads at
     * once (the backward holds two, and their bf16 copies under bf16: three times this). Large,
     * because each band costs a handful of launches and a GPU step is bound by launches at small
     * shapes: at 8 × 12 heads over 4,096 tokens a band of 512 MiB is 320 rows, 13 bands a layer,
     * where the whole (t, t) square would be 6 GiB a layer (docs/PERFORMANCE.md, on paper).
     */
    private static final long ATTENTION_BAND_BYTES = 512L << 20;
    /** Set by tests to run the bands on small shapes; 0: {@link #ATTENTION_BAND_BYTES}. */
    private static volatile long attentionBandBytes;

    static void attentionBandBytes(long bytes) {
        attentionBandBytes = bytes;
    }

    /**
     * Query rows per band: as many as fit {@link #ATTENTION_BAND_BYTES} of (bh, rows, t) fp32 scores,
     * a multiple of 32, at least 32 and at most t.
     */
    private static int attentionBandRows(int bh, int t) {
        long bytes = attentionBandBytes > 0 ? attentionBandBytes : ATTENTION_BAND_BYTES;
        long rows = bytes / (4L * bh * t) / 32 * 32;
        return (int) Math.min(t, Math.max(32, rows));
    }

    /**
     * The probabilities of query rows [i0, i1) of every head, (bh, i1 − i0, i1) at probs: scores Q[i0,
     * i1) · K[0, i1)ᵀ and the causal softmax. Returns them as {@link #storedGemm} takes them (probs,
     * or their bf16 rounding at stored).
     */
    private long attentionBand(long probs, long stored, long q, long k, int i0, int i1, int bh, int t, int hs) {
        int rows = i1 - i0;
        long th = (long) t * hs, band = (long) bh * rows * i1;
        storedGemm(false, true, rows, i1, hs, q + (long) i0 * hs * storedBytes(), hs, th, k, hs, th, 0f, probs, i1, (long) rows * i1, bh);
        gpu.launch(CudaKernel.OPS_ATTENTION_SOFTMAX_FORWARD, bh * rows, gpu.block(), p(probs), p(probs), bh * rows, rows, i0, i1,
                (float) (1 / Math.sqrt(hs)));
        return stored(probs, band, stored);
    }

    @Override
    public void attentionDecode(MemorySegment out, MemorySegment scores, MemorySegment q, MemorySegment keys, MemorySegment values,
                                int b, int len, int maxLen, int nh, int kvh, int hs) {
        if (len < 1 || len > maxLen || nh % kvh != 0) {
            throw new IllegalArgumentException("attention over " + len + " of " + maxLen + " cached rows, " + nh + " heads over " + kvh);
        }
        gpu.launch(CudaKernel.OPS_ATTENTION_DECODE, b * nh, gpu.block(), p(out), p(scores), p(q), p(keys), p(values), len, maxLen, nh, kvh, hs);
    }

    /**
     * The backward of {@link #attentionForward}, batched the same way: q, k, v and the output
     * gradient taken apart, dV = attᵀ · dO and dpreatt through the softmax's backward, dQ and dK,
     * and the three added to dqkv in one pass (each the GEMM's sum added once, as a GEMM with
     * beta 1 would), or written over it when dqkvBeta is 0.
     */
    @Override
    public void attentionBackward(MemorySegment dqkv, float dqkvBeta, MemorySegment datt, MemorySegment dout, MemorySegment qkv,
                                  MemorySegment att, int b, int t, int c, int nh) {
        Kernels.requireWriteOrAdd("attentionBackward", "dqkvBeta", dqkvBeta);
        int hs = c / nh, bh = b * nh;
        long n = (long) b * t * c, tt = (long) t * t, th = (long) t * hs;
        int es = storedBytes();
        long heads = attentionHeads.atLeast(aligned(4 * n * es) + aligned(3 * 4 * n) + 2 * bh * tt);
        long q = heads, k = q + n * es, v = k + n * es, dO = v + n * es;
        long grads = heads + aligned(4 * n * es), dq = grads, dk = dq + 4 * n, dv = dk + 4 * n, probs = grads + aligned(3 * 4 * n);
        splitHeads(q, qkv.address(), b, t, nh, hs, 3);
        splitHeads(dO, dout.address(), b, t, nh, hs, 1);
        // datt = dO · Vᵀ;  dV = attᵀ · dO
        storedGemm(false, true, t, t, hs, dO, hs, th, v, hs, th, 0f, datt.address(), t, tt, bh);
        storedGemm(true, false, t, hs, t, stored(att.address(), bh * tt, probs), t, tt, dO, hs, th, 0f, dv, hs, th, bh);
        // datt becomes d(preatt), the 1/√hs scale included
        gpu.launch(CudaKernel.OPS_ATTENTION_SOFTMAX_BACKWARD, bh * t, gpu.block(), p(datt), p(datt), p(att), bh * t, t, 0, t,
                (float) (1 / Math.sqrt(hs)));
        long dpre = stored(datt.address(), bh * tt, probs);
        // dQ = dpreatt · K;  dK = dpreattᵀ · Q
        storedGemm(false, false, t, hs, t, dpre, t, tt, k, hs, th, 0f, dq, hs, th, bh);
        storedGemm(true, false, t, hs, t, dpre, t, tt, q, hs, th, 0f, dk, hs, th, bh);
        mergeHeads(dqkv.address(), grads, b, t, nh, hs, 3, dqkvBeta == 1f);
    }

    /**
     * {@link #attentionBackward} a band of query rows at a time, over every head at once, the
     * probabilities made again for each band: the last band first, since it reaches every row of dK
     * and dV, so it writes them and the bands above add to them.
     */
    @Override
    public void attentionBackwardInBands(MemorySegment dqkv, float dqkvBeta, MemorySegment dout, MemorySegment qkv, int b, int t, int c, int nh) {
        Kernels.requireWriteOrAdd("attentionBackwardInBands", "dqkvBeta", dqkvBeta);
        int hs = c / nh, bh = b * nh, bandRows = attentionBandRows(bh, t);
        long n = (long) b * t * c, th = (long) t * hs, band = (long) bh * bandRows * t;
        int es = storedBytes();
        long heads = attentionHeads.atLeast(aligned(4 * n * es) + aligned(3 * 4 * n) + 2 * aligned(4 * band) + 2 * aligned(2 * band));
        long q = heads, k = q + n * es, v = k + n * es, dO = v + n * es;
        long grads = heads + aligned(4 * n * es), dq = grads, dk = dq + 4 * n, dv = dk + 4 * n;
        long probs = grads + aligned(3 * 4 * n), dprobs = probs + aligned(4 * band);
        long probsStored = dprobs + aligned(4 * band), dprobsStored = probsStored + aligned(2 * band);
        splitHeads(q, qkv.address(), b, t, nh, hs, 3);
        splitHeads(dO, dout.address(), b, t, nh, hs, 1);
        float scale = (float) (1 / Math.sqrt(hs));
        for (int i0 = (t - 1) / bandRows * bandRows; i0 >= 0; i0 -= bandRows) {
            int i1 = Math.min(t, i0 + bandRows), rows = i1 - i0;
            long pBand = (long) rows * i1, dOBand = dO + (long) i0 * hs * es, qBand = q + (long) i0 * hs * es;
            float kvBeta = i1 == t ? 0f : 1f;
            long ps = attentionBand(probs, probsStored, q, k, i0, i1, bh, t, hs);
            // dV[0, i1) += probsᵀ · dO[i0, i1);  dprobs = dO[i0, i1) · V[0, i1)ᵀ, then d(scores) through the softmax
            storedGemm(true, false, i1, hs, rows, ps, i1, pBand, dOBand, hs, th, kvBeta, dv, hs, th, bh);
            storedGemm(false, true, rows, i1, hs, dOBand, hs, th, v, hs, th, 0f, dprobs, i1, pBand, bh);
            gpu.launch(CudaKernel.OPS_ATTENTION_SOFTMAX_BACKWARD, bh * rows, gpu.block(), p(dprobs), p(dprobs), p(probs), bh * rows, rows, i0, i1, scale);
            long dps = stored(dprobs, bh * pBand, dprobsStored);
            // dQ[i0, i1) = dpre · K[0, i1);  dK[0, i1) += dpreᵀ · Q[i0, i1)
            storedGemm(false, false, rows, hs, i1, dps, i1, pBand, k, hs, th, 0f, dq + 4L * i0 * hs, hs, th, bh);
            storedGemm(true, false, i1, hs, rows, dps, i1, pBand, qBand, hs, th, kvBeta, dk, hs, th, bh);
        }
        mergeHeads(dqkv.address(), grads, b, t, nh, hs, 3, dqkvBeta == 1f);
    }

    // ---------------------------------------------------------------- classifier and distillation

    @Override
    public int softmaxCrossEntropy(MemorySegment losses, MemorySegment logits, MemorySegment targets, int n, int v, int ignoreIndex,
                                   boolean writeGradient, float gradScale) {
        int[] t = ints(targets, 0, n);
        int valid = 0;
        for (int r = 0; r < n; r++) {
            if (t[r] == ignoreIndex) continue;
            if (t[r] < 0 || t[r] >= v) {
                throw new IllegalArgumentException("target " + t[r] + " at row " + r + " is outside [0, " + v + ") and is not the ignore index "
                        + ignoreIndex);
            }
            valid++;
        }
        softmaxCrossEntropyRows(losses, logits, targets, n, v, ignoreIndex, writeGradient, gradScale);
        return valid;
    }

    /** No targets down: launched, not waited for (Kernels.softmaxCrossEntropyRows). */
    @Override
    public void softmaxCrossEntropyRows(MemorySegment losses, MemorySegment logits, MemorySegment targets, int n, int v, int ignoreIndex,
                                        boolean writeGradient, float gradScale) {
        if (n > 0) {
            gpu.launch(CudaKernel.OPS_SOFTMAX_CROSS_ENTROPY, n, gpu.block(), p(losses), p(logits), p(targets), n, v, ignoreIndex,
                    writeGradient ? 1 : 0, gradScale);
        }
    }

    @Override
    public void logsumexpRows(MemorySegment out, MemorySegment x, int n, int v, float scale) {
        if (!(scale > 0)) throw new IllegalArgumentException("logsumexp scale must be positive, got " + scale);
        if (n > 0) gpu.launch(CudaKernel.OPS_LOGSUMEXP_ROWS, n, gpu.block(), p(out), p(x), n, v, scale);
    }

    @Override
    public void argmaxRows(MemorySegment out, MemorySegment x, int n, int v) {
        if (n > 0) gpu.launch(CudaKernel.OPS_ARGMAX_ROWS, n, gpu.block(), p(out), p(x), n, v);
    }

    @Override
    public void sampleRows(MemorySegment out, MemorySegment x, MemorySegment u, int n, int v, double temperature, int topK) {
        if (Kernels.greedy(temperature, topK)) {
            argmaxRows(out, x, n, v);
            return;
        }
        if (n <= 0) return;
        try (Arena call = Arena.ofConfined()) {
            MemorySegment sampling = call.allocate(16, 8);   // struct Sampling
            sampling.set(ValueLayout.JAVA_DOUBLE, 0, temperature);
            sampling.set(ValueLayout.JAVA_INT, 8, topK);
            // at most SAMPLE_BLOCK (256) threads: its shared histogram has a row of 16 digits per thread
            gpu.launch(CudaKernel.OPS_SAMPLE_ROWS, n, Math.min(gpu.block(), 256), p(out), p(x), p(u), n, v, sampling);
        }
    }

    @Override
    public void featureDistance(FeatureDistance distance, MemorySegment rowLoss, MemorySegment grad, MemorySegment student,
                                MemorySegment teacher, DType teacherType, int n, int d, float gradScale) {
        CudaKernel kernel = switch (teacherType) {
            case F32 -> CudaKernel.FEATURE_DISTANCE_F32;
            case F16 -> CudaKernel.FEATURE_DISTANCE_F16;
            case BF16 -> CudaKernel.FEATURE_DISTANCE_BF16;
            default -> throw new IllegalArgumentException("teacher hidden states must be F32, F16 or BF16, got " + teacherType);
        };
        if (n > 0) gpu.launch(kernel, n, gpu.block(), p(rowLoss), p(grad), p(student), p(teacher), n, d, distance.ordinal(), gradScale);
    }

    @Override
    public DistillSums distillLoss(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                                   MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab, DistillOptions options,
                                   float gradScale) {
        options.check(teacher, labels != null, vocab);
        int[] lab = labels == null ? null : ints(labels, 0, n);
        if (lab != null) options.checkLabels(lab, n, vocab);
        if (n == 0) return DistillSums.zero();
        long rows = scratch.atLeast(8L * n);
        long ce = rowCe != null ? rowCe.address() : rows, div = rowDivergence != null ? rowDivergence.address() : rows + 4L * n;
        launchLoss(student, grad, teacher, labels, ce, div, n, vocab, options, gradScale);
        float[] ces, divs;
        if (div == ce + 4L * n) {  // both in the scratch: one wait for the two
            float[] both = floats(ce, 2 * n);
            ces = Arrays.copyOfRange(both, 0, n);
            divs = Arrays.copyOfRange(both, n, 2 * n);
        } else {
            ces = floats(ce, n);
            divs = floats(div, n);
        }
        return DistillSums.ofRows(ces, divs, lab, n, options);
    }

    /** No label download and no sums back: launched, not waited for (Kernels.distillLossRows). */
    @Override
    public void distillLossRows(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                                MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab, DistillOptions options,
                                float gradScale) {
        options.check(teacher, labels != null, vocab);
        if (rowCe == null || rowDivergence == null) throw new IllegalArgumentException("distillLossRows writes both rowCe and rowDivergence");
        if (n > 0) launchLoss(student, grad, teacher, labels, rowCe.address(), rowDivergence.address(), n, vocab, options, gradScale);
    }

    /** The loss kernel of the teacher's kind over n rows, its per-row CE and divergence to ce and div. */
    private void launchLoss(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels, long ce, long div,
                            int n, int vocab, DistillOptions options, float gradScale) {
        int block = gpu.block();
        try (Arena call = Arena.ofConfined()) {
            MemorySegment params = distillParams(call, options, gradScale);
            switch (teacher) {
                case TeacherTargets.Dense d -> gpu.launch(lossKernel(d), n, block, p(student), p(grad),
                        p(d.logits()), p(labels), p(ce), p(div), n, vocab, d.vocab(), params);
                case TeacherTargets.TopK k -> {
                    // 0 tail bucket, 1 renormalize, 2 rescale (the shard's tail mass kept at another temperature)
                    int mode = options.topKMode() == DistillOptions.TopKMode.RENORMALIZE ? 1
                            : k.shardTemperature() != options.temperature() ? 2 : 0;
                    gpu.launch(lossKernel(k), n, block, p(student), p(grad), p(k.ids()), p(k.logits()),
                            p(k.logsumexp()), p(labels), p(ce), p(div), n, vocab, k.vocab(), k.k(), k.shardTemperature(), mode, params);
                }
                case TeacherTargets.Sampled sm -> gpu.launch(lossKernel(sm), n, block, p(student), p(grad), p(sm.ids()),
                        p(sm.weights()), p(labels), p(ce), p(div), n, vocab, sm.samples(), params);
                case TeacherTargets.Mixture m -> {
                    Object[] args = new Object[CudaKernel.DISTILL_MIXTURE.signature().length()];
                    args[0] = p(student);
                    args[1] = p(grad);
                    for (int i = 0; i < TeacherTargets.Mixture.MAX_TEACHERS; i++) {
                        args[2 + i] = p(i < m.teachers().size() ? m.teachers().get(i).logits() : null);
                    }
                    Object[] rest = {p(labels), p(ce), p(div), n, vocab, m.vocab(), mixtureSpec(call, m), params};
                    System.arraycopy(rest, 0, args, 2 + TeacherTargets.Mixture.MAX_TEACHERS, rest.length);
                    gpu.launch(lossKernel(m), n, block, args);
                }
            }
        }
    }

    /** The loss kernel for a teacher: one per teacher kind and logit type. */
    static CudaKernel lossKernel(TeacherTargets teacher) {
        return switch (teacher) {
            case TeacherTargets.Dense d -> byType(d.type(), CudaKernel.DISTILL_DENSE_F32, CudaKernel.DISTILL_DENSE_F16, CudaKernel.DISTILL_DENSE_BF16);
            case TeacherTargets.TopK k -> byType(k.type(), CudaKernel.DISTILL_TOPK_F32, CudaKernel.DISTILL_TOPK_F16, CudaKernel.DISTILL_TOPK_BF16);
            case TeacherTargets.Sampled s -> CudaKernel.DISTILL_SAMPLED;
            case TeacherTargets.Mixture m -> CudaKernel.DISTILL_MIXTURE;
        };
    }

    private static CudaKernel byType(DType type, CudaKernel f32, CudaKernel f16, CudaKernel bf16) {
        return switch (type) {
            case F32 -> f32;
            case F16 -> f16;
            case BF16 -> bf16;
            default -> throw new IllegalArgumentException("no CUDA loss kernel reads " + type + " teacher logits");
        };
    }

    /** distill::Params in C layout: float T, alpha; int divergence; float beta, divergence_scale, grad_t_factor, grad_scale; int ignore. */
    static MemorySegment distillParams(Arena arena, DistillOptions o, float gradScale) {
        MemorySegment p = arena.allocate(32, 16);
        int divergence = switch (o.divergence()) {
            case Divergence.ForwardKl f -> 0;
            case Divergence.ReverseKl r -> 1;
            case Divergence.Jsd j -> 2;
        };
        p.set(ValueLayout.JAVA_FLOAT, 0, o.temperature());
        p.set(ValueLayout.JAVA_FLOAT, 4, o.alpha());
        p.set(ValueLayout.JAVA_INT, 8, divergence);
        p.set(ValueLayout.JAVA_FLOAT, 12, o.divergence() instanceof Divergence.Jsd j ? (float) j.beta() : 0f);
        p.set(ValueLayout.JAVA_FLOAT, 16, o.divergenceScale());
        p.set(ValueLayout.JAVA_FLOAT, 20, o.gradientTemperatureFactor());
        p.set(ValueLayout.JAVA_FLOAT, 24, gradScale);
        p.set(ValueLayout.JAVA_INT, 28, o.ignoreIndex());
        return p;
    }

    /**
     * distill_loss.cu's MixtureSpec: int count, int type[8] (0 fp32, 1 fp16, 2 bf16), float
     * weight[8]; 68 bytes, 4-aligned.
     */
    static MemorySegment mixtureSpec(Arena arena, TeacherTargets.Mixture m) {
        int max = TeacherTargets.Mixture.MAX_TEACHERS;
        MemorySegment spec = arena.allocate(4 + 8L * max, 4);
        float[] weights = m.weights();
        spec.set(ValueLayout.JAVA_INT, 0, m.teachers().size());
        for (int i = 0; i < m.teachers().size(); i++) {
            int type = switch (m.teachers().get(i).type()) {
                case F32 -> 0;
                case F16 -> 1;
                case BF16 -> 2;
                default -> throw new IllegalArgumentException("no CUDA loss kernel reads " + m.teachers().get(i).type() + " teacher logits");
            };
            spec.set(ValueLayout.JAVA_INT, 4 + 4L * i, type);
            spec.set(ValueLayout.JAVA_FLOAT, 4 + 4L * max + 4L * i, weights[i]);
        }
        return spec;
    }

    // ---------------------------------------------------------------- optimizer and reductions

    @Override
    public void adamW(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, long n, float lr, float beta1,
                      float beta2, float eps, float weightDecay, int step) {
        gpu.launch(CudaKernel.OPS_ADAMW, grid(n), gpu.block(), p(params), p(grads), p(m), p(v), n, lr, beta1, beta2, eps, weightDecay, step);
    }

    /**
     * One launch for the whole block ({@code ops_adamw_chunks}): each span cut into chunks of at
     * most {@link #ADAMW_CHUNK} elements, the table of chunks uploaded once per {@link ParameterSpans}.
     */
    @Override
    public void adamWSpans(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, ParameterSpans spans,
                           float gradScale, float lr, float beta1, float beta2, float eps, int step) {
        if (spans != chunked) uploadChunks(spans);
        if (chunks == 0) return;
        long table = adamWChunks.atLeast(20L * chunks);   // as uploadChunks left it
        gpu.launch(CudaKernel.OPS_ADAMW_CHUNKS, Math.min(chunks, gpu.maxGrid()), gpu.block(), p(params), p(grads), p(m), p(v), p(table),
                p(table + 8L * chunks), p(table + 16L * chunks), chunks, gradScale, lr, beta1, beta2, eps, step);
    }

    /** The chunks of {@code spans} as three device arrays: starts (long), lengths (long), weight decays (float). */
    private void uploadChunks(ParameterSpans spans) {
        AdamWChunks cut = AdamWChunks.of(spans, ADAMW_CHUNK);
        int count = cut.count();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment host = a.allocate(20L * Math.max(1, count), 8);
            MemorySegment.copy(cut.starts(), 0, host, ValueLayout.JAVA_LONG, 0, count);
            MemorySegment.copy(cut.lengths(), 0, host, ValueLayout.JAVA_LONG, 8L * count, count);
            MemorySegment.copy(cut.decays(), 0, host, ValueLayout.JAVA_FLOAT, 16L * count, count);
            if (count > 0) gpu.upload(adamWChunks.atLeast(20L * count), host, 20L * count);
        }
        chunks = count;
        chunked = spans;
    }

    /**
     * The chunks {@code ops_adamw_chunks} updates: each span cut into pieces of at most
     * {@code chunk} elements, chunk i starting at starts[i], lengths[i] long, with its span's decay.
     */
    record AdamWChunks(long[] starts, long[] lengths, float[] decays) {
        static AdamWChunks of(ParameterSpans spans, long chunk) {
            int count = 0;
            for (int i = 0; i < spans.count(); i++) count += (int) ((spans.length(i) + chunk - 1) / chunk);
            long[] starts = new long[count], lengths = new long[count];
            float[] decays = new float[count];
            int c = 0;
            for (int i = 0; i < spans.count(); i++) {
                for (long at = 0; at < spans.length(i); at += chunk, c++) {
                    starts[c] = spans.offset(i) + at;
                    lengths[c] = Math.min(chunk, spans.length(i) - at);
                    decays[c] = spans.weightDecay(i);
                }
            }
            return new AdamWChunks(starts, lengths, decays);
        }

        int count() {
            return starts.length;
        }
    }

    @Override
    public double sumOfSquares(MemorySegment x, long n) {
        if (n == 0) return 0;
        int blocks = grid(n);
        long partials = scratch.atLeast(4L * blocks);
        gpu.launch(CudaKernel.OPS_SUM_OF_SQUARES, blocks, gpu.block(), p(partials), p(x), n);
        double sum = 0;
        for (float f : floats(partials, blocks)) sum += f;
        return sum;
    }

    @Override
    public void scale(MemorySegment x, float s, long n) {
        gpu.launch(CudaKernel.OPS_SCALE, grid(n), gpu.block(), p(x), s, n);
    }

    @Override
    public void fill(MemorySegment x, float value, long n) {
        gpu.launch(CudaKernel.OPS_FILL, grid(n), gpu.block(), p(x), value, n);
    }

    @Override
    public void close() {
        if (closed) return;
        scratch.free();
        bf16Operands.free();
        attentionHeads.free();
        adamWChunks.free();
        columnPartials.free();
        embeddingGroups.free();
        for (HeldCopy h : held) gpu.free(h.copy());
        held.clear();
        freeSpareCopies();
        closed = true;
        if (ownsBackend) gpu.close();
    }
}
