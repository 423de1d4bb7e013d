package dev.distillery.bindings;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.api.Test;

import dev.distillery.bindings.cblas.Cblas;

class OpenBlasLibraryTest {

    @Test
    void bundledLibraryLoadsAndEveryBoundSymbolResolves() {
        OpenBlasLibrary.Probe probe = OpenBlasLibrary.require();
        assertTrue(probe.loaded(), probe.describe());
        assertEquals("bundled", probe.source(), "surefire sets distillery.openblas=bundled for this module");
        assertTrue(probe.path().contains("openblas-0.3.30"), "cache folder keyed by version: " + probe.path());
        // Touch every generated binding: each call resolves its symbol and runs it.
        Cblas.openblas_set_num_threads(1);
        assertEquals(1, Cblas.openblas_get_num_threads());
        assertTrue(Cblas.openblas_get_config().reinterpret(256).getString(0).contains("OpenBLAS"));
        assertTrue(!Cblas.openblas_get_corename().reinterpret(64).getString(0).isEmpty());
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment x = arena.allocateFrom(ValueLayout.JAVA_FLOAT, 1, 2, 3);
            MemorySegment y = arena.allocateFrom(ValueLayout.JAVA_FLOAT, 4, 5, 6);
            assertEquals(32f, Cblas.cblas_sdot(3, x, 1, y, 1));
            Cblas.cblas_saxpy(3, 2f, x, 1, y, 1); // y = (6, 9, 12)
            assertEquals(9f, y.getAtIndex(ValueLayout.JAVA_FLOAT, 1));
            MemorySegment a = arena.allocateFrom(ValueLayout.JAVA_FLOAT, 1, 2, 3, 4); // [[1,2],[3,4]]
            MemorySegment v = arena.allocateFrom(ValueLayout.JAVA_FLOAT, 1, 1);
            MemorySegment out = arena.allocate(8);
            Cblas.cblas_sgemv(Cblas.CblasRowMajor(), Cblas.CblasNoTrans(), 2, 2, 1f, a, 2, v, 1, 0f, out, 1);
            assertEquals(7f, out.getAtIndex(ValueLayout.JAVA_FLOAT, 1));
            MemorySegment c = arena.allocate(16);
            Cblas.cblas_sgemm(Cblas.CblasColMajor(), Cblas.CblasTrans(), Cblas.CblasNoTrans(), 2, 2, 2, 1f, a, 2, a, 2, 0f, c, 2);
            // column-major Aᵀ A with A (col-major) = [[1,3],[2,4]]: (Aᵀ A)[0][0] = 1 + 4
            assertEquals(5f, c.getAtIndex(ValueLayout.JAVA_FLOAT, 0));
            assertTrue(Cblas.cblas_sgemm_batch$address().address() != 0);
        }
    }

    @Test
    void anUnloadablePathIsReportedWithWhatWasTried() {
        OpenBlasLibrary.Probe missing = OpenBlasLibrary.load("/nonexistent/libopenblas.so.0");
        assertTrue(!missing.loaded());
        assertTrue(missing.describe().contains("/nonexistent/libopenblas.so.0"), missing.describe());
        OpenBlasLibrary.Probe relative = OpenBlasLibrary.load("openblas");
        assertTrue(!relative.loaded() && relative.describe().contains("neither auto|bundled|system|none"), relative.describe());
        OpenBlasLibrary.Probe none = OpenBlasLibrary.load("none");
        assertTrue(!none.loaded() && none.describe().contains("distillery.openblas=none"), none.describe());
    }

    @Test
    void configuredChoiceDefaultsToAuto() {
        String saved = System.getProperty("distillery.openblas");
        try {
            System.clearProperty("distillery.openblas");
            if (System.getenv("DISTILLERY_OPENBLAS") == null) assertEquals("auto", OpenBlasLibrary.configuredChoice());
            System.setProperty("distillery.openblas", " none ");
            assertEquals("none", OpenBlasLibrary.configuredChoice());
        } finally {
            if (saved == null) System.clearProperty("distillery.openblas");
            else System.setProperty("distillery.openblas", saved);
        }
    }
}
