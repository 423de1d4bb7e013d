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
 * Loads a shared library by soname, the way the dynamic linker would (ld.so.cache,
 * LD_LIBRARY_PATH), then {@code System.load}s the path it mapped, so that bindings generated with
 * {@code SymbolLookup.loaderLookup()} see its symbols. Never throws: a probe says what it tried.
 * The CUDA driver, cuBLAS, NCCL and MPI are found this way.
 */
public final class SharedLibraries {

    /** What a probe found: the loaded library's path, or why not. */
    public record Probe(boolean loaded, String soname, String path, List<String> tried) {
        public String describe() {
            return loaded ? soname + " (" + path + ")" : "not found (tried " + String.join(", ", tried) + ")";
        }
    }

    private SharedLibraries() {
    }

    /** The first of {@code sonames} that loads. */
    public static Probe load(List<String> sonames) {
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

    /**
     * The absolute path the dynamic linker mapped for {@code soname}. The mapped file is the
     * soname's target, whose name may carry another version: NVIDIA's driver maps
     * {@code libcuda.so.1} as {@code libcuda.so.580.159.04}. So a file named by the soname itself
     * (or a longer version of it) wins, else one of the same library stem ({@code libcuda.so.*}).
     */
    static Optional<String> mappedPath(String soname) {
        try {
            return mappedPath(soname, Files.readAllLines(Path.of("/proc/self/maps")));
        } catch (IOException | RuntimeException e) {
            return Optional.empty();
        }
    }

    /** {@link #mappedPath(String)} over the lines of a {@code /proc/<pid>/maps}. */
    static Optional<String> mappedPath(String soname, List<String> maps) {
        int so = soname.indexOf(".so");
        String stem = so < 0 ? soname : soname.substring(0, so + 3);
        String sameStem = null;
        for (String line : maps) {
            int slash = line.indexOf('/');
            if (slash < 0) continue;
            String file = line.substring(slash).trim();
            String name = Path.of(file).getFileName().toString();
            if (name.equals(soname) || name.startsWith(soname + ".")) return Optional.of(file);
            if (sameStem == null && (name.equals(stem) || name.startsWith(stem + "."))) sameStem = file;
        }
        return Optional.ofNullable(sameStem);
    }
}
