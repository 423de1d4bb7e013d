package dev.distillery.bindings;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import java.util.Optional;

import org.junit.jupiter.api.Test;

class SharedLibrariesTest {

    private static final List<String> MAPS = List.of(
            "7f0000000000-7f0000001000 r--p 00000000 00:1f 12  /usr/local/nvidia/lib64/libcuda.so.580.159.04",
            "7f0000100000-7f0000101000 r--p 00000000 00:1f 13  /usr/local/cuda/lib64/libcublasLt.so.13.0.0.19",
            "7f0000200000-7f0000201000 r--p 00000000 00:1f 14  /usr/local/cuda/lib64/libcublas.so.13.0.0.19",
            "7f0000300000-7f0000301000 r--p 00000000 00:1f 15  /usr/lib/x86_64-linux-gnu/libnccl.so.2",
            "7f0000400000-7f0000401000 rw-p 00000000 00:00 0   [heap]");

    @Test
    void theDriverIsFoundUnderItsVersionedFileName() {
        assertEquals(Optional.of("/usr/local/nvidia/lib64/libcuda.so.580.159.04"), SharedLibraries.mappedPath("libcuda.so.1", MAPS));
    }

    @Test
    void aLongerVersionOfTheSonameIsFoundAndANeighbourIsNot() {
        assertEquals(Optional.of("/usr/local/cuda/lib64/libcublas.so.13.0.0.19"), SharedLibraries.mappedPath("libcublas.so.13", MAPS));
        assertEquals(Optional.of("/usr/lib/x86_64-linux-gnu/libnccl.so.2"), SharedLibraries.mappedPath("libnccl.so.2", MAPS));
        assertEquals(Optional.empty(), SharedLibraries.mappedPath("libmpi.so.40", MAPS));
    }
}
