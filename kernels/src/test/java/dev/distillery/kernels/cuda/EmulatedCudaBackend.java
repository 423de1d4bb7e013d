package dev.distillery.kernels.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * {@link CudaBackend} on the CPU: the fatbin's kernels compiled with the emulation header into a
 * shared library ({@code emu_device.cpp}), launched by name through FFM with the same argument
 * marshalling as the real device.
 *
 * <p>"Device" memory is host memory handed out at an address moved by {@link #DEVICE_OFFSET} into
 * the non-canonical range of x86-64: like a real device pointer it works in launches, GEMMs and
 * copies (which translate it back), and a host dereference of it faults instead of silently
 * reading the right bytes. Code that passes under this backend therefore never reads device
 * memory on the host.
 */
public final class EmulatedCudaBackend implements CudaBackend {

    /** Added to a host address to make the emulated device pointer (bit 62: far outside any user address). */
    static final long DEVICE_OFFSET = 1L << 62;

    private final Arena arena = Arena.ofShared();
    private final Map<Long, MemorySegment> live = new HashMap<>();
    private final MethodHandle launch;
    private final MethodHandle sgemm, gemmBf16;
    private final MethodHandle signature, count, name;
    private int launches;
    private int gemms;
    private int waits;
    private int allocations;
    private long liveBytes, memoryLimit = Long.MAX_VALUE;

    public EmulatedCudaBackend(Path library) {
        SymbolLookup lib = SymbolLookup.libraryLookup(library, arena);
        Linker linker = Linker.nativeLinker();
        launch = linker.downcallHandle(lib.findOrThrow("emu_launch"), FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
        signature = linker.downcallHandle(lib.findOrThrow("emu_signature"), FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.JAVA_INT));
        count = linker.downcallHandle(lib.findOrThrow("emu_kernel_count"), FunctionDescriptor.of(ValueLayout.JAVA_INT));
        name = linker.downcallHandle(lib.findOrThrow("emu_kernel_name"), FunctionDescriptor.of(ValueLayout.ADDRESS, ValueLayout.JAVA_INT));
        sgemm = linker.downcallHandle(lib.findOrThrow("emu_sgemm_strided"), FunctionDescriptor.ofVoid(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                ValueLayout.JAVA_FLOAT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG,
                ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_FLOAT,
                ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT));
        gemmBf16 = linker.downcallHandle(lib.findOrThrow("emu_gemm_bf16_strided"), FunctionDescriptor.ofVoid(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                ValueLayout.JAVA_FLOAT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG,
                ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_FLOAT,
                ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT));
    }

    /** The kernels of the emulated library's registry (kernels.def), by name. */
    public List<String> registry() {
        try {
            int n = (int) count.invokeExact();
            List<String> names = new ArrayList<>(n);
            for (int i = 0; i < n; i++) names.add(((MemorySegment) name.invokeExact(i)).reinterpret(256).getString(0));
            return names;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** The argument kinds of a kernel as its C++ signature gives them (p, i, l, f, s), or null for an unknown name. */
    public String signature(String kernel) {
        try (Arena call = Arena.ofConfined()) {
            MemorySegment out = call.allocate(64);
            int status = (int) signature.invokeExact(call.allocateFrom(kernel), out, 64);
            return status == 0 ? out.getString(0) : null;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** Kernels launched so far (cuBLAS calls not included: {@link #gemms}). */
    public int launches() {
        return launches;
    }

    /** Device allocations made so far. */
    public int allocations() {
        return allocations;
    }

    /**
     * Calls so far after which the host waits for the compute stream (synchronize, upload,
     * download): on a GPU each one drains the queue, so the device idles while the host issues
     * the work after it.
     */
    public int waits() {
        return waits;
    }

    /** cuBLAS GEMM calls so far (each one launch or more on a GPU). */
    public int gemms() {
        return gemms;
    }

    @Override
    public String describe() {
        return "CPU emulation of the CUDA device";
    }

    @Override
    public long alloc(long bytes) {
        long size = Math.max(4, bytes);
        if (liveBytes + size > memoryLimit) {   // as cuMemAlloc fails on a full device
            throw new dev.distillery.bindings.CudaException("cuMemAlloc(" + bytes + " bytes)", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory");
        }
        MemorySegment s = arena.allocate(size, 256);
        live.put(s.address(), s);
        liveBytes += size;
        allocations++;
        return s.address() + DEVICE_OFFSET;
    }

    @Override
    public void free(long address) {
        MemorySegment s = live.remove(host(address));
        if (s == null) throw new IllegalStateException("free of " + address + ": not allocated here (or freed twice)");
        liveBytes -= s.byteSize();
    }

    /** Device memory from here on: an allocation that would take the live bytes past {@code bytes} fails as a full device's does. */
    public void limitMemory(long bytes) {
        memoryLimit = bytes;
    }

    /** Bytes allocated and not freed. */
    public long liveBytes() {
        return liveBytes;
    }

    /** The host address behind an emulated device pointer; fails on anything else (a host pointer passed as a device one). */
    private static long host(long device) {
        if (device == 0) return 0;
        if ((device & DEVICE_OFFSET) == 0) {
            throw new IllegalArgumentException("0x" + Long.toHexString(device) + " is not a device pointer (host memory passed to the device?)");
        }
        return device - DEVICE_OFFSET;
    }

    @Override
    public void upload(long dst, MemorySegment src, long bytes) {
        waits++;
        copyIn(dst, src, bytes);
    }

    private static void copyIn(long dst, MemorySegment src, long bytes) {
        MemorySegment.copy(src, 0, MemorySegment.ofAddress(host(dst)).reinterpret(bytes), 0, bytes);
    }

    @Override
    public void download(MemorySegment dst, long src, long bytes) {
        waits++;
        if ((dst.address() & DEVICE_OFFSET) != 0) throw new IllegalArgumentException("download into a device pointer");
        MemorySegment.copy(MemorySegment.ofAddress(host(src)).reinterpret(bytes), 0, dst, 0, bytes);
    }

    @Override
    public void copyDeviceToDevice(long dst, long src, long bytes) {
        MemorySegment.copy(MemorySegment.ofAddress(host(src)).reinterpret(bytes), 0, MemorySegment.ofAddress(host(dst)).reinterpret(bytes), 0, bytes);
    }

    @Override
    public MemorySegment allocHost(long bytes) {
        return Arena.global().allocate(Math.max(4, bytes), 4096).asSlice(0, bytes);
    }

    @Override
    public void freeHost(MemorySegment host) {
        // global arena: the emulation keeps its few staging blocks for the life of the test JVM
    }

    @Override
    public void uploadAsync(long dst, MemorySegment src, long bytes) {
        copyIn(dst, src, bytes);  // on the copy stream: the host does not wait
    }

    @Override
    public void joinCopies() {
    }

    @Override
    public void launch(CudaKernel kernel, int grid, int block, Object... args) {
        launches++;
        try (Arena call = Arena.ofConfined()) {
            Object[] hostArgs = args.clone();
            for (int i = 0; i < hostArgs.length; i++) if (hostArgs[i] instanceof Ptr p) hostArgs[i] = new Ptr(host(p.address()));
            int status = (int) launch.invokeExact(call.allocateFrom(kernel.symbol()), grid, block, CudaBackend.marshal(call, kernel, hostArgs));
            if (status != 0) throw new IllegalArgumentException("the emulated device has no kernel named " + kernel.symbol());
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    @Override
    public void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b, int ldb, float beta,
                      long c, int ldc) {
        sgemmStridedBatched(transA, transB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
    }

    @Override
    public void sgemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                    long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch) {
        gemms++;
        try {
            sgemm.invokeExact(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, host(a), lda, strideA, host(b), ldb, strideB, beta, host(c), ldc,
                    strideC, batch);
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    @Override
    public void gemmBf16StridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                       long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch) {
        gemms++;
        try {
            gemmBf16.invokeExact(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, host(a), lda, strideA, host(b), ldb, strideB, beta,
                    host(c), ldc, strideC, batch);
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    @Override
    public void synchronize() {
        waits++;
    }

    /** Small blocks (two warps, so the cross-warp reductions run) and grids keep a launch cheap; grid-stride loops stay correct. */
    @Override
    public int block() {
        return 64;
    }

    @Override
    public int maxGrid() {
        return 4;
    }

    @Override
    public void close() {
        arena.close();
    }
}
