package dev.distillery.bindings;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

/**
 * Finds and loads {@code libopenblas.so.0} so that the generated {@code Cblas} bindings can resolve
 * their symbols through {@code SymbolLookup.loaderLookup()}.
 *
 * <p>The choice is set by the system property {@code distillery.openblas} or the environment
 * variable {@code DISTILLERY_OPENBLAS} (the property wins):
 * <ul>
 *   <li>{@code auto} (default): the system's {@code libopenblas.so.0} when there is one (the
 *       distribution tunes it for the machine, and numpy and PyTorch use it: on this project's
 *       2-core AVX-512 machines Debian's 0.3.21 ran our GEMM shapes up to 25% faster than the
 *       0.3.30 build in the jar), else the copy bundled in the {@code org.bytedeco:openblas} jar;</li>
 *   <li>{@code bundled} or {@code system}: only that one;</li>
 *   <li>{@code none}: no BLAS (the kernels fall back to their Vector-API GEMM);</li>
 *   <li>an absolute path to a shared library.</li>
 * </ul>
 * The bundled library is extracted, with the {@code libgfortran} it needs, into
 * {@code <cache>/openblas-<version>-<sha256 prefix>/}; the cache root is the property
 * {@code distillery.cache}, else {@code $XDG_CACHE_HOME/distillery}, else {@code ~/.cache/distillery}.
 *
 * <p>This class never touches {@code Cblas}: callers initialise the bindings only after
 * {@link #probe()} reported {@link Probe#loaded()}.
 */
public final class OpenBlasLibrary {

    /** Resource folder of the bundled libraries inside the openblas jar. */
    private static final String RESOURCE_DIR = "org/bytedeco/openblas/linux-x86_64/";
    /**
     * Loaded in this order, so each one's dependencies are already resident by soname. The jar's
     * libgcc_s is left out on purpose: every glibc system has one, and a second copy in the process
     * would shadow the JVM's own unwinder.
     */
    private static final List<String> BUNDLED_FILES =
            List.of("libquadmath.so.0", "libgfortran.so.5", "libopenblas.so.0");
    private static final String POM_PROPERTIES = "META-INF/maven/org.bytedeco/openblas/pom.properties";

    /**
     * What {@link #probe()} found.
     *
     * @param loaded whether a library is loaded into this class loader
     * @param path   the file that was loaded, or null
     * @param source "bundled", "system", "path" or "none"
     * @param tried  every attempt, with why it failed; for error messages
     */
    public record Probe(boolean loaded, String path, String source, List<String> tried) {
        /** One line for logs and {@code selftest}. */
        public String describe() {
            return loaded ? "OpenBLAS (" + source + ": " + path + ")"
                    : "no BLAS; tried: " + String.join("; ", tried);
        }
    }

    private static Probe probe;

    private OpenBlasLibrary() {
    }

    /** Loads the library once per JVM, as configured; never throws. */
    public static synchronized Probe probe() {
        if (probe == null) {
            probe = load(configuredChoice());
        }
        return probe;
    }

    /** Like {@link #probe()}, but a missing library is an error that lists what was tried. */
    public static Probe require() {
        Probe p = probe();
        if (!p.loaded()) {
            throw new UnsatisfiedLinkError("OpenBLAS could not be loaded; tried: " + String.join("; ", p.tried())
                    + ". Set -Ddistillery.openblas=/path/to/libopenblas.so.0 or DISTILLERY_OPENBLAS to choose one.");
        }
        return p;
    }

    static String configuredChoice() {
        String value = System.getProperty("distillery.openblas");
        if (value == null || value.isBlank()) {
            value = System.getenv("DISTILLERY_OPENBLAS");
        }
        return value == null || value.isBlank() ? "auto" : value.trim();
    }

    static Probe load(String choice) {
        List<String> tried = new ArrayList<>();
        switch (choice) {
            case "none" -> tried.add("disabled by distillery.openblas=none");
            case "bundled" -> {
                String path = tryBundled(tried);
                if (path != null) return new Probe(true, path, "bundled", List.copyOf(tried));
            }
            case "system" -> {
                String path = trySystem(tried);
                if (path != null) return new Probe(true, path, "system", List.copyOf(tried));
            }
            case "auto" -> {
                String path = trySystem(tried);
                if (path != null) return new Probe(true, path, "system", List.copyOf(tried));
                path = tryBundled(tried);
                if (path != null) return new Probe(true, path, "bundled", List.copyOf(tried));
            }
            default -> {
                Path file = Path.of(choice);
                if (!file.isAbsolute()) {
                    tried.add("distillery.openblas='" + choice + "' is neither auto|bundled|system|none nor an absolute path");
                } else if (tryLoad(file, tried)) {
                    return new Probe(true, file.toString(), "path", List.copyOf(tried));
                }
            }
        }
        return new Probe(false, null, "none", List.copyOf(tried));
    }

    private static String trySystem(List<String> tried) {
        for (String dir : List.of("/usr/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu/openblas-pthread",
                "/usr/lib64", "/usr/lib", "/usr/local/lib")) {
            Path file = Path.of(dir, "libopenblas.so.0");
            if (Files.exists(file) && tryLoad(file, tried)) {
                return file.toString();
            }
        }
        tried.add("system libopenblas.so.0: not found in the usual library folders");
        return null;
    }

    private static String tryBundled(List<String> tried) {
        ClassLoader loader = OpenBlasLibrary.class.getClassLoader();
        if (loader.getResource(RESOURCE_DIR + "libopenblas.so.0") == null) {
            tried.add("bundled: no " + RESOURCE_DIR + "libopenblas.so.0 on the class path (org.bytedeco:openblas linux-x86_64 jar)");
            return null;
        }
        Path dir;
        try {
            dir = extract(loader);
        } catch (IOException | UncheckedIOException e) {
            tried.add("bundled: extraction failed: " + e.getMessage());
            return null;
        }
        for (String name : BUNDLED_FILES) {
            Path file = dir.resolve(name);
            if (Files.exists(file) && !tryLoad(file, tried)) {
                return null;
            }
        }
        return dir.resolve("libopenblas.so.0").toString();
    }

    private static boolean tryLoad(Path file, List<String> tried) {
        try {
            System.load(file.toAbsolutePath().toString());
            return true;
        } catch (UnsatisfiedLinkError e) {
            tried.add(file + ": " + e.getMessage());
            return false;
        }
    }

    /** Extracts the bundled libraries once into a folder keyed by version and content hash. */
    private static Path extract(ClassLoader loader) throws IOException {
        String hash = NativeResources.sha256(loader, RESOURCE_DIR + "libopenblas.so.0");
        if (hash == null) throw new IOException("resource " + RESOURCE_DIR + "libopenblas.so.0 vanished from the class path");
        Path dir = NativeResources.cacheRoot().resolve("openblas-" + bundledVersion(loader) + "-" + hash.substring(0, 16));
        for (String name : BUNDLED_FILES) {
            if (loader.getResource(RESOURCE_DIR + name) != null) NativeResources.writeOnce(dir.resolve(name), loader, RESOURCE_DIR + name);
        }
        return dir;
    }

    private static String bundledVersion(ClassLoader loader) throws IOException {
        try (InputStream in = loader.getResourceAsStream(POM_PROPERTIES)) {
            if (in == null) return "unknown";
            Properties props = new Properties();
            props.load(in);
            return props.getProperty("version", "unknown");
        }
    }
}
