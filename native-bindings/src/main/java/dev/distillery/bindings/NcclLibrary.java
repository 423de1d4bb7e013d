package dev.distillery.bindings;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;

import dev.distillery.bindings.nccl.Nccl;

/**
 * NCCL ({@code libnccl.so.2}), found by soname ({@link SharedLibraries}) for GPU ranks: the
 * gradient allreduce between the devices of a data-parallel run, its unique id broadcast over MPI
 * (docs/SCALING.md). Every {@code ncclResult_t} goes through {@link #check}, which names the call
 * and NCCL's description. Nothing here throws on a machine without NCCL: a probe says what it tried.
 */
public final class NcclLibrary {

    public static final List<String> SONAMES = List.of("libnccl.so.2");

    private static SharedLibraries.Probe probe;

    private NcclLibrary() {
    }

    /** Loads libnccl once; later calls return the first answer. */
    public static synchronized SharedLibraries.Probe load() {
        if (probe == null) probe = SharedLibraries.load(SONAMES);
        return probe;
    }

    /** NCCL's version as major.minor.patch; only after {@link #load()} succeeded. */
    public static String version() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ValueLayout.JAVA_INT);
            check(Nccl.ncclGetVersion(v), "ncclGetVersion");
            int code = v.get(ValueLayout.JAVA_INT, 0);   // major * 10000 + minor * 100 + patch since 2.9
            return code / 10000 + "." + code / 100 % 100 + "." + code % 100;
        }
    }

    /** @param call the call and the arguments that matter, e.g. {@code "ncclAllReduce(1048576 floats)"} */
    public static void check(int result, String call) {
        if (result == Nccl.ncclSuccess()) return;
        MemorySegment text = Nccl.ncclGetErrorString(result);
        String description = text.equals(MemorySegment.NULL) ? "ncclResult_t " + result : text.reinterpret(4096).getString(0);
        throw new NcclException(call, result, description);
    }
}
