package dev.distillery.kernels.conformance;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.Kernels;

/**
 * {@link Buffers} in the memory of one {@link Kernels} backend: filled on the host, then placed
 * where the backend's kernels read (copied to the device when its memory is not the host's), and
 * read back through the backend's copies. The suite therefore exercises a backend's whole data
 * path, never a host dereference of device memory.
 */
final class KernelBuffers {

    private final Kernels kernels;
    private final Arena arena;

    KernelBuffers(Kernels kernels, Arena arena) {
        this.kernels = kernels;
        this.arena = arena;
    }

    /** A backend buffer holding a copy of {@code host} (the host segment itself on the CPU). */
    MemorySegment place(MemorySegment host) {
        if (kernels.hostAccessible()) return host;
        MemorySegment d = kernels.allocate(arena, host.byteSize());
        kernels.copyFromHost(d, host, host.byteSize());
        return d;
    }

    MemorySegment floats(double[] x) {
        return place(Buffers.floats(arena, x));
    }

    MemorySegment ints(int[] x) {
        return place(Buffers.ints(arena, x));
    }

    MemorySegment doubles(double[] x) {
        MemorySegment host = arena.allocate(8L * Math.max(1, x.length), 64);
        MemorySegment.copy(x, 0, host, java.lang.foreign.ValueLayout.JAVA_DOUBLE, 0, x.length);
        return place(host);
    }

    MemorySegment poisoned(long n) {
        return place(Buffers.poisoned(arena, n));
    }

    /** The first n floats of the backend buffer {@code actual}, widened. */
    double[] read(MemorySegment actual, int n) {
        MemorySegment host = kernels.hostView(actual, 4L * n, arena);
        double[] x = new double[n];
        for (int i = 0; i < n; i++) x[i] = host.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i);
        return x;
    }

    /** {@link Buffers#relativeError} of the backend buffer {@code actual}. */
    double relativeError(double[] expected, MemorySegment actual, double floor) {
        return Buffers.relativeError(expected, kernels.hostView(actual, 4L * expected.length, arena), floor);
    }
}
