package dev.distillery.bindings;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.lang.foreign.SymbolLookup;
import java.util.List;

import org.junit.jupiter.api.Test;

import dev.distillery.bindings.nccl.Nccl;

/**
 * The NCCL bindings: the argfile binds what a GPU collective needs, the unique id has NCCL's size,
 * and, where libnccl loads (a GPU machine with NCCL installed), every bound function resolves and
 * the version reads; elsewhere the probe says what it tried, and the rest is skipped with that.
 */
class NcclBindingsTest {

    @Test
    void theArgfileBindsAGpuCollective() throws IOException {
        List<String> names = CudaBindingsTest.boundFunctions("nccl.args");
        assertTrue(names.containsAll(List.of("ncclGetUniqueId", "ncclCommInitRank", "ncclAllReduce", "ncclBroadcast", "ncclGroupStart",
                "ncclGroupEnd", "ncclGetErrorString", "ncclCommDestroy")), names.toString());
        assertTrue(Nccl.NCCL_UNIQUE_ID_BYTES() == 128 && dev.distillery.bindings.nccl.ncclUniqueId.layout().byteSize() == 128);
    }

    @Test
    void everyBoundNcclSymbolResolvesWhereTheLibraryLoads() throws IOException {
        SharedLibraries.Probe p = NcclLibrary.load();
        assumeTrue(p.loaded(), "skipped: no NCCL on this machine: " + p.describe());
        for (String name : CudaBindingsTest.boundFunctions("nccl.args")) {
            assertTrue(SymbolLookup.loaderLookup().find(name).isPresent(), name + " is not exported by " + p.path());
        }
        assertFalse(NcclLibrary.version().isBlank());
    }
}
