package dev.distillery.bindings;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Objects;

/**
 * FFM binding of {@code libdistillery_cpu.so}, the native rows of the fused distillation loss
 * ({@code cpu/src/main/c/distill_cpu.c}, on AVX-512 or AVX2), the GEMM of bf16 mixed precision
 * ({@code cpu/src/main/c/bf16_gemm.c}), the fp32 GEMM ({@code cpu/src/main/c/f32_gemm.c}) and the
 * exps of drawing a token ({@code cpu/src/main/c/sample_rows.inc}), built into the {@code distillery-cpu}
 * jar when a C compiler was there. One static method per exported function, named after it;
 * pointers go as raw addresses of the caller's native segments, alive for the call (the rows are
 * critical downcalls: no thread-state transition, they neither block nor call back; the GEMM,
 * which runs for milliseconds, is not). The sampling exps take segments instead, on or off the
 * heap: critical downcalls with heap access, for a sampler's own arrays.
 *
 * <p>{@code -Ddistillery.nativeLoss=auto} (default) loads it on Linux x86-64 CPUs with AVX2 and
 * FMA: there the loss rows and the sampling exps ({@link #rowsKind()}) and the fp32 GEMM
 * ({@link #f32GemmKind()}) run in 8 lanes; with AVX-512 (F, BW, DQ) in 16, and the bf16 GEMM runs too.
 * {@code off} never. {@link #status()} says which and why.
 */
public final class DistilleryCpu {

    public static final String RESOURCE = "dev/distillery/cpu/linux-x86_64/libdistillery_cpu.so";
    /** The interface version this binding expects of {@code distillery_cpu_abi()}. */
    public static final int ABI = 16;
    /** {@link #bf16GemmKind()}'s answers: the machine that runs {@link #bf16Gemm}. */
    public static final int BF16_NONE = 0, BF16_AVX512 = 1, BF16_AMX = 2;
    /** {@link #f32GemmKind()}'s answers: the blocks that run {@link #f32Gemm} (f32_gemm.h's F32_*). */
    public static final int F32_NONE = 0, F32_AVX2 = 1, F32_AVX512 = 2;
    /** {@link #rowsKind()}'s answers: the machine that runs the loss rows (rows.h's ROWS_*). */
    public static final int ROWS_NONE = 0, ROWS_AVX2 = 1, ROWS_AVX512 = 2;
    /** {@link #denseForwardKlRow}'s return codes. */
    public static final int ROW_OK = 0, ROW_NOT_FINITE = 1, ROW_TEACHER_NAN = 2, ROW_TEACHER_MAX = 3;

    private static final MethodHandle DENSE_FORWARD_KL_ROW, DENSE_REVERSE_KL_ROW, DENSE_JSD_ROW, STUDENT_PASS, SQUARED_GRADIENT, BF16_GEMM, BF16_PACKED_B_BYTES,
            BF16_PACK_B, BF16_GEMM_PACKED_B, BF16_GEMM_CLAIMED, BF16_GEMM_CAUSAL, BF16_ATTENTION_FORWARD, BF16_DOT_PEAK,
            F32_PACKED_B_BYTES, F32_PACK_B, F32_GEMM_PACKED_B, F32_GEMM, SAMPLE_EXPS, SAMPLE_BLOCK_SUMS;
    private static final String STATUS;
    private static final int BF16_KIND, F32_KIND, ROWS_KIND;

    static {
        MethodHandle row = null, reverseRow = null, jsdRow = null, student = null, squared = null, bf16 = null, packedBytes = null, packB = null, bf16Packed = null,
                claimed = null, causal = null, attentionForward = null, dotPeak = null, f32PackedBytes = null, f32PackB = null, f32Packed = null, f32 = null,
                sampleExps = null, sampleBlockSums = null;
        int bf16Kind = BF16_NONE, f32Kind = F32_NONE, rowsKind = ROWS_NONE;
        String status;
        try {
            String choice = System.getProperty("distillery.nativeLoss", "auto").trim().toLowerCase(Locale.ROOT);
            if (choice.equals("off")) {
                status = "off (-Ddistillery.nativeLoss=off)";
            } else if (!choice.equals("auto")) {
                throw new IllegalArgumentException("-Ddistillery.nativeLoss=" + choice + ": auto or off");
            } else if (!System.getProperty("os.name", "").startsWith("Linux")
                    || !System.getProperty("os.arch", "").equals("amd64")) {
                status = "not available: built for Linux x86-64 only (this is " + System.getProperty("os.name")
                        + " " + System.getProperty("os.arch") + ")";
            } else {
                Path lib = NativeResources.extract(DistilleryCpu.class.getClassLoader(), RESOURCE, "cpu-kernels");
                if (lib == null) {
                    status = "not available: this build has no " + RESOURCE + " (no C compiler when it was built)";
                } else {
                    SymbolLookup lookup = SymbolLookup.libraryLookup(lib, Arena.global());
                    Linker linker = Linker.nativeLinker();
                    int abi = (int) linker.downcallHandle(lookup.findOrThrow("distillery_cpu_abi"),
                            FunctionDescriptor.of(ValueLayout.JAVA_INT)).invokeExact();
                    ValueLayout.OfLong p = ValueLayout.JAVA_LONG;
                    ValueLayout.OfInt i = ValueLayout.JAVA_INT;
                    ValueLayout.OfFloat f = ValueLayout.JAVA_FLOAT;
                    Linker.Option critical = Linker.Option.critical(false);
                    if (abi == ABI) {   /* the rows and the fp32 GEMM also run on AVX2 with FMA, where nothing else here does */
                        f32Kind = (int) linker.downcallHandle(lookup.findOrThrow("distillery_f32_gemm_kind"),
                                FunctionDescriptor.of(i)).invokeExact();
                        rowsKind = (int) linker.downcallHandle(lookup.findOrThrow("distillery_rows_kind"),
                                FunctionDescriptor.of(i)).invokeExact();
                    }
                    if (f32Kind != F32_NONE) {
                        f32PackedBytes = linker.downcallHandle(lookup.findOrThrow("distillery_f32_packed_b_bytes"),
                                FunctionDescriptor.of(p, i, i), critical);
                        f32PackB = linker.downcallHandle(lookup.findOrThrow("distillery_f32_pack_b"),
                                FunctionDescriptor.ofVoid(i, i, i, i, p, i, p));
                        f32Packed = linker.downcallHandle(lookup.findOrThrow("distillery_f32_gemm_packed_b"),
                                FunctionDescriptor.ofVoid(i, i, i, i, i, f, p, i, p, i, f, p, i, p));
                        f32 = linker.downcallHandle(lookup.findOrThrow("distillery_f32_gemm"),
                                FunctionDescriptor.of(i, i, i, i, i, i, i, f, p, i, p, i, f, p, i, p));
                    }
                    if (abi != ABI) {
                        status = "not available: " + lib + " has interface version " + abi + ", this code wants " + ABI;
                    } else if (rowsKind == ROWS_NONE) {
                        status = "not available: this CPU lacks AVX2 or FMA";
                    } else {
                        row = linker.downcallHandle(lookup.findOrThrow("distillery_dense_forward_kl_row"),
                                FunctionDescriptor.of(i, i, p, p, p, i, i, f, i, f, f, p, p, p, p, p, p), critical);
                        reverseRow = linker.downcallHandle(lookup.findOrThrow("distillery_dense_reverse_kl_row"),
                                FunctionDescriptor.of(i, i, p, p, p, i, i, f, i, f, f, p, p, p, p, p, p), critical);
                        jsdRow = linker.downcallHandle(lookup.findOrThrow("distillery_dense_jsd_row"),
                                FunctionDescriptor.of(i, i, p, p, p, i, i, f, i, f, f, f, p, p, p, p, p, p), critical);
                        student = linker.downcallHandle(lookup.findOrThrow("distillery_student_pass"),
                                FunctionDescriptor.ofVoid(i, p, i, f, i, p, p, p, p, p), critical);
                        squared = linker.downcallHandle(lookup.findOrThrow("distillery_squared_gradient"),
                                FunctionDescriptor.ofVoid(i, p, p, p, i, f, f, f, f, f, f), critical);
                        ValueLayout.OfDouble d = ValueLayout.JAVA_DOUBLE;
                        Linker.Option heap = Linker.Option.critical(true);
                        sampleExps = linker.downcallHandle(lookup.findOrThrow("distillery_sample_exps"),
                                FunctionDescriptor.of(d, i, ValueLayout.ADDRESS, i, f, d, ValueLayout.ADDRESS), heap);
                        sampleBlockSums = linker.downcallHandle(lookup.findOrThrow("distillery_sample_block_sums"),
                                FunctionDescriptor.of(d, i, ValueLayout.ADDRESS, i, i, d, ValueLayout.ADDRESS, ValueLayout.ADDRESS), heap);
                        status = "on: " + lib;
                    }
                    if (abi == ABI && rowsKind == ROWS_AVX2) {
                        status += " (AVX2: no bf16 GEMM, which needs AVX-512)";
                    } else if (abi == ABI && rowsKind == ROWS_AVX512) {
                        bf16 = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_gemm"),
                                FunctionDescriptor.of(i, i, i, i, i, i, i, f, p, i, i, p, i, i, f, p, i, p));
                        packedBytes = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_packed_b_bytes"),
                                FunctionDescriptor.of(p, i, i), critical);
                        packB = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_pack_b"),
                                FunctionDescriptor.ofVoid(i, i, i, p, i, i, p));
                        bf16Packed = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_gemm_packed_b"),
                                FunctionDescriptor.of(i, i, i, i, i, i, f, p, i, i, p, f, p, i, p));
                        claimed = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_gemm_claimed"),
                                FunctionDescriptor.of(i, i, i, i, i, i, i, f, p, i, i, p, f, p, i, p, p, i, i));
                        causal = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_gemm_causal"),
                                FunctionDescriptor.of(i, i, i, i, i, i, i, i, f, p, i, i, p, i, i, f, p, i));
                        attentionForward = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_attention_forward"),
                                FunctionDescriptor.of(i, i, i, f, p, p, p, i, p, p, i, i));
                        dotPeak = linker.downcallHandle(lookup.findOrThrow("distillery_bf16_dot_peak"), FunctionDescriptor.of(p, p));
                        bf16Kind = (int) linker.downcallHandle(lookup.findOrThrow("distillery_bf16_gemm_kind"),
                                FunctionDescriptor.of(i)).invokeExact();
                    }
                }
            }
        } catch (IOException | RuntimeException e) {
            status = "not available: " + e.getMessage();
        } catch (Throwable e) {
            throw new ExceptionInInitializerError(e);
        }
        DENSE_FORWARD_KL_ROW = row;
        DENSE_REVERSE_KL_ROW = reverseRow;
        DENSE_JSD_ROW = jsdRow;
        STUDENT_PASS = student;
        SQUARED_GRADIENT = squared;
        BF16_GEMM = bf16;
        BF16_PACKED_B_BYTES = packedBytes;
        BF16_PACK_B = packB;
        BF16_GEMM_PACKED_B = bf16Packed;
        BF16_GEMM_CLAIMED = claimed;
        BF16_GEMM_CAUSAL = causal;
        BF16_ATTENTION_FORWARD = attentionForward;
        BF16_DOT_PEAK = dotPeak;
        BF16_KIND = bf16Kind;
        F32_KIND = f32Kind;
        ROWS_KIND = rowsKind;
        F32_PACKED_B_BYTES = f32PackedBytes;
        F32_PACK_B = f32PackB;
        F32_GEMM_PACKED_B = f32Packed;
        F32_GEMM = f32;
        SAMPLE_EXPS = sampleExps;
        SAMPLE_BLOCK_SUMS = sampleBlockSums;
        STATUS = status;
    }

    private DistilleryCpu() {
    }

    /** Whether the library is loaded and this CPU runs its loss rows (on AVX2 at least). */
    public static boolean available() {
        return DENSE_FORWARD_KL_ROW != null;
    }

    /**
     * {@code distillery_rows_kind()}: {@link #ROWS_AVX512}, {@link #ROWS_AVX2} or {@link #ROWS_NONE}
     * (also when the library is not loaded). Every row function takes a kind up to this one.
     */
    public static int rowsKind() {
        return ROWS_KIND;
    }

    /** "on: &lt;library&gt;", "off (...)" or "not available: &lt;why&gt;". */
    public static String status() {
        return STATUS;
    }

    /**
     * {@code distillery_f32_gemm_kind()}: {@link #F32_AVX512}, {@link #F32_AVX2} (AVX2 with FMA: the
     * fp32 GEMM runs where {@link #available()} is false for lack of AVX-512) or {@link #F32_NONE}
     * (also when the library is not loaded).
     */
    public static int f32GemmKind() {
        return F32_KIND;
    }

    /**
     * {@code distillery_bf16_gemm_kind()}: {@link #BF16_AMX} (AMX tiles, granted by Linux),
     * {@link #BF16_AVX512} (AVX512-BF16 dot products) or {@link #BF16_NONE} (also when the library is not loaded).
     */
    public static int bf16GemmKind() {
        return BF16_KIND;
    }

    /**
     * {@code distillery_bf16_gemm}: row-major {@code C = alpha op(A) op(B) + beta C} with A and B
     * rounded to bf16 and fp32 sums, on the calling thread; {@code kind} one that
     * {@link #bf16GemmKind()} allows; {@code aBf16}, {@code bBf16}: that operand is stored as bf16
     * (read as it is), else fp32. {@code bias}: 0, or the address of n floats that stand in for
     * every row of C as beta's operand ({@code C = alpha op(A) op(B) + beta bias}, C not read).
     * Returns 0, or 1 when its packing buffers could not be allocated.
     */
    public static int bf16Gemm(int kind, boolean transA, boolean transB, int m, int n, int k, float alpha,
                               long a, int lda, boolean aBf16, long b, int ldb, boolean bBf16, float beta, long c, int ldc, long bias) {
        try {
            return (int) BF16_GEMM.invokeExact(kind, transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, aBf16 ? 1 : 0,
                    b, ldb, bBf16 ? 1 : 0, beta, c, ldc, bias);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_gemm failed", e);
        }
    }

    /**
     * {@code distillery_bf16_dot_peak}: {@code iterations} steps of independent VDPBF16PS chains in
     * registers, the arithmetic ceiling of the AVX512-BF16 path; returns the floating-point
     * operations done. Only where {@link #bf16GemmKind()} is not {@link #BF16_NONE}.
     */
    public static long bf16DotPeak(long iterations) {
        if (BF16_KIND == BF16_NONE) throw new IllegalStateException("no AVX512-BF16 dot products here (native library " + STATUS + ")");
        try {
            return (long) BF16_DOT_PEAK.invokeExact(iterations);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_dot_peak failed", e);
        }
    }

    /** {@code distillery_bf16_packed_b_bytes}: the bytes {@link #bf16PackB} writes for op(B) of (k, n). */
    public static long bf16PackedBBytes(int k, int n) {
        try {
            return (long) BF16_PACKED_B_BYTES.invokeExact(k, n);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_packed_b_bytes failed", e);
        }
    }

    /**
     * {@code distillery_bf16_pack_b}: op(B) (k, n) rounded to bf16 (or read as it is, {@code bBf16})
     * into {@code bp}, 64-byte aligned and {@link #bf16PackedBBytes} long, in the layout
     * {@link #bf16GemmPackedB} reads.
     */
    public static void bf16PackB(boolean transB, int k, int n, long b, int ldb, boolean bBf16, long bp) {
        try {
            BF16_PACK_B.invokeExact(transB ? 1 : 0, k, n, b, ldb, bBf16 ? 1 : 0, bp);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_pack_b failed", e);
        }
    }

    /** {@code distillery_bf16_gemm_packed_b}: {@link #bf16Gemm} with op(B) packed by {@link #bf16PackB}. */
    public static int bf16GemmPackedB(int kind, boolean transA, int m, int n, int k, float alpha, long a, int lda, boolean aBf16,
                                      long bp, float beta, long c, int ldc, long bias) {
        try {
            return (int) BF16_GEMM_PACKED_B.invokeExact(kind, transA ? 1 : 0, m, n, k, alpha, a, lda, aBf16 ? 1 : 0, bp, beta, c, ldc, bias);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_gemm_packed_b failed", e);
        }
    }

    /**
     * {@code distillery_bf16_gemm_claimed}: {@link #bf16Gemm} over the blocks of {@code claim} rows of C
     * (or columns, where {@code byColumns}: each thread then packs all of op(A) once), rounded up to
     * 32, that the calling thread claims from the int at {@code next}, which every thread of the
     * call shares and which starts at 0, or with {@code guided} (the call's threads) above 0 blocks
     * that shrink to 32 as they run out; op(B) packed already into {@code bp} ({@link #bf16PackB}).
     */
    public static int bf16GemmClaimed(int kind, boolean byColumns, boolean transA, int m, int n, int k, float alpha, long a, int lda,
                                      boolean aBf16, long bp, float beta, long c, int ldc, long bias, long next, int claim, int guided) {
        try {
            return (int) BF16_GEMM_CLAIMED.invokeExact(kind, byColumns ? 1 : 0, transA ? 1 : 0, m, n, k, alpha, a, lda, aBf16 ? 1 : 0,
                    bp, beta, c, ldc, bias, next, claim, guided);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_gemm_claimed failed", e);
        }
    }

    /** {@code distillery_bf16_gemm_causal}'s modes: which part of C a band of rows forms (the C file says how). */
    public static final int CAUSAL_COLUMNS = 0, CAUSAL_K_TO = 1, CAUSAL_K_FROM = 2;

    /**
     * {@code distillery_bf16_gemm_causal}: one attention head's causal product on the AVX512-BF16
     * path, in bands of {@code band} rows (a multiple of 32) of C, with the bits of one
     * {@link #bf16Gemm} call per band and each operand packed once.
     */
    public static int bf16GemmCausal(int mode, int band, boolean transA, boolean transB, int m, int n, int k, float alpha,
                                     long a, int lda, boolean aBf16, long b, int ldb, boolean bBf16, float beta, long c, int ldc) {
        try {
            return (int) BF16_GEMM_CAUSAL.invokeExact(mode, band, transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, aBf16 ? 1 : 0,
                    b, ldb, bBf16 ? 1 : 0, beta, c, ldc);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_gemm_causal failed", e);
        }
    }

    /**
     * {@code distillery_bf16_attention_forward}: one attention head's forward on the AVX512-BF16
     * path, Q, Kᵀ and V packed once, the causal softmax in fp32 between its two products, the
     * probabilities kept in att (t, t) where att is not 0; out (t, hs), rows ldo elements apart,
     * bf16 where outBf16. Returns 0, or 1 when the packing buffer could not be allocated.
     */
    public static int bf16AttentionForward(int t, int hs, float scale, long q, long k, long v, int ld, long att, long out, int ldo,
                                           boolean outBf16) {
        try {
            return (int) BF16_ATTENTION_FORWARD.invokeExact(t, hs, scale, q, k, v, ld, att, out, ldo, outBf16 ? 1 : 0);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_bf16_attention_forward failed", e);
        }
    }

    /**
     * {@code distillery_f32_gemm}: row-major {@code C = alpha op(A) op(B) + beta C} in fp32 on the
     * calling thread, op(B) packed first into the thread's buffer (C not read where beta is 0);
     * with a bias (n floats; 0 for none) standing in for every row of C as beta's operand; in the
     * blocks of {@code kind}, one that {@link #f32GemmKind()} allows (every kind gives the same bits).
     * Returns 0, or 1 when that buffer could not be allocated (nothing written).
     */
    public static int f32Gemm(int kind, boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b, int ldb,
                              float beta, long c, int ldc, long bias) {
        try {
            return (int) F32_GEMM.invokeExact(kind, transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_f32_gemm failed", e);
        }
    }

    /** {@code distillery_f32_packed_b_bytes}: the bytes {@link #f32PackB} writes for op(B) of (k, n). */
    public static long f32PackedBBytes(int k, int n) {
        try {
            return (long) F32_PACKED_B_BYTES.invokeExact(k, n);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_f32_packed_b_bytes failed", e);
        }
    }

    /**
     * {@code distillery_f32_pack_b}: op(B) (k, n), fp32, into {@code bp}, 64-byte aligned and
     * {@link #f32PackedBBytes} long, in the layout {@link #f32GemmPackedB} reads (the same bytes for every kind).
     */
    public static void f32PackB(int kind, boolean transB, int k, int n, long b, int ldb, long bp) {
        try {
            F32_PACK_B.invokeExact(kind, transB ? 1 : 0, k, n, b, ldb, bp);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_f32_pack_b failed", e);
        }
    }

    /**
     * {@code distillery_f32_gemm_packed_b}: row-major {@code C = alpha op(A) op(B) + beta C} in fp32
     * on the calling thread, op(B) the first k rows and n columns of what {@link #f32PackB} packed
     * at depth {@code packedK} ≥ k (C not read where beta is 0), with a bias and a kind as {@link #f32Gemm}'s.
     */
    public static void f32GemmPackedB(int kind, boolean transA, int m, int n, int k, float alpha, long a, int lda, long bp, int packedK,
                                      float beta, long c, int ldc, long bias) {
        try {
            F32_GEMM_PACKED_B.invokeExact(kind, transA ? 1 : 0, m, n, k, alpha, a, lda, bp, packedK, beta, c, ldc, bias);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_f32_gemm_packed_b failed", e);
        }
    }

    /**
     * {@code distillery_sample_exps}: on {@code kind} (as for the rows), {@code p[i] = exp((x[i] − max) · scale)} in float64 for the n
     * floats of x (each ≤ max), 0 where that is NaN or below the normal range; returns their sum.
     * x and p (n doubles, or {@link MemorySegment#NULL} for none) may be heap segments.
     */
    public static double sampleExps(int kind, MemorySegment x, int n, float max, double scale, MemorySegment p) {
        Objects.checkFromIndexSize(0, 4L * n, x.byteSize());
        if (!p.equals(MemorySegment.NULL)) Objects.checkFromIndexSize(0, 8L * n, p.byteSize());
        try {
            return (double) SAMPLE_EXPS.invokeExact(kind, x, n, max, scale, p);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_sample_exps failed", e);
        }
    }

    /**
     * {@code distillery_sample_block_sums}: on {@code kind}, the largest of the n floats of x into {@code max[0]}
     * (NaN skipped; −inf when there is none), and {@code sums[b]} = the sum of
     * {@code exp((x[i] − max) · scale)} over floats [b · block, (b + 1) · block), for every block,
     * in one pass over x; returns the sum of the sums. x, sums (⌈n / block⌉ doubles) and max (a
     * float) may be heap segments.
     */
    public static double sampleBlockSums(int kind, MemorySegment x, int n, int block, double scale, MemorySegment sums, MemorySegment max) {
        if (block <= 0) throw new IllegalArgumentException("blocks of " + block + " floats");
        Objects.checkFromIndexSize(0, 4L * n, x.byteSize());
        Objects.checkFromIndexSize(0, 8L * ((n + (long) block - 1) / block), sums.byteSize());
        Objects.checkFromIndexSize(0, 4, max.byteSize());
        try {
            return (double) SAMPLE_BLOCK_SUMS.invokeExact(kind, x, n, block, scale, sums, max);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_sample_block_sums failed", e);
        }
    }

    /**
     * {@code distillery_dense_forward_kl_row}: on {@code kind} (a {@code ROWS_} up to {@link #rowsKind()}), s, g, t (this row's), next s and next t (bytes to
     * prefetch), eT a scratch row of v floats, out 4 doubles; returns a ROW_ code.
     */
    public static int denseForwardKlRow(int kind, long s, long g, long t, boolean bf16, int v, float invT, int power, float c1, float cq,
                                        long nextS, long nextSBytes, long nextT, long nextTBytes, long eT, long out) {
        try {
            return (int) DENSE_FORWARD_KL_ROW.invokeExact(kind, s, g, t, bf16 ? 1 : 0, v, invT, power, c1, cq, nextS, nextSBytes,
                    nextT, nextTBytes, eT, out);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_dense_forward_kl_row failed", e);
        }
    }

    /**
     * {@code distillery_dense_reverse_kl_row}: the arguments of {@link #denseForwardKlRow}, with
     * scratch two rows of v floats; returns a ROW_ code.
     */
    public static int denseReverseKlRow(int kind, long s, long g, long t, boolean bf16, int v, float invT, int power, float c1, float cq,
                                        long nextS, long nextSBytes, long nextT, long nextTBytes, long scratch, long out) {
        try {
            return (int) DENSE_REVERSE_KL_ROW.invokeExact(kind, s, g, t, bf16 ? 1 : 0, v, invT, power, c1, cq, nextS, nextSBytes,
                    nextT, nextTBytes, scratch, out);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_dense_reverse_kl_row failed", e);
        }
    }

    /**
     * {@code distillery_dense_jsd_row}: the arguments of {@link #denseReverseKlRow}, with the JSD's
     * beta after power; returns a ROW_ code.
     */
    public static int denseJsdRow(int kind, long s, long g, long t, boolean bf16, int v, float invT, int power, float beta, float c1, float cq,
                                  long nextS, long nextSBytes, long nextT, long nextTBytes, long scratch, long out) {
        try {
            return (int) DENSE_JSD_ROW.invokeExact(kind, s, g, t, bf16 ? 1 : 0, v, invT, power, beta, c1, cq, nextS, nextSBytes,
                    nextT, nextTBytes, scratch, out);
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_dense_jsd_row failed", e);
        }
    }

    /** {@code distillery_student_pass}: e and blockMax scratch (v and ceil(v / 2048) floats), out {m, log Z_T, log Z_1, raises}. */
    public static void studentPass(int kind, long s, int v, float invT, int power, long e, long blockMax, long nextS, long nextSBytes, long out) {
        try {
            STUDENT_PASS.invokeExact(kind, s, v, invT, power, e, blockMax, nextS, nextSBytes, out);
        } catch (Throwable t) {
            throw new IllegalStateException("distillery_student_pass failed", t);
        }
    }

    /** {@code distillery_squared_gradient}: the gradient of every column of a sparse row from studentPass's e. */
    public static void squaredGradient(int kind, long g, long e, long blockMax, int v, float m, float invT, float logZt, float logZ1,
                                       float c1, float cqw) {
        try {
            SQUARED_GRADIENT.invokeExact(kind, g, e, blockMax, v, m, invT, logZt, logZ1, c1, cqw);
        } catch (Throwable t) {
            throw new IllegalStateException("distillery_squared_gradient failed", t);
        }
    }
}
