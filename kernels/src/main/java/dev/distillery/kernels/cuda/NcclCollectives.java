package dev.distillery.kernels.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.bindings.NcclLibrary;
import dev.distillery.bindings.nccl.Nccl;
import dev.distillery.bindings.nccl.ncclUniqueId;
import dev.distillery.kernels.DeviceCollectives;

/**
 * NCCL on one {@link CudaDevice}: a communicator per group of ranks ({@code ncclCommInitRank},
 * from a {@code ncclUniqueId} that rank 0 makes and the runtime broadcasts over MPI, as llm.c
 * does), and the gradient sum as {@code ncclAllReduce} in place on the device's compute stream, so
 * it is ordered after the backward's kernels and before the optimizer's with no host wait. Every
 * {@code ncclResult_t} becomes an {@code NcclException} naming the call (NcclLibrary.check).
 */
final class NcclCollectives implements DeviceCollectives {

    private final CudaDevice gpu;

    private NcclCollectives(CudaDevice gpu) {
        this.gpu = gpu;
    }

    /** NCCL for this device when libnccl loads, else null. */
    static NcclCollectives on(CudaDevice gpu) {
        return NcclLibrary.load().loaded() ? new NcclCollectives(gpu) : null;
    }

    @Override
    public String describe() {
        return "NCCL " + NcclLibrary.version() + " (" + NcclLibrary.load().path() + ")";
    }

    @Override
    public byte[] newId() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment id = a.allocate(ncclUniqueId.layout());
            NcclLibrary.check(Nccl.ncclGetUniqueId(id), "ncclGetUniqueId");
            return id.toArray(ValueLayout.JAVA_BYTE);
        }
    }

    @Override
    public int idBytes() {
        return (int) ncclUniqueId.layout().byteSize();
    }

    @Override
    public Sum join(byte[] id, int rank, int size) {
        if (id.length != idBytes()) {
            throw new IllegalArgumentException("an NCCL id has " + idBytes() + " bytes, got " + id.length);
        }
        gpu.bind();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment comm = a.allocate(ValueLayout.ADDRESS), uid = a.allocate(ncclUniqueId.layout());
            MemorySegment.copy(id, 0, uid, ValueLayout.JAVA_BYTE, 0, id.length);
            NcclLibrary.check(Nccl.ncclCommInitRank(comm, size, uid, rank), "ncclCommInitRank(rank " + rank + " of " + size + ", " + gpu.describe() + ")");
            return new Communicator(comm.get(ValueLayout.ADDRESS, 0), rank, size);
        }
    }

    /** One communicator and its sums. */
    private final class Communicator implements Sum {
        private final MemorySegment comm;
        private final int rank, size;
        private boolean closed;

        Communicator(MemorySegment comm, int rank, int size) {
            this.comm = comm;
            this.rank = rank;
            this.size = size;
        }

        @Override
        public void sum(MemorySegment x, long n) {
            if (n == 0) return;
            gpu.bind();
            NcclLibrary.check(Nccl.ncclAllReduce(x, x, n, Nccl.ncclFloat32(), Nccl.ncclSum(), comm, gpu.computeStream()),
                    "ncclAllReduce(" + n + " floats, rank " + rank + " of " + size + ")");
        }

        @Override
        public void close() {
            if (closed) return;
            closed = true;
            gpu.bind();
            gpu.synchronize();
            NcclLibrary.check(Nccl.ncclCommDestroy(comm), "ncclCommDestroy(rank " + rank + " of " + size + ")");
        }
    }
}
