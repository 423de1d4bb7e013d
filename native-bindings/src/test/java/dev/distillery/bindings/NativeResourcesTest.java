package dev.distillery.bindings;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.InputStream;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.security.MessageDigest;
import java.util.HexFormat;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class NativeResourcesTest {

    private static final String OPENBLAS = "org/bytedeco/openblas/linux-x86_64/libopenblas.so.0";

    @Test
    void extractWritesTheResourceOnceUnderItsContentHash(@TempDir Path cache) throws Exception {
        ClassLoader loader = NativeResourcesTest.class.getClassLoader();
        String resource = "org/bytedeco/openblas/linux-x86_64/libquadmath.so.0";
        byte[] bytes;
        try (InputStream in = loader.getResourceAsStream(resource)) {
            assertNotNull(in, "the bundled OpenBLAS jar is on the test class path");
            bytes = in.readAllBytes();
        }
        String hex = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        assertEquals(hex, NativeResources.sha256(loader, resource));

        String before = System.getProperty("distillery.cache");
        System.setProperty("distillery.cache", cache.toString());
        try {
            Path file = NativeResources.extract(loader, resource, "test");
            assertEquals(cache.resolve("test-" + hex.substring(0, 16)).resolve("libquadmath.so.0"), file);
            assertArrayEquals(bytes, Files.readAllBytes(file));
            FileTime written = FileTime.fromMillis(1_000_000L);
            Files.setLastModifiedTime(file, written);
            assertEquals(file, NativeResources.extract(loader, resource, "test"));
            assertEquals(written, Files.getLastModifiedTime(file), "a second extraction leaves the file as it was");
            try (var left = Files.list(file.getParent())) {
                assertEquals(1, left.count(), "no .part file is left behind");
            }
            assertNull(NativeResources.extract(loader, "no/such/resource.so", "test"));
        } finally {
            if (before == null) System.clearProperty("distillery.cache");
            else System.setProperty("distillery.cache", before);
        }
    }

    @Test
    void hashingTheBundledOpenBlasNeverHoldsItWhole() throws Exception {
        ClassLoader loader = NativeResourcesTest.class.getClassLoader();
        var threads = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        long size;
        try (InputStream in = loader.getResourceAsStream(OPENBLAS)) {
            assertNotNull(in, "the bundled OpenBLAS jar is on the test class path");
            size = in.transferTo(java.io.OutputStream.nullOutputStream());
        }
        long before = threads.getCurrentThreadAllocatedBytes();
        assertNotNull(NativeResources.sha256(loader, OPENBLAS));
        long allocated = threads.getCurrentThreadAllocatedBytes() - before;
        // A whole read allocates at least the file's size (twice over, with the pieces it grows from).
        assertTrue(allocated < size / 8, "hashing " + size + " bytes allocated " + allocated + " bytes on the heap");
    }
}
