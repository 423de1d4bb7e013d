package dev.distillery.kernels.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * {@link CudaBackend} on the CPU: the fatbin's kernels compiled with the emulation header into a
 * shared library ({@code emu_device.cpp}), launched by name through FFM with the same argument
 * marshalling as the real device; "device" memory is host memory, so a test can read it directly.
 */
final class EmulatedCudaBackend implements CudaBackend {

    private final Arena arena = Arena.ofShared();
    private final Map<Long, MemorySegment> live = new HashMap<>();
    private final MethodHandle launch;
    private final MethodHandle sgemm;
    private int launches;

    EmulatedCudaBackend(Path library) {
        SymbolLookup lib = SymbolLookup.libraryLookup(library, arena);
        Linker linker = Linker.nativeLinker();
        launch = linker.downcallHandle(lib.findOrThrow("emu_launch"), FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
        sgemm = linker.downcallHandle(lib.findOrThrow("emu_sgemm_strided"), FunctionDescriptor.ofVoid(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                ValueLayout.JAVA_FLOAT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG,
                ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_FLOAT,
                ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT));
    }

    int launches() {
        return launches;
    }

    @Override
    public String describe() {
        return "CPU emulation of the CUDA device";
    }

    @Override
    public long alloc(long bytes) {
        MemorySegment s = arena.allocate(Math.max(4, bytes), 256);
        live.put(s.address(), s);
        return s.address();
    }

    @Override
    public void free(long address) {
        if (live.remove(address) == null) throw new IllegalStateException("free of " + address + ": not allocated here (or freed twice)");
    }

    @Override
    public void upload(long dst, MemorySegment src, long bytes) {
        MemorySegment.copy(src, 0, MemorySegment.ofAddress(dst).reinterpret(bytes), 0, bytes);
    }

    @Override
    public void download(MemorySegment dst, long src, long bytes) {
        MemorySegment.copy(MemorySegment.ofAddress(src).reinterpret(bytes), 0, dst, 0, bytes);
    }

    @Override
    public void launch(String kernel, int grid, int block, Object... args) {
        launches++;
        try (Arena call = Arena.ofConfined()) {
            int status = (int) launch.invokeExact(call.allocateFrom(kernel), grid, block, CudaBackend.marshal(call, kernel, args));
            if (status != 0) throw new IllegalArgumentException("the emulated device has no kernel named " + kernel);
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
        try {
            sgemm.invokeExact(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    @Override
    public void synchronize() {
    }

    /** Emulated threads are OS threads: small blocks and grids keep a launch cheap (grid-stride loops stay correct). */
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
