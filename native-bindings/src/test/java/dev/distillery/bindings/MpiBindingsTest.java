package dev.distillery.bindings;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.util.List;

import org.junit.jupiter.api.Test;

import dev.distillery.bindings.mpi.Mpi;

/**
 * The MPI bindings: every function of mpi.args resolves in Open MPI's libmpi, the predefined
 * handles (addresses of library globals) are found, and a status becomes an exception that names
 * the call and MPI's own words. Skipped, saying why, where libmpi is absent.
 */
class MpiBindingsTest {

    @Test
    void everyBoundMpiSymbolAndHandleResolves() throws IOException {
        SharedLibraries.Probe p = MpiLibrary.load();
        assumeTrue(p.loaded(), "skipped: no Open MPI on this machine: " + p.describe());
        List<String> names = CudaBindingsTest.boundFunctions("mpi.args");
        assertTrue(names.containsAll(List.of("MPI_Init", "MPI_Allgather", "MPI_Barrier", "MPI_Abort", "MPI_Finalize")), names.toString());
        for (String name : names) assertTrue(SymbolLookup.loaderLookup().find(name).isPresent(), name + " is not exported by " + p.path());
        MpiLibrary.Handles h = MpiLibrary.handles();
        for (MemorySegment handle : List.of(h.commWorld(), h.floatType(), h.doubleType(), h.byteType(), h.intType(), h.sum(), h.errorsReturn())) {
            assertNotEquals(MemorySegment.NULL, handle);
        }
    }

    @Test
    void aFailedCallNamesItselfAndMpisDescription() {
        SharedLibraries.Probe p = MpiLibrary.load();
        assumeTrue(p.loaded(), "skipped: no Open MPI on this machine: " + p.describe());
        MpiLibrary.check(Mpi.MPI_SUCCESS(), "MPI_Barrier");   // success is silent
        MpiException e = org.junit.jupiter.api.Assertions.assertThrows(MpiException.class, () -> MpiLibrary.check(5, "MPI_Allgather(8 floats)"));
        assertEquals(5, e.status());
        // before MPI_Init (this test's process never calls it) the status alone: Open MPI aborts on MPI_Error_string then
        assertEquals("MPI_Allgather(8 floats) failed: no description before MPI_Init (MPI error 5)", e.getMessage());
    }
}
