package dev.distillery.bindings;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.util.List;

import dev.distillery.bindings.mpi.Mpi;

/**
 * Open MPI's {@code libmpi.so.40}, found by soname ({@link SharedLibraries}), and the predefined
 * handles its {@code mpi.h} defines as addresses of library globals ({@code MPI_COMM_WORLD} is
 * {@code &ompi_mpi_comm_world}), which jextract cannot express and are looked up here by symbol.
 * MPICH and its derivatives define handles as integers and are not bound. Every call's status
 * goes through {@link #check}, which names the call and MPI's own description of the error.
 */
public final class MpiLibrary {

    public static final List<String> SONAMES = List.of("libmpi.so.40");

    private static SharedLibraries.Probe probe;

    /** The handles a collective needs, as the pointers mpi.h's macros denote. */
    public record Handles(MemorySegment commWorld, MemorySegment floatType, MemorySegment doubleType, MemorySegment byteType,
                          MemorySegment intType, MemorySegment sum, MemorySegment errorsReturn) {
    }

    private MpiLibrary() {
    }

    /** Loads libmpi once; later calls return the first answer. */
    public static synchronized SharedLibraries.Probe load() {
        if (probe == null) probe = SharedLibraries.load(SONAMES);
        return probe;
    }

    /** The predefined handles; only after {@link #load()} succeeded. */
    public static Handles handles() {
        SymbolLookup lookup = SymbolLookup.loaderLookup();
        return new Handles(symbol(lookup, "ompi_mpi_comm_world"), symbol(lookup, "ompi_mpi_float"), symbol(lookup, "ompi_mpi_double"),
                symbol(lookup, "ompi_mpi_byte"), symbol(lookup, "ompi_mpi_int"), symbol(lookup, "ompi_mpi_op_sum"),
                symbol(lookup, "ompi_mpi_errors_return"));
    }

    private static MemorySegment symbol(SymbolLookup lookup, String name) {
        return lookup.find(name).orElseThrow(() -> new MpiException(name, -1,
                "the loaded libmpi has no symbol '" + name + "': not Open MPI (" + probe.describe() + ")"));
    }

    /** @param call the call and the arguments that matter, e.g. {@code "MPI_Allgather(4096 floats)"} */
    public static void check(int status, String call) {
        if (status == Mpi.MPI_SUCCESS()) return;
        throw new MpiException(call, status, errorString(status));
    }

    private static String errorString(int status) {
        try (Arena a = Arena.ofConfined()) {
            // Open MPI aborts the process on most calls made before MPI_Init; MPI_Initialized is allowed at any time
            MemorySegment flag = a.allocate(ValueLayout.JAVA_INT);
            if (Mpi.MPI_Initialized(flag) != Mpi.MPI_SUCCESS() || flag.get(ValueLayout.JAVA_INT, 0) == 0) return "no description before MPI_Init";
            MemorySegment text = a.allocate(Mpi.MPI_MAX_ERROR_STRING() + 1L), len = a.allocate(ValueLayout.JAVA_INT);
            if (Mpi.MPI_Error_string(status, text, len) != Mpi.MPI_SUCCESS()) return "MPI error " + status;
            return text.getString(0);
        }
    }
}
