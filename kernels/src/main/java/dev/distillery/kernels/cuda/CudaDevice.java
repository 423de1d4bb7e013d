package dev.distillery.kernels.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.EnumMap;
import java.util.Map;

import dev.distillery.bindings.CudaCalls;
import dev.distillery.bindings.CudaDevices;
import dev.distillery.bindings.CudaLibraries;
import dev.distillery.bindings.SharedLibraries;
import dev.distillery.bindings.cublas.Cublas;
import dev.distillery.bindings.cuda.CudaDriver;

/**
 * One GPU for Distillery's kernels, through the driver API: the device's primary context, the
 * fatbin loaded from the jar resource {@code dev/distillery/cuda/distillery.fatbin}, a compute
 * stream and a copy stream, and a cuBLAS handle on the compute stream. Device memory is handed
 * out as raw addresses ({@code CUdeviceptr}); nothing on the host ever dereferences them.
 *
 * <p>Status: this launch path is what {@code selftest --device cuda} and the {@code gpu}-tagged
 * tests use. It has not yet run on a GPU from this project's machines (none has one); every call
 * is checked, so a mistake surfaces as a {@link dev.distillery.bindings.CudaException} naming the
 * call, not as silent garbage.
 */
public final class CudaDevice implements CudaBackend {

    public static final String FATBIN = "/dev/distillery/cuda/distillery.fatbin";

    private final Arena arena = Arena.ofShared();
    private final int ordinal;
    private final int device;
    private final CudaDevices.Device info;
    private final MemorySegment context;
    private final MemorySegment module;
    private final MemorySegment stream;
    private final MemorySegment copyStream;
    private final MemorySegment copiesDone;
    private final MemorySegment cublas;
    private final Map<CudaKernel, MemorySegment> functions = new EnumMap<>(CudaKernel.class);
    private boolean closed;
    private volatile Thread boundThread;

    private CudaDevice(int ordinal, boolean tf32) {
        this.ordinal = ordinal;
        CudaDevices.Probe probe = CudaDevices.probe();
        if (!probe.available()) throw new IllegalStateException("no CUDA device: " + probe.reason());
        if (ordinal < 0 || ordinal >= probe.devices().size()) {
            throw new IllegalArgumentException("CUDA device " + ordinal + " does not exist (" + probe.devices().size() + " found)");
        }
        this.info = probe.devices().get(ordinal);
        SharedLibraries.Probe blas = CudaLibraries.cublas();
        if (!blas.loaded()) throw new IllegalStateException("cuBLAS " + blas.describe());
        byte[] image = fatbin();

        MemorySegment i32 = arena.allocate(ValueLayout.JAVA_INT);
        CudaCalls.driver(CudaDriver.cuDeviceGet(i32, ordinal), "cuDeviceGet(" + ordinal + ")");
        this.device = i32.get(ValueLayout.JAVA_INT, 0);
        MemorySegment ptr = arena.allocate(ValueLayout.ADDRESS);
        CudaCalls.driver(CudaDriver.cuDevicePrimaryCtxRetain(ptr, device), "cuDevicePrimaryCtxRetain(" + ordinal + ")");
        this.context = ptr.get(ValueLayout.ADDRESS, 0);
        CudaCalls.driver(CudaDriver.cuCtxSetCurrent(context), "cuCtxSetCurrent");
        this.boundThread = Thread.currentThread();
        MemorySegment img = arena.allocate(image.length + 1L, 64);
        MemorySegment.copy(image, 0, img, ValueLayout.JAVA_BYTE, 0, image.length);
        CudaCalls.driver(CudaDriver.cuModuleLoadData(ptr, img), "cuModuleLoadData(distillery.fatbin, " + image.length + " bytes)");
        this.module = ptr.get(ValueLayout.ADDRESS, 0);
        CudaCalls.driver(CudaDriver.cuStreamCreate(ptr, CudaDriver.CU_STREAM_NON_BLOCKING()), "cuStreamCreate(compute)");
        this.stream = ptr.get(ValueLayout.ADDRESS, 0);
        CudaCalls.driver(CudaDriver.cuStreamCreate(ptr, CudaDriver.CU_STREAM_NON_BLOCKING()), "cuStreamCreate(copy)");
        this.copyStream = ptr.get(ValueLayout.ADDRESS, 0);
        CudaCalls.driver(CudaDriver.cuEventCreate(ptr, CudaDriver.CU_EVENT_DEFAULT()), "cuEventCreate(copies done)");
        this.copiesDone = ptr.get(ValueLayout.ADDRESS, 0);
        CudaCalls.cublas(Cublas.cublasCreate_v2(ptr), "cublasCreate");
        this.cublas = ptr.get(ValueLayout.ADDRESS, 0);
        CudaCalls.cublas(Cublas.cublasSetStream_v2(cublas, stream), "cublasSetStream");
        CudaCalls.cublas(Cublas.cublasSetMathMode(cublas, tf32 ? Cublas.CUBLAS_TF32_TENSOR_OP_MATH() : Cublas.CUBLAS_DEFAULT_MATH()),
                "cublasSetMathMode(" + (tf32 ? "TF32" : "default") + ")");
    }

    /** Opens device {@code ordinal}; {@code tf32} lets cuBLAS use TF32 tensor cores for fp32 GEMM. */
    public static CudaDevice open(int ordinal, boolean tf32) {
        return new CudaDevice(ordinal, tf32);
    }

    /** The kernels image; absent when the jar was built without nvcc. */
    public static byte[] fatbin() {
        try (InputStream in = CudaDevice.class.getResourceAsStream(FATBIN)) {
            if (in == null) {
                throw new IllegalStateException("this jar has no CUDA kernels (" + FATBIN + " is missing: it was built without nvcc)");
            }
            return in.readAllBytes();
        } catch (IOException e) {
            throw new IllegalStateException("cannot read " + FATBIN + ": " + e.getMessage(), e);
        }
    }

    /**
     * Makes the context current on the calling thread (a driver-API context is per thread): the
     * trainer's main thread, an arena's cleanup on another thread, a JMH worker.
     */
    void bind() {
        Thread t = Thread.currentThread();
        if (t != boundThread) {
            CudaCalls.driver(CudaDriver.cuCtxSetCurrent(context), "cuCtxSetCurrent(" + t.getName() + ")");
            boundThread = t;
        }
    }

    /** The stream every kernel, GEMM and copy of these kernels runs on (NCCL's sums join it). */
    MemorySegment computeStream() {
        return stream;
    }

    @Override
    public String describe() {
        return "cuda:" + ordinal + " " + info.describe();
    }

    @Override
    public long alloc(long bytes) {
        bind();
        MemorySegment p = arena.allocate(ValueLayout.JAVA_LONG);
        CudaCalls.driver(CudaDriver.cuMemAlloc_v2(p, Math.max(4, bytes)), "cuMemAlloc(" + bytes + " bytes)");
        return p.get(ValueLayout.JAVA_LONG, 0);
    }

    @Override
    public void free(long address) {
        bind();
        CudaCalls.driver(CudaDriver.cuMemFree_v2(address), "cuMemFree");
    }

    /**
     * Host → device on the compute stream, then a wait for it: ordered after the kernels already
     * issued, finished before later ones start and before {@code src} may change. (The
     * synchronous cuMemcpyHtoD would run on the legacy default stream, which does not order with
     * our non-blocking streams, and from pageable memory may return before its DMA lands.)
     */
    @Override
    public void upload(long dst, MemorySegment src, long bytes) {
        bind();
        CudaCalls.driver(CudaDriver.cuMemcpyHtoDAsync_v2(dst, src, bytes, stream), "cuMemcpyHtoDAsync(" + bytes + " bytes, compute stream)");
        synchronize();
    }

    /** Device → host on the compute stream (after the kernels already issued), then a wait for it. */
    @Override
    public void download(MemorySegment dst, long src, long bytes) {
        bind();
        CudaCalls.driver(CudaDriver.cuMemcpyDtoHAsync_v2(dst, src, bytes, stream), "cuMemcpyDtoHAsync(" + bytes + " bytes, compute stream)");
        synchronize();
    }

    /**
     * Device → device on the compute stream: ordered after the kernels already issued and before
     * later ones, with no wait on the host. (A synchronous cuMemcpyDtoD would wait for the whole
     * context before and after it, draining the queue in the middle of a step.)
     */
    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        bind();
        CudaCalls.driver(CudaDriver.cuMemcpyDtoDAsync_v2(dst, src, bytes, stream), "cuMemcpyDtoDAsync(" + bytes + " bytes, compute stream)");
    }

    @Override
    public MemorySegment allocHost(long bytes) {
        bind();
        MemorySegment p = arena.allocate(ValueLayout.ADDRESS);
        CudaCalls.driver(CudaDriver.cuMemAllocHost_v2(p, Math.max(4, bytes)), "cuMemAllocHost(" + bytes + " bytes)");
        return p.get(ValueLayout.ADDRESS, 0).reinterpret(bytes);
    }

    @Override
    public void freeHost(MemorySegment host) {
        bind();
        CudaCalls.driver(CudaDriver.cuMemFreeHost(host), "cuMemFreeHost");
    }

    @Override
    public void uploadAsync(long dst, MemorySegment src, long bytes) {
        bind();
        CudaCalls.driver(CudaDriver.cuMemcpyHtoDAsync_v2(dst, src, bytes, copyStream), "cuMemcpyHtoDAsync(" + bytes + " bytes)");
    }

    @Override
    public void joinCopies() {
        bind();
        CudaCalls.driver(CudaDriver.cuEventRecord(copiesDone, copyStream), "cuEventRecord(copy stream)");
        CudaCalls.driver(CudaDriver.cuStreamWaitEvent(stream, copiesDone, 0), "cuStreamWaitEvent(compute on copies)");
    }

    @Override
    public void synchronize() {
        bind();
        CudaCalls.driver(CudaDriver.cuStreamSynchronize(stream), "cuStreamSynchronize(compute)");
    }

    private MemorySegment function(CudaKernel kernel) {
        return functions.computeIfAbsent(kernel, k -> {
            MemorySegment p = arena.allocate(ValueLayout.ADDRESS);
            CudaCalls.driver(CudaDriver.cuModuleGetFunction(p, module, arena.allocateFrom(k.symbol())), "cuModuleGetFunction(" + k.symbol() + ")");
            return p.get(ValueLayout.ADDRESS, 0);
        });
    }

    @Override
    public void launch(CudaKernel kernel, int grid, int block, Object... args) {
        bind();
        try (Arena call = Arena.ofConfined()) {
            MemorySegment params = CudaBackend.marshal(call, kernel, args);
            CudaCalls.driver(CudaDriver.cuLaunchKernel(function(kernel), grid, 1, 1, block, 1, 1, 0, stream, params, MemorySegment.NULL),
                    "cuLaunchKernel(" + kernel.symbol() + ", grid " + grid + ", block " + block + ")");
        }
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b, int ldb,
                      float beta, long c, int ldc) {
        bind();
        try (Arena call = Arena.ofConfined()) {
            CudaCalls.cublas(Cublas.cublasSgemm_v2(cublas, op(transA), op(transB), m, n, k, call.allocateFrom(ValueLayout.JAVA_FLOAT, alpha),
                    MemorySegment.ofAddress(a), lda, MemorySegment.ofAddress(b), ldb, call.allocateFrom(ValueLayout.JAVA_FLOAT, beta),
                    MemorySegment.ofAddress(c), ldc), "cublasSgemm(" + m + "x" + n + "x" + k + ")");
        }
    }

    @Override
    public void sgemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                    long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch) {
        bind();
        try (Arena call = Arena.ofConfined()) {
            CudaCalls.cublas(Cublas.cublasSgemmStridedBatched(cublas, op(transA), op(transB), m, n, k,
                    call.allocateFrom(ValueLayout.JAVA_FLOAT, alpha), MemorySegment.ofAddress(a), lda, strideA,
                    MemorySegment.ofAddress(b), ldb, strideB, call.allocateFrom(ValueLayout.JAVA_FLOAT, beta),
                    MemorySegment.ofAddress(c), ldc, strideC, batch), "cublasSgemmStridedBatched(" + batch + " x " + m + "x" + n + "x" + k + ")");
        }
    }

    @Override
    public void gemmBf16StridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                       long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch) {
        bind();
        try (Arena call = Arena.ofConfined()) {
            CudaCalls.cublas(Cublas.cublasGemmStridedBatchedEx(cublas, op(transA), op(transB), m, n, k,
                    call.allocateFrom(ValueLayout.JAVA_FLOAT, alpha), MemorySegment.ofAddress(a), Cublas.CUDA_R_16BF(), lda, strideA,
                    MemorySegment.ofAddress(b), Cublas.CUDA_R_16BF(), ldb, strideB, call.allocateFrom(ValueLayout.JAVA_FLOAT, beta),
                    MemorySegment.ofAddress(c), Cublas.CUDA_R_32F(), ldc, strideC, batch, Cublas.CUBLAS_COMPUTE_32F(),
                    Cublas.CUBLAS_GEMM_DEFAULT()), "cublasGemmStridedBatchedEx(bf16, " + batch + " x " + m + "x" + n + "x" + k + ")");
        }
    }

    private static int op(boolean trans) {
        return trans ? Cublas.CUBLAS_OP_T() : Cublas.CUBLAS_OP_N();
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        bind();
        CudaCalls.driver(CudaDriver.cuCtxSynchronize(), "cuCtxSynchronize");
        CudaCalls.cublas(Cublas.cublasDestroy_v2(cublas), "cublasDestroy");
        CudaCalls.driver(CudaDriver.cuStreamDestroy_v2(stream), "cuStreamDestroy(compute)");
        CudaCalls.driver(CudaDriver.cuStreamDestroy_v2(copyStream), "cuStreamDestroy(copy)");
        CudaCalls.driver(CudaDriver.cuEventDestroy_v2(copiesDone), "cuEventDestroy(copies done)");
        CudaCalls.driver(CudaDriver.cuModuleUnload(module), "cuModuleUnload");
        CudaCalls.driver(CudaDriver.cuDevicePrimaryCtxRelease_v2(device), "cuDevicePrimaryCtxRelease");
        arena.close();
    }
}
