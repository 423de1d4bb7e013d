package dev.distillery.bindings;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * Native libraries shipped inside a jar are loaded from a cache folder: {@code distillery.cache},
 * else {@code $XDG_CACHE_HOME/distillery}, else {@code ~/.cache/distillery}, in a subfolder keyed
 * by content hash, written once (a private name, then a rename: concurrent JVMs never see half a
 * file).
 */
public final class NativeResources {

    private NativeResources() {
    }

    /** The cache root for extracted native libraries. */
    public static Path cacheRoot() {
        String explicit = System.getProperty("distillery.cache");
        if (explicit != null && !explicit.isBlank()) return Path.of(explicit);
        String xdg = System.getenv("XDG_CACHE_HOME");
        if (xdg != null && !xdg.isBlank()) return Path.of(xdg, "distillery");
        return Path.of(System.getProperty("user.home"), ".cache", "distillery");
    }

    /**
     * Extracts the resource {@code resource} of {@code loader} as {@code <cache>/<prefix>-<sha256
     * prefix>/<file name>} unless it is there already, and returns that path; null when the
     * resource is not on the class path.
     */
    public static Path extract(ClassLoader loader, String resource, String prefix) throws IOException {
        String hash = sha256(loader, resource);
        if (hash == null) return null;
        Path target = cacheRoot().resolve(prefix + "-" + hash.substring(0, 16)).resolve(resource.substring(resource.lastIndexOf('/') + 1));
        writeOnce(target, loader, resource);
        return target;
    }

    /**
     * Copies the resource {@code resource} of {@code loader} to {@code target} unless it exists: a
     * private name, then a rename. Streamed, like {@link #sha256}.
     */
    public static void writeOnce(Path target, ClassLoader loader, String resource) throws IOException {
        if (Files.exists(target)) return;
        Files.createDirectories(target.getParent());
        Path tmp = Files.createTempFile(target.getParent(), target.getFileName().toString(), ".part");
        try {
            try (InputStream in = loader.getResourceAsStream(resource)) {
                if (in == null) throw new IOException("resource " + resource + " vanished from the class path");
                Files.copy(in, tmp, StandardCopyOption.REPLACE_EXISTING);
            }
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            if (!Files.exists(target)) throw e;
        }
    }

    /**
     * The lower-case hex SHA-256 of a resource, or null when it is not on the class path. Read in
     * pieces, never whole: a whole read of the bundled OpenBLAS (tens of MB) lands in the old
     * generation, with the pieces young collections promote while it grows, and stays resident for
     * the life of the process (docs/PERFORMANCE.md, peak memory).
     */
    public static String sha256(ClassLoader loader, String resource) throws IOException {
        try (InputStream in = loader.getResourceAsStream(resource)) {
            if (in == null) return null;
            MessageDigest digest;
            try {
                digest = MessageDigest.getInstance("SHA-256");
            } catch (NoSuchAlgorithmException e) {
                throw new IllegalStateException("SHA-256 is missing from this JDK", e);
            }
            byte[] piece = new byte[1 << 16];
            for (int n; (n = in.read(piece)) > 0; ) digest.update(piece, 0, n);
            return HexFormat.of().formatHex(digest.digest());
        }
    }

}
