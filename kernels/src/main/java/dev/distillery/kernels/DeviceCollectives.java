package dev.distillery.kernels;

import java.lang.foreign.MemorySegment;

/**
 * Sums over the processes of a data-parallel run of buffers where the kernels keep them, without a
 * trip through host memory: NCCL on CUDA ({@code kernels.cuda.NcclCollectives}). One process makes
 * an id, every process gets it by other means (the runtime broadcasts it over MPI), and each
 * joins with its rank. A backend whose buffers live in host memory has none: MPI sums them there.
 */
public interface DeviceCollectives {

    /** The library and its version, for logs. */
    String describe();

    /** A new id for one group of processes; made by one process (rank 0) and given to all. */
    byte[] newId();

    /** The length of an id. */
    int idBytes();

    /** Joins the group of {@code id} as {@code rank} of {@code size}; every rank calls it together. */
    Sum join(byte[] id, int rank, int size);

    /** One group's sums. */
    interface Sum extends AutoCloseable {

        /**
         * x (n fp32 values where the kernels keep them) ← Σ over the ranks, in place, ordered after
         * the kernels already issued and before those issued next. The library chooses the
         * reduction order: the ranks agree with each other bit for bit, but not with one process
         * adding the same micro-batches.
         */
        void sum(MemorySegment x, long n);

        /** Leaves the group; every rank calls it. */
        @Override
        void close();
    }
}
