package dev.distillery.kernels.cpu;

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

import dev.distillery.bindings.NativeResources;

/**
 * The native rows of the fused distillation loss (kernels/src/main/c/distill_cpu.c, built into the
 * jar by kernels/build-native.sh when a C compiler is there), in C with prefetches of the next
 * row (docs/KERNELS.md#the-native-row): the dense forward-KL row whose gradient is formed over the
 * e_s pass A leaves in the gradient row, and a sparse teacher's passes over the whole student row
 * (pass A and the gradient of the columns no entry lists) when that gradient is e-squared.
 * FusedDistillLoss calls them for such rows when they are available and enabled; every other row,
 * the sparse entries, and every error message stay in Java.
 *
 * <p>{@code -Ddistillery.nativeLoss=auto} (default) uses it on Linux x86-64 CPUs with AVX-512
 * (F, BW, DQ) and FMA; {@code off} never. {@link #status()} says which and why.
 */
final class NativeRows {

    static final String RESOURCE = "dev/distillery/kernels/cpu/linux-x86_64/libdistillery_cpu.so";
    /** distillery_fkl_row's return codes. */
    static final int OK = 0, NOT_FINITE = 1, TEACHER_NAN = 2, TEACHER_MAX = 3;

    private static final MethodHandle ROW, STUDENT, SQUARED;
    private static final String STATUS;
    /** Tests run the Java rows too: they turn this off around a run. */
    private static volatile boolean enabled = true;

    static {
        MethodHandle row = null, student = null, squared = null;
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
                Path lib = NativeResources.extract(NativeRows.class.getClassLoader(), RESOURCE, "cpu-kernels");
                if (lib == null) {
                    status = "not available: this build has no " + RESOURCE + " (no C compiler when it was built)";
                } else {
                    SymbolLookup lookup = SymbolLookup.libraryLookup(lib, Arena.global());
                    Linker linker = Linker.nativeLinker();
                    int abi = (int) linker.downcallHandle(lookup.findOrThrow("distillery_cpu_abi"),
                            FunctionDescriptor.of(ValueLayout.JAVA_INT)).invokeExact();
                    int supported = (int) linker.downcallHandle(lookup.findOrThrow("distillery_cpu_supported"),
                            FunctionDescriptor.of(ValueLayout.JAVA_INT)).invokeExact();
                    if (abi != 2) {
                        status = "not available: " + lib + " has interface version " + abi + ", this code wants 2";
                    } else if (supported == 0) {
                        status = "not available: this CPU lacks AVX-512 F/BW/DQ or FMA";
                    } else {
                        // pointers go as raw addresses of the caller's native segments, alive for the call
                        ValueLayout.OfLong p = ValueLayout.JAVA_LONG;
                        row = linker.downcallHandle(lookup.findOrThrow("distillery_fkl_row"),
                                FunctionDescriptor.of(ValueLayout.JAVA_INT, p, p, p, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                                        ValueLayout.JAVA_FLOAT, ValueLayout.JAVA_INT, ValueLayout.JAVA_FLOAT, ValueLayout.JAVA_FLOAT,
                                        p, p, p, p, p, p),
                                Linker.Option.critical(false));
                        ValueLayout.OfInt i = ValueLayout.JAVA_INT;
                        ValueLayout.OfFloat f = ValueLayout.JAVA_FLOAT;
                        student = linker.downcallHandle(lookup.findOrThrow("distillery_student_row"),
                                FunctionDescriptor.ofVoid(p, i, f, i, p, p, p, p, p), Linker.Option.critical(false));
                        squared = linker.downcallHandle(lookup.findOrThrow("distillery_squared_gradient"),
                                FunctionDescriptor.ofVoid(p, p, p, i, f, f, f, f, f, f), Linker.Option.critical(false));
                        status = "on: " + lib;
                    }
                }
            }
        } catch (IOException | RuntimeException e) {
            status = "not available: " + e.getMessage();
        } catch (Throwable e) {
            throw new ExceptionInInitializerError(e);
        }
        ROW = row;
        STUDENT = student;
        SQUARED = squared;
        STATUS = status;
    }

    private NativeRows() {
    }

    /** Whether rows go to the native code now. */
    static boolean active() {
        return ROW != null && enabled;
    }

    /** "on: <library>", "off (...)" or "not available: <why>". */
    static String status() {
        return STATUS;
    }

    /** For tests: run the Java rows (false) or the native ones where they apply (true). */
    static void enable(boolean on) {
        enabled = on;
    }

    /**
     * distillery_student_row (a sparse teacher's pass A over the student row): e and blockMax
     * scratch (v and ceil(v / BLOCK) floats), out {m, log Z_T, log Z_1}.
     */
    static void studentRow(long s, int v, float invT, int power, MemorySegment e, MemorySegment blockMax,
                           long nextS, long nextSBytes, MemorySegment out) {
        try {
            STUDENT.invokeExact(s, v, invT, power, e.address(), blockMax.address(), nextS, nextSBytes, out.address());
        } catch (Throwable t) {
            throw new IllegalStateException("distillery_student_row failed", t);
        }
    }

    /** distillery_squared_gradient: the gradient of every column of a sparse row from studentRow's e. */
    static void squaredGradient(long g, MemorySegment e, MemorySegment blockMax, int v, float m, float invT, float logZt,
                                float logZ1, float c1, float cqw) {
        try {
            SQUARED.invokeExact(g, e.address(), blockMax.address(), v, m, invT, logZt, logZ1, c1, cqw);
        } catch (Throwable t) {
            throw new IllegalStateException("distillery_squared_gradient failed", t);
        }
    }

    /**
     * distillery_fkl_row on addresses: s, g, t (this row's), next s and next t (bytes to prefetch),
     * eT a scratch row of v floats, out 4 doubles.
     */
    static int forwardKlRow(long s, long g, long t, boolean bf16, int v, float invT, int power, float c1, float cq,
                            long nextS, long nextSBytes, long nextT, long nextTBytes, MemorySegment eT, MemorySegment out) {
        try {
            return (int) ROW.invokeExact(s, g, t, bf16 ? 1 : 0, v, invT, power, c1, cq, nextS, nextSBytes, nextT, nextTBytes,
                    eT.address(), out.address());
        } catch (Throwable e) {
            throw new IllegalStateException("distillery_fkl_row failed", e);
        }
    }
}
