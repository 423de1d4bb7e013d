package dev.distillery.kernels.cpu;

import static dev.distillery.kernels.cpu.VectorOps.I32;
import static dev.distillery.kernels.cpu.VectorOps.LANES;
import static dev.distillery.kernels.cpu.VectorOps.SPECIES;
import static dev.distillery.kernels.cpu.VectorOps.get;
import static dev.distillery.kernels.cpu.VectorOps.ORDER;
import static dev.distillery.kernels.cpu.VectorOps.set;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicInteger;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.bindings.OpenBlasLibrary;
import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cpu.distill.FusedDistillLoss;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.kernels.distill.TeacherTargets;
import jdk.incubator.vector.FloatVector;

/**
 * The CPU implementation of {@link Kernels}: GEMM through CBLAS (or the Vector-API fallback),
 * everything else as Vector-API loops with rows split over a fixed {@link WorkerPool}.
 * Reductions across rows (layernorm's dweight, the gradient norm) are summed per chunk and the
 * chunks combined in order, so a run is bit-reproducible for a given thread count.
 *
 * <p>Not thread-safe: one caller at a time (the trainer's step loop); the parallelism is inside.
 */
public final class CpuKernels implements Kernels {

    /** Elements per task below which elementwise work stays on one thread. */
    private static final int ELEMENTWISE_GRAIN = 1 << 14;
    private static final float LAYERNORM_EPS = 1e-5f;
    private static final float GELU_SCALE = (float) Math.sqrt(2.0 / Math.PI);

    private final WorkerPool pool;
    /** Each pool thread's sampler: a decode step draws its tokens without allocating. */
    private final ThreadLocal<RowSampler> samplers = new ThreadLocal<>();
    private final Gemm gemm;
    /**
     * {@link #gemm} under fp32; under bf16 the fp32 GEMM of the products kept in fp32 (generation's
     * attention), made at its first use, so that a bf16 run that generates nothing loads no BLAS.
     */
    private volatile Gemm fp32Gemm;
    private final Gemm.Choice fp32Choice;
    private final Precision precision;
    /** Why a bf16 request runs fp32 GEMMs, or null. */
    private final String precisionNote;
    private final FusedDistillLoss distillLoss;
    private final CpuAttention attention;
    /** Per-chunk scratch for row reductions, grown on demand, reused across calls. */
    private float[][] partials = new float[0][];
    /**
     * Per-chunk scratch off the heap: {@link #sumRows}' column sums (the same loop over a heap
     * array wrapped as a segment took 3–4× as long, docs/PERFORMANCE.md, the training step),
     * attention's packed heads, bands and bf16 head products ({@link CpuAttention}) and the native
     * cross-entropy rows' exps.
     */
    private final Arena scratchArena = Arena.ofShared();
    private MemorySegment chunkScratch = MemorySegment.NULL;
    /**
     * Counters of the next row (or column) of C the bf16 GEMM's threads claim, a cache line each,
     * taken in turn by the calls ({@link #claimCounter}), so that calls from two threads (or one
     * inside another) never share one.
     */
    private final MemorySegment gemmClaimCounters = scratchArena.allocate(64L * GEMM_COUNTERS, 64);
    private final AtomicInteger gemmCalls = new AtomicInteger();
    private static final int GEMM_COUNTERS = 64;

    /** Threads from {@code distillery.threads} (default: available processors), GEMM from {@code distillery.gemm}. */
    public CpuKernels() {
        this(Integer.getInteger("distillery.threads", Runtime.getRuntime().availableProcessors()),
                System.getProperty("distillery.gemm", "auto"));
    }

    /**
     * @param threads  size of the worker pool (and of OpenBLAS' own pool)
     * @param gemmName "auto" (our native fp32 GEMM where the native CPU library runs, with OpenBLAS'
     *                 sgemv or the Vector API for single columns and single rows of small products;
     *                 else BLAS when it loads; else the
     *                 Vector API), "blas" (required) or "vector"
     */
    public CpuKernels(int threads, String gemmName) {
        this(threads, gemmName, Precision.FP32);
    }

    /**
     * @param precision {@link Precision#BF16}: every GEMM in bf16 where this CPU has bf16
     *                  arithmetic; elsewhere fp32, and {@link #describe()} says why
     */
    public CpuKernels(int threads, String gemmName, Precision precision) {
        this.pool = new WorkerPool(threads);
        this.distillLoss = new FusedDistillLoss(pool);
        String bf16Missing = precision == Precision.BF16 ? Bf16Gemm.unavailableReason() : null;
        this.precisionNote = bf16Missing == null ? null : "bf16 asked, fp32 GEMMs: " + bf16Missing;
        this.precision = precision == Precision.BF16 && bf16Missing == null ? Precision.BF16 : Precision.FP32;
        this.fp32Choice = gemmChoice(gemmName);
        this.fp32Gemm = this.precision == Precision.BF16 ? null : newFp32Gemm(fp32Choice);
        this.gemm = this.precision == Precision.BF16 ? new Bf16Gemm() : fp32Gemm;
        this.attention = new CpuAttention(pool, gemm, this::fp32Gemm, this::chunkScratch);
    }

    private static Gemm newFp32Gemm(Gemm.Choice choice) {
        return switch (choice) {
            case BLAS -> new BlasGemm();
            case VECTOR -> new VectorGemm();
            case AUTO -> {
                Gemm rows = OpenBlasLibrary.probe().loaded() ? new BlasGemm() : new VectorGemm();
                yield NativeF32Gemm.available() ? new NativeF32Gemm(rows) : rows;
            }
        };
    }

    /** {@link #fp32Gemm}, made now if this is its first use. */
    private Gemm fp32Gemm() {
        Gemm g = fp32Gemm;
        if (g == null) {
            synchronized (this) {
                if (fp32Gemm == null) fp32Gemm = newFp32Gemm(fp32Choice);
                g = fp32Gemm;
            }
        }
        return g;
    }

    /** Why a bf16 request would run the fp32 GEMMs on this machine, or null when it has a bf16 GEMM. */
    public static String bf16UnavailableReason() {
        return Bf16Gemm.unavailableReason();
    }

    private static Gemm.Choice gemmChoice(String name) {
        return switch (name.trim().toLowerCase(java.util.Locale.ROOT)) {
            case "auto" -> Gemm.Choice.AUTO;
            case "blas" -> Gemm.Choice.BLAS;
            case "vector" -> Gemm.Choice.VECTOR;
            default -> throw new IllegalArgumentException(
                    "distillery.gemm must be auto, blas or vector, got '" + name + "'");
        };
    }

    @Override
    public Precision precision() {
        return precision;
    }

    @Override
    public String describe() {
        String jit = LoopPredication.note();
        return "cpu (" + (precisionNote == null ? "" : precisionNote + "; ") + gemm.describe() + ", " + pool.threads() + (pool.threads() == 1 ? " thread, " : " threads, ") + SPECIES.vectorBitSize()
                + "-bit vectors, " + FusedDistillLoss.rowsDescription() + (jit == null ? "" : "; " + jit) + ")";
    }

    public int threads() {
        return pool.threads();
    }

    // ---------------------------------------------------------------- memory: plain host memory

    @Override
    public boolean hostAccessible() {
        return true;
    }

    @Override
    public MemorySegment allocate(Arena owner, long bytes) {
        return owner.allocate(Math.max(1, bytes), 64).asSlice(0, bytes);
    }

    @Override
    public MemorySegment allocateStaging(Arena owner, long bytes) {
        return allocate(owner, bytes);
    }

    @Override
    public void copyFromHost(MemorySegment dst, MemorySegment hostSrc, long bytes) {
        MemorySegment.copy(hostSrc, 0, dst, 0, bytes);
    }

    @Override
    public void copyToHost(MemorySegment hostDst, MemorySegment src, long bytes) {
        MemorySegment.copy(src, 0, hostDst, 0, bytes);
    }

    @Override
    public void copyFromHostAsync(MemorySegment dst, MemorySegment hostSrc, long bytes) {
        copyFromHost(dst, hostSrc, bytes);
    }

    @Override
    public void joinCopies() {
    }

    @Override
    public void copy(MemorySegment dst, MemorySegment src, long bytes) {
        MemorySegment.copy(src, 0, dst, 0, bytes);
    }

    @Override
    public void synchronize() {
    }

    @Override
    public void close() {
        gemm.close();
        if (fp32Gemm != null && fp32Gemm != gemm) fp32Gemm.close();
        pool.close();
        scratchArena.close();
    }

    /** {@link #chunkScratch} with room for {@code floats} floats per chunk, grown on demand, reused across calls. */
    private MemorySegment chunkScratch(int chunks, long floats) {
        long bytes = 4L * chunks * floats;
        if (chunkScratch.byteSize() < bytes) chunkScratch = scratchArena.allocate(bytes, 64);
        return chunkScratch;
    }

    // ---------------------------------------------------------------- GEMM

    /** Below this many multiply-adds a GEMM is not worth splitting over the pool. */
    private static final long GEMM_SPLIT_WORK = 1L << 18;

    /**
     * C at least this many times wider than tall is split by columns: under a row split every
     * thread's call packs all of op(B) (k × n), under a column split all of op(A) (m × k), and an
     * LM head's logits (a chunk of rows times the vocabulary) would have each thread pack the
     * whole weight (docs/KERNELS.md#gemm-and-threads).
     */
    private static final int WIDE_C = 8;

    /**
     * Splits C into row blocks (or column blocks when C is short, or {@link #WIDE_C} times wider
     * than tall) over the pool; each block is one single-threaded backend call. Blocks depend only
     * on the shape and the thread count, so results are reproducible. The bf16 GEMM is split by
     * {@link #gemmBf16}.
     */
    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
                     MemorySegment a, int lda, MemorySegment b, int ldb, float beta, MemorySegment c, int ldc) {
        if (m == 0 || n == 0) return;
        if (gemm instanceof Bf16Gemm bf16) {
            gemmBf16(bf16, transA, transB, m, n, k, alpha, a, false, lda, b, false, ldb, beta, c, ldc, null);
        } else {
            gemmF32(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, null);
        }
    }

    /**
     * The fp32 GEMM over the pool ({@link #gemm}), with a bias (n floats, or null; our fp32 GEMM
     * only) that stands in for every row of C as beta's operand ({@link NativeF32Gemm}).
     */
    private void gemmF32(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, int lda,
                         MemorySegment b, int ldb, float beta, MemorySegment c, int ldc, MemorySegment bias) {
        if (pool.threads() == 1 || (long) m * n * k < GEMM_SPLIT_WORK) {
            part(m, n, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
        } else if (m >= n || (m >= 32 * pool.threads() && (long) WIDE_C * m > n)) {
            pool.forEachChunk(m, 8, (chunk, r0, r1) -> part(m, n, transA, transB, r1 - r0, n, k, alpha,
                    a.asSlice(4L * (transA ? r0 : (long) r0 * lda)), lda, b, ldb,
                    beta, c.asSlice(4L * r0 * ldc), ldc, bias));
        } else {
            pool.forEachChunk(n, 16, (chunk, c0, c1) -> part(m, n, transA, transB, m, c1 - c0, k, alpha,
                    a, lda, b.asSlice(4L * (transB ? (long) c0 * ldb : c0)), ldb,
                    beta, c.asSlice(4L * c0), ldc, bias == null ? null : bias.asSlice(4L * c0)));
        }
    }

    /**
     * One single-threaded part of an fp32 product of {@code productRows} × {@code productColumns}.
     * Our fp32 GEMM judges its choices on the whole product, not the part (a held B's pack kept only
     * for few rows, {@link NativeF32Gemm#KEEP_PACK_ROWS}; one row against a small B to the wrapped
     * GEMM), so the bits do not depend on the split; a bias goes only to it.
     */
    private void part(int productRows, int productColumns, boolean transA, boolean transB, int m, int n, int k, float alpha,
                      MemorySegment a, int lda, MemorySegment b, int ldb, float beta, MemorySegment c, int ldc, MemorySegment bias) {
        if (gemm instanceof NativeF32Gemm f32) {
            f32.sgemm(productRows, productColumns, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
        } else if (bias == null) {
            gemm.sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        } else {
            throw new IllegalStateException("a bias in the GEMM's store needs our fp32 GEMM, not " + gemm.describe());
        }
    }

    /**
     * {@link #gemm} with A and/or B stored as bf16: only the bf16 GEMM takes them (under
     * {@link Precision#BF16}), read as stored instead of rounded; the same bits as rounding them.
     */
    @Override
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, MemorySegment a, DType aType, int lda,
                     MemorySegment b, DType bType, int ldb, float beta, MemorySegment c, int ldc) {
        if (aType == DType.F32 && bType == DType.F32) {
            gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        } else if (gemm instanceof Bf16Gemm bf16 && (aType == DType.F32 || aType == DType.BF16) && (bType == DType.F32 || bType == DType.BF16)) {
            if (m == 0 || n == 0) return;
            gemmBf16(bf16, transA, transB, m, n, k, alpha, a, aType == DType.BF16, lda, b, bType == DType.BF16, ldb, beta, c, ldc, null);
        } else {
            Kernels.super.gemm(transA, transB, m, n, k, alpha, a, aType, lda, b, bType, ldb, beta, c, ldc);
        }
    }

    /**
     * Under the bf16 GEMM and our fp32 one the bias goes into the GEMM's first store in place of C
     * (the bits of {@link #broadcastRows} and a GEMM with beta 1, without writing the bias over the
     * whole output and reading it back: docs/KERNELS.md#linear).
     */
    @Override
    public void linearForward(MemorySegment out, MemorySegment inp, DType inpType, MemorySegment weight, MemorySegment bias,
                              int n, int c, int oc) {
        if (!biasInFirstStore(false, out, inp, inpType, weight, bias, n, c, oc)) {
            Kernels.super.linearForward(out, inp, inpType, weight, bias, n, c, oc);
        }
    }

    /** As {@link #linearForward}: under the bf16 GEMM and our fp32 one the bias goes into its first store. */
    @Override
    public void projectionForward(MemorySegment out, MemorySegment x, DType xType, MemorySegment weight, MemorySegment bias,
                                  int n, int c, int v) {
        if (!biasInFirstStore(true, out, x, xType, weight, bias, n, c, v)) {
            Kernels.super.projectionForward(out, x, xType, weight, bias, n, c, v);
        }
    }

    /**
     * {@code out = inp · weight + bias} (weight (c, oc)), or {@code inp · weightᵀ + bias} (weight
     * (oc, c)) with weightTransposed, as one GEMM with the bias as beta's operand; false, and
     * nothing done, where there is no bias or the GEMM is OpenBLAS' or the Vector API's.
     */
    private boolean biasInFirstStore(boolean weightTransposed, MemorySegment out, MemorySegment inp, DType inpType, MemorySegment weight,
                                     MemorySegment bias, int n, int c, int oc) {
        if (bias == null) return false;
        if (gemm instanceof Bf16Gemm bf16 && (inpType == DType.F32 || inpType == DType.BF16)) {
            if (n != 0 && oc != 0) {
                gemmBf16(bf16, false, weightTransposed, n, oc, c, 1f, inp, inpType == DType.BF16, c, weight, false, weightTransposed ? c : oc,
                        1f, out, oc, bias);
            }
            return true;
        }
        if (gemm instanceof NativeF32Gemm && inpType == DType.F32) {
            if (n != 0 && oc != 0) gemmF32(false, weightTransposed, n, oc, c, 1f, inp, c, weight, weightTransposed ? c : oc, 1f, out, oc, bias);
            return true;
        }
        return false;
    }

    /**
     * Under the fp32 GEMMs on an even pool, the input gradient and the weight gradient side by
     * side ({@link #gradientsSideBySide}); otherwise the contract's two GEMMs, each split over the pool.
     */
    @Override
    public void linearBackward(MemorySegment dinp, float dinpBeta, MemorySegment dweight, MemorySegment dbias,
                               MemorySegment dout, MemorySegment inp, DType inpType, MemorySegment weight,
                               int n, int c, int oc) {
        if (dinp == null || !pairsGradients(inpType, (long) n * c * oc)) {
            Kernels.super.linearBackward(dinp, dinpBeta, dweight, dbias, dout, inp, inpType, weight, n, c, oc);
            return;
        }
        gradientsSideBySide(new GemmRows(false, true, n, c, oc, dout, oc, weight, oc, dinpBeta, dinp, c),
                new GemmRows(true, false, c, oc, n, inp, c, dout, oc, 1f, dweight, oc), dbias, dout, n, oc);
    }

    /** As {@link #linearBackward}: the two gradients side by side where the fp32 GEMMs run on an even pool. */
    @Override
    public void projectionBackward(MemorySegment dx, float dxBeta, MemorySegment dweight, MemorySegment dbias,
                                   MemorySegment dout, MemorySegment x, DType xType, MemorySegment weight,
                                   int n, int c, int v) {
        if (dx == null || dweight == null || !pairsGradients(xType, (long) n * c * v)) {
            Kernels.super.projectionBackward(dx, dxBeta, dweight, dbias, dout, x, xType, weight, n, c, v);
            return;
        }
        Kernels.requireWriteOrAdd("projectionBackward", "dxBeta", dxBeta);
        gradientsSideBySide(new GemmRows(false, false, n, c, v, dout, v, weight, c, dxBeta, dx, c),
                new GemmRows(true, false, v, c, n, dout, v, x, c, 1f, dweight, c), dbias, dout, n, v);
    }

    /**
     * Whether a linear's input and weight gradients (each of {@code work} = m·n·k) run side by side:
     * fp32 GEMMs (the bf16 GEMM shares one packed operand between its threads instead), an even
     * pool, and products worth splitting.
     */
    private boolean pairsGradients(DType inpType, long work) {
        return inpType == DType.F32 && !(gemm instanceof Bf16Gemm) && pool.threads() % 2 == 0 && work >= GEMM_SPLIT_WORK;
    }

    /** rows [r0, r1) of an fp32 {@code C = op(A) · op(B) + beta · C} (alpha 1) as one single-threaded call. */
    private record GemmRows(boolean transA, boolean transB, int m, int n, int k, MemorySegment a, int lda,
                            MemorySegment b, int ldb, float beta, MemorySegment c, int ldc) {
        void run(CpuKernels kernels, int r0, int r1) {
            if (r1 == r0) return;   // a part with no rows: more threads than rows
            kernels.part(m, n, transA, transB, r1 - r0, n, k, 1f, a.asSlice(4L * (transA ? r0 : (long) r0 * lda)), lda,
                    b, ldb, beta, c.asSlice(4L * r0 * ldc), ldc, null);
        }
    }

    /**
     * A linear's input and weight gradients, independent GEMMs of equal work (2·n·c·oc FLOPs each),
     * each on half of the pool, its rows split there; then the bias's, dbias (may be null) += Σ_rows
     * dout, dout (n, width). Split over the whole pool in turn, each thread's call would pack all
     * of op(B) for its rows; side by side each thread packs its own GEMM's operands only
     * (docs/KERNELS.md#gemm-and-threads).
     */
    private void gradientsSideBySide(GemmRows dx, GemmRows dw, MemorySegment dbias, MemorySegment dout, int n, int width) {
        int half = pool.threads() / 2;
        pool.forEachChunk(2 * half, 1, (chunk, s, e) -> {
            for (int i = s; i < e; i++) {
                GemmRows g = i < half ? dx : dw;
                int part = i % half;
                g.run(this, WorkerPool.start(g.m(), half, part), WorkerPool.start(g.m(), half, part + 1));
            }
        });
        if (dbias != null) {
            sumRows(dbias, dout, n, width);
        }
    }

    /**
     * The bf16 GEMM over the pool, split along the 32 × 32 blocks its tiles form C in, so that
     * every block is formed as on one thread and the bits do not depend on the thread count. By
     * rows wherever each thread gets 32 of them, so that each operand is packed once in all: op(B)
     * held (packed once for the step, at its first call: the LM head's weight) or packed for this
     * call, in either case by all the threads, a share of its columns each; then the rows of C
     * claimed against it, {@link #gemmClaimRows} at a time (a vCPU that runs behind takes fewer),
     * each claim packing its rows of op(A). A shorter C splits its columns in fixed shares, each
     * thread packing all of op(A). An operand stored as bf16 has 2-byte elements. A bias (n floats,
     * or null) stands in for C as beta's operand ({@link Bf16Gemm#sgemm}).
     */
    private void gemmBf16(Bf16Gemm bf16, boolean transA, boolean transB, int m, int n, int k, float alpha,
                          MemorySegment a, boolean aBf16, int lda, MemorySegment b, boolean bBf16, int ldb,
                          float beta, MemorySegment c, int ldc, MemorySegment bias) {
        long eb = bBf16 ? 2 : 4;
        if (pool.threads() == 1 || (long) m * n * k < GEMM_SPLIT_WORK) {
            bf16.sgemm(transA, transB, m, n, k, alpha, a, aBf16, lda, b, bBf16, ldb, beta, c, ldc, bias);
        } else if (m > 32 && bf16.holds(transB, k, n, b, bBf16, ldb)) {
            MemorySegment packed = bf16.heldPack(transB, k, n, b, bBf16, ldb, into -> packColumns(transB, k, n, b, bBf16, ldb, into));
            if (claimsColumns(m, n, k, pool.threads())) {
                claimedColumns(bf16, transA, m, n, k, alpha, a, aBf16, lda, packed, beta, c, ldc, bias);
            } else {
                claimedRows(bf16, transA, m, n, k, alpha, a, aBf16, lda, packed, beta, c, ldc, bias);
            }
        } else if (m >= 32 * pool.threads()) {
            // op(B) packed once, each thread its share of the columns, then the rows claimed against it
            MemorySegment packed = sharedPack(Bf16Gemm.packedBytes(k, n));
            packColumns(transB, k, n, b, bBf16, ldb, packed);
            claimedRows(bf16, transA, m, n, k, alpha, a, aBf16, lda, packed, beta, c, ldc, bias);
        } else {
            pool.forEachChunk((n + 31) / 32, 1, (chunk, j0, j1) -> {
                int c0 = 32 * j0, c1 = Math.min(n, 32 * j1);
                bf16.sgemm(transA, transB, m, c1 - c0, k, alpha, a, aBf16, lda, b.asSlice(eb * (transB ? (long) c0 * ldb : c0)), bBf16, ldb,
                        beta, c.asSlice(4L * c0), ldc, bias == null ? null : bias.asSlice(4L * c0));
            });
        }
    }

    /** op(B) (k, n) packed into {@code packed} by the pool's threads, its 32-column blocks claimed as they come free. */
    private void packColumns(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb, MemorySegment packed) {
        pool.forEachClaimed((n + 31) / 32, 1, (slot, j0, j1) ->
                Bf16Gemm.packColumns(transB, k, n, 32 * j0, Math.min(n, 32 * j1), b, bBf16, ldb, packed));
    }

    /**
     * The rows of C claimed by the threads ({@link #gemmClaimRows} at a time) against op(B) packed
     * already (held or for this call); where packed op(B) is at most {@link #GUIDED_B_BYTES}, the
     * claims shrink to 32 rows as the rows run out, so that a thread that ran ahead takes the last
     * ones instead of waiting a whole claim for the other. A large op(B) (the LM head's weight)
     * keeps whole claims: each claim walks all of it once.
     */
    private void claimedRows(Bf16Gemm bf16, boolean transA, int m, int n, int k, float alpha, MemorySegment a, boolean aBf16, int lda,
                             MemorySegment packed, float beta, MemorySegment c, int ldc, MemorySegment bias) {
        int claim = gemmClaimRows(m, pool.threads());
        int guided = Bf16Gemm.packedBytes(k, n) <= GUIDED_B_BYTES ? pool.threads() : 0;
        MemorySegment nextRow = claimCounter();
        pool.forEachChunk(Math.min(pool.threads(), (m + claim - 1) / claim), 1, (chunk, s0, s1) ->
                bf16.sgemmClaimed(false, transA, m, n, k, alpha, a, aBf16, lda, packed, beta, c, ldc, bias, nextRow, claim, guided));
    }

    /** The next of the GEMM's claim counters, set to 0. */
    private MemorySegment claimCounter() {
        MemorySegment counter = gemmClaimCounters.asSlice(64L * Math.floorMod(gemmCalls.getAndIncrement(), GEMM_COUNTERS), 4);
        counter.set(ValueLayout.JAVA_INT, 0, 0);
        return counter;
    }

    /**
     * Whether a GEMM against a held op(B) claims columns of C ({@link #claimedColumns}) rather than
     * rows: where packed op(A) fits in half of L2 ({@link #COLUMN_CLAIM_A_BYTES}), so every thread can
     * pack all of it and keep it there, and C has columns for several claims a thread. The LM head's
     * logits (a chunk's 256 hidden states, 192 KB packed, against 32,000 columns) do; its input
     * gradient (k = 32,000) does not.
     */
    static boolean claimsColumns(int m, int n, int k, int threads) {
        return 2L * ((m + 31) / 32 * 32) * ((k + 31) / 32 * 32) <= COLUMN_CLAIM_A_BYTES && n >= 32 * 4 * threads;
    }

    /** The largest packed op(A) of a GEMM that claims columns: half of a 1 MB L2. */
    private static final long COLUMN_CLAIM_A_BYTES = 512L << 10;

    /**
     * The columns of C claimed by the threads against op(B) held for the step, shrinking to 32 as
     * they run out, each thread packing all of op(A) at its first claim: op(B) is walked once in
     * all, where claims of rows walk all of it once a claim, and a thread that ran ahead takes the
     * last columns instead of waiting for the other (docs/KERNELS.md#bf16-gemm).
     */
    private void claimedColumns(Bf16Gemm bf16, boolean transA, int m, int n, int k, float alpha, MemorySegment a, boolean aBf16,
                                int lda, MemorySegment packed, float beta, MemorySegment c, int ldc, MemorySegment bias) {
        int threads = pool.threads(), claim = (n + threads - 1) / threads;
        MemorySegment nextCol = claimCounter();
        pool.forEachChunk(threads, 1, (chunk, s0, s1) ->
                bf16.sgemmClaimed(true, transA, m, n, k, alpha, a, aBf16, lda, packed, beta, c, ldc, bias, nextCol, claim, threads));
    }

    /**
     * The largest packed op(B) whose GEMM claims rows in shrinking blocks: a claim of 32 rows walks it
     * once, from L2 or L3 at these sizes (the blocks' weights, 1.2 MB at most at config B; the
     * chunk's hidden states for the LM head's weight gradient, 192 KB).
     */
    private static final long GUIDED_B_BYTES = 2L << 20;

    /**
     * The calling thread's buffer for one bf16 GEMM's op(B), packed by all the threads: one a
     * thread, so calls from two threads (or one inside another's chunk, on that chunk's thread)
     * never share one. Grown on demand, kept until close.
     */
    private MemorySegment sharedPack(long bytes) {
        MemorySegment buffer = sharedPacks.get();
        if (buffer.byteSize() < bytes) {
            synchronized (scratchArena) {
                buffer = scratchArena.allocate(bytes, 64);
            }
            sharedPacks.set(buffer);
        }
        return buffer;
    }

    private final ThreadLocal<MemorySegment> sharedPacks = ThreadLocal.withInitial(() -> MemorySegment.NULL);

    /**
     * Rows of C a thread claims at a time in the bf16 GEMM's row split, a multiple of 32: about a
     * quarter of a thread's share, at least 256 rows (each claim walks all of packed op(B) once: 24
     * MB for the LM head's input gradient) and at most a share, then made smaller where the claims
     * that gives are not a multiple of the threads, so that threads running alike end together: 5
     * claims of 256 over two threads (the q/k/v weight gradient's 1,152 rows) left one thread 640
     * rows to the other's 512. Never larger: a claim past 256 rows of a deep op(A) (k past one panel)
     * no longer fits its panel of packed rows beside a band of op(B) in L2.
     */
    static int gemmClaimRows(int m, int threads) {
        int quarter = (m + 4 * threads - 1) / (4 * threads), share = (m + threads - 1) / threads;
        int claim = Math.min(Math.max(256, (quarter + 31) / 32 * 32), (share + 31) / 32 * 32);
        int claims = ((m + claim - 1) / claim + threads - 1) / threads * threads;
        return ((m + claims - 1) / claims + 31) / 32 * 32;
    }

    @Override
    public ConstantHold holdConstant(MemorySegment operand) {
        return switch (gemm) {
            case Bf16Gemm bf16 -> bf16.hold(operand);
            case NativeF32Gemm fp32 -> fp32.hold(operand);
            default -> ConstantHold.NONE;
        };
    }

    @Override
    public void gemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha,
                                   MemorySegment a, int lda, long strideA, MemorySegment b, int ldb, long strideB,
                                   float beta, MemorySegment c, int ldc, long strideC, int batch) {
        pool.forEachChunk(batch, 1, (chunk, start, end) -> {
            for (int i = start; i < end; i++) {
                gemm.sgemm(transA, transB, m, n, k, alpha,
                        a.asSlice(4 * strideA * i), lda, b.asSlice(4 * strideB * i), ldb,
                        beta, c.asSlice(4 * strideC * i), ldc);
            }
        });
    }

    @Override
    public void broadcastRows(MemorySegment out, MemorySegment row, int n, int c) {
        pool.forEachClaimed(n, grainRows(c), (slot, start, end) -> {
            for (int r = start; r < end; r++) {
                MemorySegment.copy(row, 0, out, (long) r * c * 4, (long) c * 4);
            }
        });
    }

    @Override
    public void sumRows(MemorySegment acc, MemorySegment x, int n, int c) {
        int chunks = pool.chunks(n, grainRows(c));
        MemorySegment rowSums = chunkScratch(chunks, c);
        pool.forEachChunk(n, grainRows(c), (chunk, start, end) -> {
            long p = (long) chunk * c;
            VectorOps.fill(rowSums, p, c, 0f);
            for (int r = start; r < end; r++) VectorOps.add(x, (long) r * c, rowSums, p, c);
        });
        for (int j = 0; j < c; j++) {
            float s = get(acc, j);
            for (int ch = 0; ch < chunks; ch++) s += get(rowSums, (long) ch * c + j);
            set(acc, j, s);
        }
    }

    // ---------------------------------------------------------------- embedding

    @Override
    public void embeddingForward(MemorySegment out, MemorySegment tokens, MemorySegment hostTokens, MemorySegment wte, MemorySegment wpe,
                                 int b, int t, int c, int vocab) {
        pool.forEachClaimed(b * t, grainRows(c), (slot, start, end) -> {
            for (int row = start; row < end; row++) {
                int token = tokens.getAtIndex(I32, row);
                if (token < 0 || token >= vocab) {
                    throw new IllegalArgumentException("token id " + token + " at position " + row
                            + " (batch " + row / t + ", time " + row % t + ") is outside the vocabulary [0, " + vocab + ")");
                }
                long o = (long) row * c, we = (long) token * c, pe = (long) (row % t) * c;
                int i = 0;
                for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                    FloatVector.fromMemorySegment(SPECIES, wte, (we + i) * 4L, ORDER).add(FloatVector.fromMemorySegment(SPECIES, wpe, (pe + i) * 4L, ORDER)).intoMemorySegment(out, (o + i) * 4L, ORDER);
                }
                for (; i < c; i++) set(out, o + i, get(wte, we + i) + get(wpe, pe + i));
            }
        });
    }

    @Override
    public void embeddingBackward(MemorySegment dwte, MemorySegment dwpe, MemorySegment dout, MemorySegment tokens, MemorySegment hostTokens,
                                  int b, int t, int c) {
        // Scatter-add: two rows may share a token, so rows are visited serially (cheap: (b t c) adds).
        for (int row = 0; row < b * t; row++) {
            int token = tokens.getAtIndex(I32, row);
            long o = (long) row * c;
            VectorOps.add(dout, o, dwte, (long) token * c, c);
            VectorOps.add(dout, o, dwpe, (long) (row % t) * c, c);
        }
    }

    // ---------------------------------------------------------------- layernorm

    /** Element {@code index} of a kernel's output: fp32, or bf16 rounded as the bf16 GEMM rounds ({@link Kernels#writesBf16}). */
    static void setOutput(MemorySegment out, boolean bf16, long index, float value) {
        if (bf16) out.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, VectorOps.bf16Bits(value));
        else set(out, index, value);
    }

    /** {@link #setOutput} of a whole vector: elements {@code index ..} of a kernel's output. */
    private static void setOutput(MemorySegment out, boolean bf16, long index, FloatVector value) {
        if (bf16) VectorOps.intoBf16(value, out, index);
        else value.intoMemorySegment(out, index * 4L, ORDER);
    }

    @Override
    public void layerNormForward(MemorySegment out, DType outType, MemorySegment mean, MemorySegment rstd,
                                 MemorySegment inp, MemorySegment weight, MemorySegment bias, int n, int c) {
        boolean bf16 = writesBf16(outType, "layernorm");
        pool.forEachClaimed(n, grainRows(c), (slot, start, end) -> {
            for (int r = start; r < end; r++) {
                long o = (long) r * c;
                float mu = VectorOps.sum(inp, o, c) / c;
                float var = 0f;
                int i = 0;
                if (c >= LANES) {
                    FloatVector acc = FloatVector.zero(SPECIES);
                    for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                        FloatVector d = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER).sub(mu);
                        acc = d.fma(d, acc);
                    }
                    var = VectorOps.sumLanes(acc);
                }
                for (; i < c; i++) {
                    float d = get(inp, o + i) - mu;
                    var += d * d;
                }
                float rs = (float) (1.0 / Math.sqrt(var / c + LAYERNORM_EPS));
                set(mean, r, mu);
                set(rstd, r, rs);
                i = 0;
                for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                    FloatVector y = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER).sub(mu).mul(rs).fma(FloatVector.fromMemorySegment(SPECIES, weight, (i) * 4L, ORDER), FloatVector.fromMemorySegment(SPECIES, bias, (i) * 4L, ORDER));
                    setOutput(out, bf16, o + i, y);
                }
                for (; i < c; i++) setOutput(out, bf16, o + i, (get(inp, o + i) - mu) * rs * get(weight, i) + get(bias, i));
            }
        });
    }

    @Override
    public void layerNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dbias,
                                  MemorySegment dout, MemorySegment inp, MemorySegment weight,
                                  MemorySegment mean, MemorySegment rstd, int n, int c) {
        int chunks = pool.chunks(n, grainRows(c));
        float[][] part = partials(chunks, 2 * c);
        pool.forEachChunk(n, grainRows(c), (chunk, start, end) -> {
            float[] p = part[chunk]; // [0, c): dweight, [c, 2c): dbias
            java.util.Arrays.fill(p, 0, 2 * c, 0f);
            for (int r = start; r < end; r++) {
                long o = (long) r * c;
                float mu = get(mean, r), rs = get(rstd, r);
                // dnorm = dout * w; two means over the row, see docs/KERNELS.md#layernorm
                FloatVector accDnorm = FloatVector.zero(SPECIES), accDnormNorm = FloatVector.zero(SPECIES);
                int i = 0;
                for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                    FloatVector norm = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER).sub(mu).mul(rs);
                    FloatVector g = FloatVector.fromMemorySegment(SPECIES, dout, (o + i) * 4L, ORDER);
                    FloatVector dnorm = g.mul(FloatVector.fromMemorySegment(SPECIES, weight, i * 4L, ORDER));
                    accDnorm = accDnorm.add(dnorm);
                    accDnormNorm = dnorm.fma(norm, accDnormNorm);
                    norm.fma(g, FloatVector.fromArray(SPECIES, p, i)).intoArray(p, i);
                    g.add(FloatVector.fromArray(SPECIES, p, c + i)).intoArray(p, c + i);
                }
                float sumDnorm = VectorOps.sumLanes(accDnorm), sumDnormNorm = VectorOps.sumLanes(accDnormNorm);
                for (; i < c; i++) {
                    float norm = (get(inp, o + i) - mu) * rs;
                    float g = get(dout, o + i);
                    float dnorm = g * get(weight, i);
                    sumDnorm += dnorm;
                    sumDnormNorm += dnorm * norm;
                    p[i] += norm * g;
                    p[c + i] += g;
                }
                float meanDnorm = sumDnorm / c, meanDnormNorm = sumDnormNorm / c;
                i = 0;
                for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                    FloatVector norm = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER).sub(mu).mul(rs);
                    FloatVector dnorm = FloatVector.fromMemorySegment(SPECIES, dout, (o + i) * 4L, ORDER).mul(FloatVector.fromMemorySegment(SPECIES, weight, (i) * 4L, ORDER));
                    FloatVector d = dnorm.sub(meanDnorm).sub(norm.mul(meanDnormNorm)).mul(rs);
                    FloatVector.fromMemorySegment(SPECIES, dinp, (o + i) * 4L, ORDER).add(d).intoMemorySegment(dinp, (o + i) * 4L, ORDER);
                }
                for (; i < c; i++) {
                    float norm = (get(inp, o + i) - mu) * rs;
                    float dnorm = get(dout, o + i) * get(weight, i);
                    set(dinp, o + i, get(dinp, o + i) + (dnorm - meanDnorm - norm * meanDnormNorm) * rs);
                }
            }
        });
        addPartials(dweight, part, chunks, 0, c);
        addPartials(dbias, part, chunks, c, c);
    }

    // ---------------------------------------------------------------- RMSNorm

    @Override
    public void rmsNormForward(MemorySegment out, DType outType, MemorySegment rstd, MemorySegment inp, MemorySegment weight, int n, int c, float eps) {
        boolean bf16 = writesBf16(outType, "RMSNorm");
        pool.forEachClaimed(n, grainRows(c), (slot, start, end) -> {
            for (int r = start; r < end; r++) {
                long o = (long) r * c;
                float ss = 0f;
                int i = 0;
                if (c >= LANES) {
                    FloatVector acc = FloatVector.zero(SPECIES);
                    for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                        FloatVector x = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER);
                        acc = x.fma(x, acc);
                    }
                    ss = VectorOps.sumLanes(acc);
                }
                for (; i < c; i++) ss += get(inp, o + i) * get(inp, o + i);
                float rs = (float) (1.0 / Math.sqrt(ss / c + eps));
                set(rstd, r, rs);
                i = 0;
                for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                    FloatVector y = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER).mul(rs)
                            .mul(FloatVector.fromMemorySegment(SPECIES, weight, i * 4L, ORDER));
                    setOutput(out, bf16, o + i, y);
                }
                for (; i < c; i++) setOutput(out, bf16, o + i, get(inp, o + i) * rs * get(weight, i));
            }
        });
    }

    @Override
    public void rmsNormBackward(MemorySegment dinp, MemorySegment dweight, MemorySegment dout, MemorySegment inp,
                                MemorySegment weight, MemorySegment rstd, int n, int c) {
        int chunks = pool.chunks(n, grainRows(c));
        float[][] part = partials(chunks, c);
        pool.forEachChunk(n, grainRows(c), (chunk, start, end) -> {
            float[] p = part[chunk]; // dweight
            java.util.Arrays.fill(p, 0, c, 0f);
            for (int r = start; r < end; r++) {
                long o = (long) r * c;
                float rs = get(rstd, r);
                FloatVector acc = FloatVector.zero(SPECIES);
                int i = 0;
                for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                    FloatVector norm = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER).mul(rs);
                    FloatVector g = FloatVector.fromMemorySegment(SPECIES, dout, (o + i) * 4L, ORDER);
                    acc = g.mul(FloatVector.fromMemorySegment(SPECIES, weight, i * 4L, ORDER)).fma(norm, acc);
                    g.fma(norm, FloatVector.fromArray(SPECIES, p, i)).intoArray(p, i);
                }
                float sumGNorm = VectorOps.sumLanes(acc);
                for (; i < c; i++) {
                    float norm = get(inp, o + i) * rs, g = get(dout, o + i);
                    sumGNorm += g * get(weight, i) * norm;
                    p[i] += g * norm;
                }
                if (dinp == null) continue;
                float meanGNorm = sumGNorm / c;
                i = 0;
                for (int bound = SPECIES.loopBound(c); i < bound; i += LANES) {
                    FloatVector norm = FloatVector.fromMemorySegment(SPECIES, inp, (o + i) * 4L, ORDER).mul(rs);
                    FloatVector dw = FloatVector.fromMemorySegment(SPECIES, dout, (o + i) * 4L, ORDER)
                            .mul(FloatVector.fromMemorySegment(SPECIES, weight, i * 4L, ORDER));
                    dw.sub(norm.mul(meanGNorm)).mul(rs).add(FloatVector.fromMemorySegment(SPECIES, dinp, (o + i) * 4L, ORDER))
                            .intoMemorySegment(dinp, (o + i) * 4L, ORDER);
                }
                for (; i < c; i++) {
                    float norm = get(inp, o + i) * rs;
                    set(dinp, o + i, get(dinp, o + i) + rs * (get(dout, o + i) * get(weight, i) - norm * meanGNorm));
                }
            }
        });
        if (dweight != null) addPartials(dweight, part, chunks, 0, c);
    }

    // ---------------------------------------------------------------- SwiGLU

    @Override
    public void swiGluForward(MemorySegment out, DType outType, MemorySegment gate, MemorySegment up, long n) {
        boolean bf16 = writesBf16(outType, "SwiGLU");
        elementwise(n, (start, end) -> {
            long i = start;
            for (long bound = start + SPECIES.loopBound(end - start); i < bound; i += LANES) {
                FloatVector x = FloatVector.fromMemorySegment(SPECIES, gate, i * 4L, ORDER);
                FloatVector y = x.mul(sigmoid(x)).mul(FloatVector.fromMemorySegment(SPECIES, up, i * 4L, ORDER));
                setOutput(out, bf16, i, y);
            }
            for (; i < end; i++) {
                float x = get(gate, i);
                setOutput(out, bf16, i, x * sigmoid(x) * get(up, i));
            }
        });
    }

    @Override
    public void swiGluBackward(MemorySegment dgate, MemorySegment dup, MemorySegment dout, MemorySegment gate, MemorySegment up, long n) {
        elementwise(n, (start, end) -> {
            long i = start;
            for (long bound = start + SPECIES.loopBound(end - start); i < bound; i += LANES) {
                FloatVector x = FloatVector.fromMemorySegment(SPECIES, gate, i * 4L, ORDER), s = sigmoid(x);
                FloatVector d = FloatVector.fromMemorySegment(SPECIES, dout, i * 4L, ORDER);
                FloatVector u = FloatVector.fromMemorySegment(SPECIES, up, i * 4L, ORDER);
                FloatVector dsilu = s.mul(x.mul(s.neg().add(1f)).add(1f));
                d.mul(u).fma(dsilu, FloatVector.fromMemorySegment(SPECIES, dgate, i * 4L, ORDER)).intoMemorySegment(dgate, i * 4L, ORDER);
                d.fma(x.mul(s), FloatVector.fromMemorySegment(SPECIES, dup, i * 4L, ORDER)).intoMemorySegment(dup, i * 4L, ORDER);
            }
            for (; i < end; i++) {
                float x = get(gate, i), s = sigmoid(x), d = get(dout, i);
                set(dgate, i, get(dgate, i) + d * get(up, i) * s * (1f + x * (1f - s)));
                set(dup, i, get(dup, i) + d * x * s);
            }
        });
    }

    /** σ(x) = 1 / (1 + e^−x); VectorOps.exp clamps at 88, so a very negative x gives a tiny σ, never 1/∞. */
    private static FloatVector sigmoid(FloatVector x) {
        return FloatVector.broadcast(SPECIES, 1f).div(VectorOps.exp(x.neg()).add(1f));
    }

    private static float sigmoid(float x) {
        return 1f / (VectorOps.exp(-x) + 1f);
    }

    // ---------------------------------------------------------------- rotary positions

    @Override
    public void ropeForward(MemorySegment out, MemorySegment inp, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        rotate(out, inp, cosSin, b, t, heads, hs, rowStride, offset, 1f, false);
    }

    @Override
    public void ropeBackward(MemorySegment dinp, MemorySegment dout, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset) {
        rotate(dinp, dout, cosSin, b, t, heads, hs, rowStride, offset, -1f, true);
    }

    /** The rotation of every (row, head) pair by ±angle; rows over the pool. A pair is read before it is written, so out may be inp. */
    private void rotate(MemorySegment out, MemorySegment inp, MemorySegment cosSin, int b, int t, int heads, int hs, int rowStride, int offset,
                        float sign, boolean accumulate) {
        int half = hs / 2;
        pool.forEachChunk(b * t, grainRows(heads * hs), (chunk, start, end) -> {
            for (int r = start; r < end; r++) {
                long p = r % t;
                for (int h = 0; h < heads; h++) {
                    long at = (long) r * rowStride + offset + (long) h * hs;
                    for (int j = 0; j < half; j++) {
                        float c = get(cosSin, (p * half + j) * 2), s = sign * get(cosSin, (p * half + j) * 2 + 1);
                        float x1 = get(inp, at + j), x2 = get(inp, at + j + half);
                        float y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
                        set(out, at + j, accumulate ? get(out, at + j) + y1 : y1);
                        set(out, at + j + half, accumulate ? get(out, at + j + half) + y2 : y2);
                    }
                }
            }
        });
    }

    // ---------------------------------------------------------------- heads shared by groups

    @Override
    public void repeatHeadsForward(MemorySegment out, int outStride, int outOffset, MemorySegment inp, int inStride, int inOffset,
                                   int rows, int heads, int group, int hs) {
        pool.forEachChunk(rows, grainRows(heads * group * hs), (chunk, start, end) -> {
            for (int r = start; r < end; r++) {
                for (int h = 0; h < heads * group; h++) {
                    MemorySegment.copy(inp, 4L * ((long) r * inStride + inOffset + (long) (h / group) * hs),
                            out, 4L * ((long) r * outStride + outOffset + (long) h * hs), 4L * hs);
                }
            }
        });
    }

    @Override
    public void repeatHeadsBackward(MemorySegment dinp, int inStride, int inOffset, MemorySegment dout, int outStride, int outOffset,
                                    int rows, int heads, int group, int hs) {
        pool.forEachChunk(rows, grainRows(heads * group * hs), (chunk, start, end) -> {
            for (int r = start; r < end; r++) {
                for (int h = 0; h < heads * group; h++) {   // in order within a group: the same sums every run
                    long from = (long) r * outStride + outOffset + (long) h * hs, to = (long) r * inStride + inOffset + (long) (h / group) * hs;
                    for (int i = 0; i < hs; i++) set(dinp, to + i, get(dinp, to + i) + get(dout, from + i));
                }
            }
        });
    }

    // ---------------------------------------------------------------- GELU

    // 0.5 x (1 + tanh u) is computed as x · σ(2u): the same function without the cancellation
    // of 1 + tanh u for negative x. See docs/KERNELS.md#gelu.

    @Override
    public void geluForward(MemorySegment out, DType outType, MemorySegment inp, long n) {
        boolean bf16 = writesBf16(outType, "GELU");
        elementwise(n, (start, end) -> {
            long i = start;
            for (long bound = start + SPECIES.loopBound(end - start); i < bound; i += LANES) {
                FloatVector x = FloatVector.fromMemorySegment(SPECIES, inp, (i) * 4L, ORDER);
                FloatVector y = x.mul(geluSigmoid(x));
                setOutput(out, bf16, i, y);
            }
            for (; i < end; i++) {
                float x = get(inp, i);
                setOutput(out, bf16, i, x * geluSigmoid(x));
            }
        });
    }

    @Override
    public void geluBackward(MemorySegment dinp, MemorySegment inp, MemorySegment dout, long n) {
        elementwise(n, (start, end) -> geluBackwardRange(null, false, dinp, true, inp, dout, start, end));
    }

    /**
     * The linear's input gradient first (into dgelu), then one pass that makes gelu(inp) again and
     * adds GELU's gradient to dinp (one σ an element where GELU, then its backward, took two), then
     * the weight's and bias's gradients from gelu(inp): the values of the contract's order, bit for bit.
     */
    @Override
    public void geluLinearBackward(MemorySegment dinp, float dinpBeta, MemorySegment dweight, MemorySegment dbias, MemorySegment dout,
                                   MemorySegment inp, MemorySegment weight, MemorySegment gelu, DType geluType, MemorySegment dgelu,
                                   int n, int c, int oc) {
        Kernels.requireWriteOrAdd("geluLinearBackward", "dinpBeta", dinpBeta);
        if (dinp == null) {
            Kernels.super.geluLinearBackward(dinp, dinpBeta, dweight, dbias, dout, inp, weight, gelu, geluType, dgelu, n, c, oc);
            return;
        }
        boolean bf16 = writesBf16(geluType, "GELU"), add = dinpBeta == 1f;
        gemm(false, true, n, c, oc, 1f, dout, oc, weight, oc, 0f, dgelu, c);
        elementwise((long) n * c, (start, end) -> geluBackwardRange(gelu, bf16, dinp, add, inp, dgelu, start, end));
        linearBackward(null, 1f, dweight, dbias, dout, gelu, geluType, weight, n, c, oc);
    }

    /**
     * dinp += gelu'(x) · dout over [start, end) (without add: dinp = 0 + gelu'(x) · dout, the bits
     * of adding to zeros, dinp not read), and with gelu non-null gelu = x σ(2u) (as
     * {@link #geluForward} writes it) from the same σ.
     * gelu'(x) = s + 2 x s (1 - s) u', s = σ(2u), u' = √(2/π) (1 + 3·0.044715 x²).
     */
    private static void geluBackwardRange(MemorySegment gelu, boolean bf16, MemorySegment dinp, boolean add, MemorySegment inp,
                                          MemorySegment dout, long start, long end) {
        FloatVector zero = FloatVector.zero(SPECIES);
        long i = start;
        for (long bound = start + SPECIES.loopBound(end - start); i < bound; i += LANES) {
            FloatVector x = FloatVector.fromMemorySegment(SPECIES, inp, (i) * 4L, ORDER);
            FloatVector s = geluSigmoid(x);
            if (gelu != null) setOutput(gelu, bf16, i, x.mul(s));
            FloatVector du = x.mul(x).mul(3f * 0.044715f).add(1f).mul(GELU_SCALE);
            FloatVector grad = s.add(x.mul(2f).mul(s).mul(s.neg().add(1f)).mul(du));
            FloatVector acc = add ? FloatVector.fromMemorySegment(SPECIES, dinp, (i) * 4L, ORDER) : zero;
            grad.fma(FloatVector.fromMemorySegment(SPECIES, dout, (i) * 4L, ORDER), acc).intoMemorySegment(dinp, (i) * 4L, ORDER);
        }
        for (; i < end; i++) {
            float x = get(inp, i);
            float s = geluSigmoid(x);
            if (gelu != null) setOutput(gelu, bf16, i, x * s);
            float grad = s + 2f * x * s * (1f - s) * GELU_SCALE * (1f + 3f * 0.044715f * x * x);
            set(dinp, i, (add ? get(dinp, i) : 0f) + grad * get(dout, i));
        }
    }

    /**
     * 2 √(2/π) log2(e): e^(−2u) = 2^(d K) with d = −x (1 + 0.044715 x²), so {@link VectorOps#exp2}
     * forms the scaled exponent inside its fused multiply-adds (15 operations to exp's 19 and
     * the scaling multiply; ≤ 0.94 ulp).
     */
    private static final float GELU_EXP2_SCALE = (float) (2 * Math.sqrt(2.0 / Math.PI) * 1.4426950408889634);

    /** σ(2u) with u = √(2/π) (x + 0.044715 x³): 1 / (1 + 2^(d K)), d = −x (1 + 0.044715 x²). */
    private static FloatVector geluSigmoid(FloatVector x) {
        FloatVector d = x.mul(x).fma(-0.044715f, -1f).mul(x);
        FloatVector one = FloatVector.broadcast(SPECIES, 1f);
        return one.div(VectorOps.exp2(d, GELU_EXP2_SCALE).add(1f));
    }

    private static float geluSigmoid(float x) {
        float d = Math.fma(x * x, -0.044715f, -1f) * x;
        return 1f / (VectorOps.exp2(d, GELU_EXP2_SCALE) + 1f);
    }

    // ---------------------------------------------------------------- attention (CpuAttention)

    @Override
    public void attentionForward(MemorySegment out, DType outType, MemorySegment att, MemorySegment qkv, int b, int t, int c, int nh) {
        attention.forward(out, writesBf16(outType, "attention"), att, qkv, b, t, c, nh);
    }

    @Override
    public void attentionDecode(MemorySegment out, MemorySegment scores, MemorySegment q, MemorySegment keys, MemorySegment values,
                                int b, int len, int maxLen, int nh, int kvh, int hs) {
        attention.decode(out, scores, q, keys, values, b, len, maxLen, nh, kvh, hs);
    }

    @Override
    public void attentionBackward(MemorySegment dqkv, float dqkvBeta, MemorySegment datt, MemorySegment dout,
                                  MemorySegment qkv, MemorySegment att, int b, int t, int c, int nh) {
        Kernels.requireWriteOrAdd("attentionBackward", "dqkvBeta", dqkvBeta);
        attention.backward(dqkv, dqkvBeta, datt, dout, qkv, att, b, t, c, nh);
    }

    @Override
    public void attentionBackwardInBands(MemorySegment dqkv, float dqkvBeta, MemorySegment dout, MemorySegment qkv, int b, int t, int c, int nh) {
        Kernels.requireWriteOrAdd("attentionBackwardInBands", "dqkvBeta", dqkvBeta);
        attention.backwardInBands(dqkv, dqkvBeta, dout, qkv, b, t, c, nh);
    }

    // ---------------------------------------------------------------- residual

    @Override
    public void residualForward(MemorySegment out, MemorySegment a, MemorySegment b, long n) {
        elementwise(n, (start, end) -> {
            long i = start;
            for (long bound = start + SPECIES.loopBound(end - start); i < bound; i += LANES) {
                FloatVector.fromMemorySegment(SPECIES, a, (i) * 4L, ORDER).add(FloatVector.fromMemorySegment(SPECIES, b, (i) * 4L, ORDER)).intoMemorySegment(out, (i) * 4L, ORDER);
            }
            for (; i < end; i++) set(out, i, get(a, i) + get(b, i));
        });
    }

    @Override
    public void accumulate(MemorySegment dst, MemorySegment src, long n) {
        elementwise(n, (start, end) -> VectorOps.add(src, start, dst, start, (int) (end - start)));
    }

    // ---------------------------------------------------------------- fused softmax cross-entropy

    @Override
    public int softmaxCrossEntropy(MemorySegment losses, MemorySegment logits, MemorySegment targets,
                                   int n, int v, int ignoreIndex, boolean writeGradient, float gradScale) {
        int chunks = pool.chunks(n, 1);
        int[] valid = new int[chunks];
        // the native rows' scratch per chunk, in floats: 4 doubles out at 0, the block maxima at 16, e (v floats) at
        // eOffset, each 64-byte aligned
        long blocks = (v + FusedDistillLoss.BLOCK - 1) / FusedDistillLoss.BLOCK, eOffset = 16 + (blocks + 15) / 16 * 16;
        long perChunk = eOffset + (v + 15L) / 16 * 16;
        MemorySegment scratch = nativeCrossEntropy && DistilleryCpu.available() ? chunkScratch(chunks, perChunk) : null;
        pool.forEachChunk(n, 1, (chunk, start, end) -> {
            for (int r = start; r < end; r++) {
                int target = targets.getAtIndex(I32, r);
                long o = (long) r * v;
                if (target == ignoreIndex) {
                    set(losses, r, 0f);
                    if (writeGradient) VectorOps.fill(logits, o, v, 0f);
                    continue;
                }
                if (target < 0 || target >= v) {
                    throw new IllegalArgumentException("target " + target + " at row " + r
                            + " is outside [0, " + v + ") and is not the ignore index " + ignoreIndex);
                }
                valid[chunk]++;
                float xTarget = get(logits, o + target);
                long nextRow = (long) Math.min(r + 1, end - 1) * v * 4L;
                if (scratch != null) {
                    set(losses, r, crossEntropyRow(logits, o, v, nextRow, scratch.asSlice(4L * chunk * perChunk, 4L * perChunk), eOffset,
                            xTarget, writeGradient, gradScale));
                } else {
                    float mx = VectorOps.max(logits, o, v);
                    // With writeGradient the exponentials overwrite the logits; they are scaled below. The next
                    // row of this chunk is fetched meanwhile, for its max pass.
                    float sum = VectorOps.expSumFetching(logits, o, v, mx, writeGradient ? logits : null, o, nextRow, nextRow + 4L * v - 1);
                    set(losses, r, (float) (Math.log(sum) + mx - xTarget));
                    if (writeGradient) VectorOps.scale(logits, o, v, gradScale / sum);
                }
                if (writeGradient) set(logits, o + target, get(logits, o + target) - gradScale);
            }
        });
        int total = 0;
        for (int count : valid) total += count;
        return total;
    }

    /** For tests: the cross-entropy rows in C where the native library runs (true, the default) or in Java (false). */
    static void nativeCrossEntropy(boolean on) {
        nativeCrossEntropy = on;
    }

    private static volatile boolean nativeCrossEntropy = true;

    /**
     * Row o of the logits through the sparse rows' C passes at T = 1 (docs/KERNELS.md, "The native
     * row"): e = exp(s − m) by blocks with the lazy maximum, then, with writeGradient, gradScale ·
     * softmax over the logits (the caller subtracts gradScale at the target). Scratch: 4 doubles at
     * its start, the block maxima from float 16, e from float eOffset, or over the row itself when
     * the gradient is formed there (no e row in the cache). Returns the row's loss.
     */
    private static float crossEntropyRow(MemorySegment logits, long o, int v, long nextRow, MemorySegment scratch, long eOffset,
                                         float xTarget, boolean writeGradient, float gradScale) {
        Objects.checkFromIndexSize(o * 4L, 4L * v, logits.byteSize());
        Objects.checkFromIndexSize(nextRow, 4L * v, logits.byteSize());
        long out = scratch.address(), blockMax = out + 4L * 16, e = writeGradient ? logits.address() + o * 4L : out + 4L * eOffset;
        DistilleryCpu.studentPass(DistilleryCpu.rowsKind(), logits.address() + o * 4L, v, 1f, 1, e, blockMax, logits.address() + nextRow, 4L * v, out);
        float m = (float) scratch.getAtIndex(ValueLayout.JAVA_DOUBLE, 0);
        double logZ = scratch.getAtIndex(ValueLayout.JAVA_DOUBLE, 1);
        if (writeGradient) DistilleryCpu.squaredGradient(DistilleryCpu.rowsKind(), logits.address() + o * 4L, e, blockMax, v, m, 1f, (float) logZ, (float) logZ, 0f, gradScale);
        return (float) (logZ + m - xTarget);
    }

    // ---------------------------------------------------------------- rows of logits

    @Override
    public void logsumexpRows(MemorySegment out, MemorySegment x, int n, int v, float scale) {
        if (!(scale > 0)) throw new IllegalArgumentException("logsumexp scale must be positive, got " + scale);
        pool.forEachChunk(n, 1, (chunk, start, end) -> {
            for (int r = start; r < end; r++) {
                long o = (long) r * v;
                float mx = VectorOps.max(x, o, v) * scale;   // = max of scale · x: rounding is monotonic, scale > 0
                set(out, r, (float) (Math.log(VectorOps.expSumScaled(x, o, v, scale, mx)) + mx));
            }
        });
    }

    @Override
    public void argmaxRows(MemorySegment out, MemorySegment x, int n, int v) {
        pool.forEachChunk(n, 1, (chunk, start, end) -> {
            for (int r = start; r < end; r++) out.setAtIndex(I32, r, VectorOps.argmax(x, (long) r * v, v));
        });
    }

    @Override
    public void sampleRows(MemorySegment out, MemorySegment x, MemorySegment u, int n, int v, double temperature, int topK) {
        if (Kernels.greedy(temperature, topK)) {
            argmaxRows(out, x, n, v);
            return;
        }
        pool.forEachChunk(n, 1, (chunk, start, end) -> {
            RowSampler sampler = samplers.get();
            if (sampler == null || !sampler.drawsFor(v, temperature, topK)) samplers.set(sampler = new RowSampler(v, temperature, topK, DistilleryCpu.available()));
            for (int r = start; r < end; r++) out.setAtIndex(I32, r, sampler.draw(x, r, u.getAtIndex(ValueLayout.JAVA_DOUBLE, r)));
        });
    }

    // ---------------------------------------------------------------- fused distillation loss

    @Override
    public DistillSums distillLoss(MemorySegment student, MemorySegment grad, TeacherTargets teacher, MemorySegment labels,
                                   MemorySegment rowCe, MemorySegment rowDivergence, int n, int vocab,
                                   DistillOptions options, float gradScale) {
        return distillLoss.run(student, grad, teacher, labels, rowCe, rowDivergence, n, vocab, options, gradScale);
    }

    // ---------------------------------------------------------------- several teachers

    // ---------------------------------------------------------------- feature (hidden-state) distillation

    @Override
    public void featureDistance(FeatureDistance distance, MemorySegment rowLoss, MemorySegment grad, MemorySegment student,
                                MemorySegment teacher, DType teacherType, int n, int d, float gradScale) {
        if (!teacherType.isLogitType()) throw new IllegalArgumentException("teacher hidden states must be F32, F16 or BF16, got " + teacherType);
        pool.forEachChunk(n, grainRows(d), (chunk, start, end) -> {
            for (int r = start; r < end; r++) {
                long o = (long) r * d;
                if (distance == FeatureDistance.MSE) {
                    float acc = 0f;
                    for (int k = 0; k < d; k++) {
                        float e = get(student, o + k) - teacherType.read(teacher, o + k);
                        acc += e * e;
                    }
                    set(rowLoss, r, acc / d);
                    if (grad == null) continue;
                    float c = 2f * gradScale / d;
                    for (int k = 0; k < d; k++) set(grad, o + k, get(grad, o + k) + c * (get(student, o + k) - teacherType.read(teacher, o + k)));
                    continue;
                }
                float st = 0f, ss = 0f, tt = 0f;
                for (int k = 0; k < d; k++) {
                    float a = get(student, o + k), b = teacherType.read(teacher, o + k);
                    st += a * b;
                    ss += a * a;
                    tt += b * b;
                }
                float ns = (float) Math.sqrt(ss), nt = Math.max((float) Math.sqrt(tt), FeatureDistance.EPS);
                float den = Math.max(ns, FeatureDistance.EPS) * nt, cos = st / den;
                set(rowLoss, r, 1f - cos);
                if (grad == null) continue;
                // (cos s/|s| − t/|t|)/|s|: unit vectors first, so that the terms cancel to the rounding of 1,
                // not of 1/|s| (cos s/|s|² − t/den left 0.9e-7/|s| where the gradient is 0, as in one dimension)
                for (int k = 0; k < d; k++) {
                    float t = teacherType.read(teacher, o + k);
                    float ds = ns > FeatureDistance.EPS ? (cos * (get(student, o + k) / ns) - t / nt) / ns : -t / den;
                    set(grad, o + k, get(grad, o + k) + gradScale * ds);
                }
            }
        });
    }

    // ---------------------------------------------------------------- optimizer and gradient norm

    @Override
    public void adamW(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, long n,
                      float lr, float beta1, float beta2, float eps, float weightDecay, int step) {
        if (step < 1) throw new IllegalArgumentException("AdamW step must be >= 1, got " + step);
        float c1 = (float) (1.0 / (1.0 - Math.pow(beta1, step)));
        float c2 = (float) (1.0 / (1.0 - Math.pow(beta2, step)));
        elementwise(n, (start, end) -> adamW(params, grads, m, v, start, end, 1f, lr, beta1, beta2, eps, weightDecay, c1, c2));
    }

    /**
     * Every span of the block in one pass over the pool: the spans cut into pieces of at most
     * ELEMENTWISE_GRAIN elements (as {@link #adamW} cuts each span, so the same bits), the pieces
     * claimed by the threads as they come free, rather than a parallel call per tensor (dozens a step, most of
     * them small). The gradients are scaled as they are read (the bits of {@link #scale} first)
     * and left as they were.
     */
    @Override
    public void adamWSpans(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, ParameterSpans spans,
                           float gradScale, float lr, float beta1, float beta2, float eps, int step) {
        if (step < 1) throw new IllegalArgumentException("AdamW step must be >= 1, got " + step);
        float c1 = (float) (1.0 / (1.0 - Math.pow(beta1, step)));
        float c2 = (float) (1.0 / (1.0 - Math.pow(beta2, step)));
        long[] pieces = adamWPieces(spans);
        pool.forEachClaimed(pieces.length / 3, 1, (slot, first, last) -> {
            for (int q = 3 * first; q < 3 * last; q += 3) {
                adamW(params, grads, m, v, pieces[q], pieces[q + 1], gradScale, lr, beta1, beta2, eps, spans.weightDecay((int) pieces[q + 2]),
                        c1, c2);
            }
        });
    }

    /** The last spans seen and their pieces (start, end, span) in triples; spans are immutable. */
    private ParameterSpans piecesOf;
    private long[] pieces;

    private long[] adamWPieces(ParameterSpans spans) {
        if (spans != piecesOf) {
            java.util.List<long[]> list = new java.util.ArrayList<>();
            for (int i = 0; i < spans.count(); i++) {
                for (long from = 0; from < spans.length(i); from += ELEMENTWISE_GRAIN) {
                    long start = spans.offset(i) + from;
                    list.add(new long[]{start, start + Math.min(ELEMENTWISE_GRAIN, spans.length(i) - from), i});
                }
            }
            pieces = new long[3 * list.size()];
            for (int q = 0; q < list.size(); q++) System.arraycopy(list.get(q), 0, pieces, 3 * q, 3);
            piecesOf = spans;
        }
        return pieces;
    }

    /**
     * AdamW over elements [start, end) on the gradients times gradScale (x · 1 is x, so 1 leaves
     * them exact), c1 and c2 the bias corrections 1/(1 − βᵗ).
     */
    private static void adamW(MemorySegment params, MemorySegment grads, MemorySegment m, MemorySegment v, long start, long end,
                              float gradScale, float lr, float beta1, float beta2, float eps, float weightDecay, float c1, float c2) {
        float ob1 = 1f - beta1, ob2 = 1f - beta2;
        long i = start;
        for (long bound = start + SPECIES.loopBound(end - start); i < bound; i += LANES) {
            FloatVector g = FloatVector.fromMemorySegment(SPECIES, grads, (i) * 4L, ORDER).mul(gradScale);
            FloatVector p = FloatVector.fromMemorySegment(SPECIES, params, (i) * 4L, ORDER);
            FloatVector mv = FloatVector.fromMemorySegment(SPECIES, m, (i) * 4L, ORDER).mul(beta1).add(g.mul(ob1));
            FloatVector vv = FloatVector.fromMemorySegment(SPECIES, v, (i) * 4L, ORDER).mul(beta2).add(g.mul(g).mul(ob2));
            mv.intoMemorySegment(m, (i) * 4L, ORDER);
            vv.intoMemorySegment(v, (i) * 4L, ORDER);
            FloatVector update = mv.mul(c1).div(vv.mul(c2).sqrt().add(eps)).add(p.mul(weightDecay));
            p.sub(update.mul(lr)).intoMemorySegment(params, (i) * 4L, ORDER);
        }
        for (; i < end; i++) {
            float g = get(grads, i) * gradScale, p = get(params, i);
            float mv = beta1 * get(m, i) + ob1 * g;
            float vv = beta2 * get(v, i) + ob2 * g * g;
            set(m, i, mv);
            set(v, i, vv);
            set(params, i, p - lr * (mv * c1 / ((float) Math.sqrt(vv * c2) + eps) + weightDecay * p));
        }
    }

    @Override
    public double sumOfSquares(MemorySegment x, long n) {
        int blocks = blockCount(n);
        int chunks = pool.chunks(blocks, 1);
        double[] part = new double[chunks];
        pool.forEachChunk(blocks, 1, (chunk, start, end) -> {
            long from = (long) start * ELEMENTWISE_GRAIN, to = Math.min(n, (long) end * ELEMENTWISE_GRAIN);
            part[chunk] = VectorOps.sumOfSquares(x, from, (int) (to - from));
        });
        double total = 0;
        for (double p : part) total += p;
        return total;
    }

    @Override
    public void scale(MemorySegment x, float s, long n) {
        elementwise(n, (start, end) -> VectorOps.scale(x, start, (int) (end - start), s));
    }

    @Override
    public void fill(MemorySegment x, float value, long n) {
        elementwise(n, (start, end) -> VectorOps.fill(x, start, (int) (end - start), value));
    }

    // ---------------------------------------------------------------- helpers

    @FunctionalInterface
    private interface RangeBody {
        void run(long start, long end);
    }

    private static int blockCount(long n) {
        return Math.toIntExact((n + ELEMENTWISE_GRAIN - 1) / ELEMENTWISE_GRAIN);
    }

    /** Splits [0, n) into blocks of ELEMENTWISE_GRAIN, claimed by the pool's threads as they come free. */
    private void elementwise(long n, RangeBody body) {
        if (n <= 0) return;
        pool.forEachClaimed(blockCount(n), 1, (slot, start, end) ->
                body.run((long) start * ELEMENTWISE_GRAIN, Math.min(n, (long) end * ELEMENTWISE_GRAIN)));
    }

    /** Minimum rows per chunk so that a chunk holds about ELEMENTWISE_GRAIN / 4 elements. */
    private static int grainRows(int c) {
        return Math.max(1, (ELEMENTWISE_GRAIN / 4) / Math.max(1, c));
    }

    private float[][] partials(int chunks, int size) {
        if (partials.length < chunks || partials[0].length < size) {
            float[][] grown = new float[Math.max(chunks, partials.length)][];
            for (int i = 0; i < grown.length; i++) grown[i] = new float[Math.max(size, partials.length > 0 ? partials[0].length : 0)];
            partials = grown;
        }
        return partials;
    }

    /** acc[j] += Σ_chunk part[chunk][offset + j], chunks combined in order. */
    private static void addPartials(MemorySegment acc, float[][] part, int chunks, int offset, int c) {
        for (int j = 0; j < c; j++) {
            float s = get(acc, j);
            for (int ch = 0; ch < chunks; ch++) s += part[ch][offset + j];
            set(acc, j, s);
        }
    }
}
