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
        byte[] bytes = readOrNull(loader, resource);
        if (bytes == null) return null;
        Path dir = cacheRoot().resolve(prefix + "-" + sha256(bytes).substring(0, 16));
        Path target = dir.resolve(resource.substring(resource.lastIndexOf('/') + 1));
        writeOnce(target, bytes);
        return target;
    }

    /** Writes {@code bytes} to {@code target} unless it exists: a private name, then a rename. */
    public static void writeOnce(Path target, byte[] bytes) throws IOException {
        if (Files.exists(target)) return;
        Files.createDirectories(target.getParent());
        Path tmp = Files.createTempFile(target.getParent(), target.getFileName().toString(), ".part");
        Files.write(tmp, bytes);
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            Files.deleteIfExists(tmp);
            if (!Files.exists(target)) throw e;
        }
    }

    /** A resource's bytes, or null when it is not on the class path. */
    public static byte[] readOrNull(ClassLoader loader, String name) throws IOException {
        try (InputStream in = loader.getResourceAsStream(name)) {
            return in == null ? null : in.readAllBytes();
        }
    }

    /** Lower-case hex SHA-256. */
    public static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JDK", e);
        }
    }
}
