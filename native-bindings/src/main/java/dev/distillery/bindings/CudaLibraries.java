package dev.distillery.bindings;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * Finds and loads the CUDA driver ({@code libcuda.so.1}) and cuBLAS ({@code libcublas.so.13},
 * else {@code .12}) by soname, the way the dynamic linker would (ld.so.cache, LD_LIBRARY_PATH).
 * The generated bindings ({@code bindings.cuda.CudaDriver}, {@code bindings.cublas.Cublas})
 * resolve their symbols through the class loader's lookup, so a library found here is also
 * {@code System.load}ed by its resolved path. Nothing here throws on a machine without CUDA: a
 * probe says what it tried, and the binding classes are never touched unless it succeeded.
 */
public final class CudaLibraries {

    /** What a probe found: the loaded library's path, or why not. */
    public record Probe(boolean loaded, String soname, String path, List<String> tried) {
        public String describe() {
            return loaded ? soname + " (" + path + ")" : "not found (tried " + String.join(", ", tried) + ")";
        }
    }

    public static final List<String> DRIVER_SONAMES = List.of("libcuda.so.1");
    public static final List<String> CUBLAS_SONAMES = List.of("libcublas.so.13", "libcublas.so.12");

    private static Probe driver;
    private static Probe cublas;

    private CudaLibraries() {
    }

    /** Loads the driver once; later calls return the first answer. */
    public static synchronized Probe driver() {
        if (driver == null) driver = load(DRIVER_SONAMES);
        return driver;
    }

    /** Loads cuBLAS once (.13 first, then .12). */
    public static synchronized Probe cublas() {
        if (cublas == null) cublas = load(CUBLAS_SONAMES);
        return cublas;
    }

    static Probe load(List<String> sonames) {
        List<String> tried = new ArrayList<>();
        for (String soname : sonames) {
            try {
                // dlopen by soname: the system's search order, no guessing of folders.
                SymbolLookup.libraryLookup(soname, Arena.global());
            } catch (IllegalArgumentException | UnsatisfiedLinkError e) {
                tried.add(soname + " (not loadable)");
                continue;
            }
            Optional<String> path = mappedPath(soname);
            if (path.isEmpty()) {
                tried.add(soname + " (loaded, but not found in /proc/self/maps)");
                continue;
            }
            try {
                System.load(path.get());
            } catch (UnsatisfiedLinkError e) {
                tried.add(path.get() + " (" + e.getMessage() + ")");
                continue;
            }
            return new Probe(true, soname, path.get(), List.copyOf(tried));
        }
        return new Probe(false, null, null, List.copyOf(tried));
    }

    /** The absolute path the dynamic linker mapped for {@code soname} (its realpath's file name may differ). */
    private static Optional<String> mappedPath(String soname) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/maps"))) {
                int slash = line.indexOf('/');
                if (slash < 0) continue;
                String file = line.substring(slash).trim();
                String name = Path.of(file).getFileName().toString();
                if (name.equals(soname) || name.startsWith(soname + ".")) return Optional.of(file);
            }
        } catch (IOException | RuntimeException e) {
            return Optional.empty();
        }
        return Optional.empty();
    }
}
