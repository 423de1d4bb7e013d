package dev.distillery.bindings;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;

/**
 * The CUDA driver and cuBLAS bindings: every function named in the jextract argfiles resolves in
 * the loaded library (skipped, saying why, where the library is absent), and a machine without
 * CUDA gets a probe answer, never an exception.
 */
class CudaBindingsTest {

    /** The --include-function names of an argfile in native-bindings/jextract/. */
    static List<String> boundFunctions(String argfile) throws IOException {
        List<String> lines = Files.readAllLines(Path.of("jextract", argfile));
        List<String> names = new ArrayList<>();
        for (int i = 0; i + 1 < lines.size(); i++) if (lines.get(i).equals("--include-function")) names.add(lines.get(i + 1));
        return names;
    }

    @Test
    void argfilesBindTheExportedNames() throws IOException {
        List<String> driver = boundFunctions("cuda.args"), cublas = boundFunctions("cublas.args");
        assertTrue(driver.contains("cuMemAlloc_v2") && driver.contains("cuLaunchKernel") && driver.contains("cuModuleLoadData"), driver.toString());
        assertFalse(driver.contains("cuMemAlloc"), "cuda.h renames cuMemAlloc to cuMemAlloc_v2: bind the exported name");
        assertTrue(cublas.contains("cublasCreate_v2") && cublas.contains("cublasSgemm_v2") && cublas.contains("cublasGemmEx"), cublas.toString());
    }

    @Test
    void everyBoundDriverSymbolResolves() throws IOException {
        SharedLibraries.Probe p = CudaLibraries.driver();
        assumeTrue(p.loaded(), "skipped: no CUDA driver on this machine: libcuda.so.1 " + p.describe());
        for (String name : boundFunctions("cuda.args")) {
            assertTrue(SymbolLookup.loaderLookup().find(name).isPresent(), name + " is not exported by " + p.path());
        }
    }

    @Test
    void everyBoundCublasSymbolResolves() throws IOException {
        SharedLibraries.Probe p = CudaLibraries.cublas();
        assumeTrue(p.loaded(), "skipped: no cuBLAS on this machine: " + p.describe());
        for (String name : boundFunctions("cublas.args")) {
            assertTrue(SymbolLookup.loaderLookup().find(name).isPresent(), name + " is not exported by " + p.path());
        }
    }

    /** The loading path itself (dlopen by soname, the mapped path, System.load, the loader lookup), on a library every Linux has. */
    @Test
    void loadingBySonameMakesSymbolsVisibleToTheGeneratedLookup() {
        SharedLibraries.Probe p = SharedLibraries.load(List.of("libdistillery-absent.so.9", "libz.so.1"));
        assertTrue(p.loaded(), p.describe());
        assertEquals("libz.so.1", p.soname());
        assertTrue(p.path().startsWith("/"), p.path());
        assertEquals(List.of("libdistillery-absent.so.9 (not loadable)"), p.tried());
        assertTrue(SymbolLookup.loaderLookup().find("zlibVersion").isPresent());
        SharedLibraries.Probe none = SharedLibraries.load(List.of("libdistillery-absent.so.9"));
        assertFalse(none.loaded());
        assertTrue(none.describe().contains("libdistillery-absent.so.9"), none.describe());
    }

    @Test
    void probeNeverThrowsAndSaysWhy() {
        CudaDevices.Probe p = CudaDevices.probe();
        if (!p.available()) {
            assertTrue(p.reason() != null && !p.reason().isBlank());
            assertEquals(List.of(), p.devices());
        } else {
            assertTrue(p.devices().getFirst().major() >= 5, p.devices().toString());
        }
    }
}
