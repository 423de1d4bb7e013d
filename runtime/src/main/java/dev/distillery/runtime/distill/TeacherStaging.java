package dev.distillery.runtime.distill;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * Teacher targets moved to where the kernels compute.
 *
 * <p>On the CPU, {@link #stage} returns its argument: the kernels read the batch's host memory
 * (a prefetch slot or a mapped shard) directly. On a device, each of the targets' buffers is
 * copied with {@link Kernels#copyFromHostAsync} into a persistent device buffer, so the copy
 * overlaps whatever the caller issues next (the student's forward pass); the caller then calls
 * {@link Kernels#joinCopies()} before the loss reads the targets. The device buffers grow to the
 * largest batch seen and are then reused: a steady loop allocates nothing. Reuse is safe because
 * the loss's per-row sums come back to the host through a copy that waits for the compute
 * stream, so no kernel still reads a buffer when the next {@link #stage} overwrites it.
 */
public final class TeacherStaging implements AutoCloseable {

    private final Kernels kernels;
    private final Buffer[] buffers = {new Buffer(), new Buffer(), new Buffer()};

    public TeacherStaging(Kernels kernels) {
        this.kernels = kernels;
    }

    /** One device buffer, replaced by a larger one when a batch needs more. */
    private final class Buffer {
        private Arena arena;
        private MemorySegment device;

        MemorySegment upload(MemorySegment host, long bytes) {
            if (device == null || device.byteSize() < bytes) {
                if (arena != null) arena.close();
                arena = Arena.ofShared();
                device = kernels.allocate(arena, Math.max(1, bytes));
            }
            kernels.copyFromHostAsync(device, host, bytes);
            return device;
        }

        void close() {
            if (arena != null) arena.close();
            arena = null;
            device = null;
        }
    }

    /** {@code host}'s first {@code rows} rows where the kernels read; on a device, valid until the next call. */
    public TeacherTargets stage(TeacherTargets host, int rows) {
        if (kernels.hostAccessible()) return host;
        return switch (host) {
            case TeacherTargets.Dense d -> new TeacherTargets.Dense(
                    buffers[0].upload(d.logits(), (long) rows * d.vocab() * d.type().bytes()), d.type(), d.vocab());
            case TeacherTargets.TopK k -> new TeacherTargets.TopK(
                    buffers[0].upload(k.ids(), 4L * rows * k.k()),
                    buffers[1].upload(k.logits(), (long) rows * k.k() * k.type().bytes()), k.type(),
                    buffers[2].upload(k.logsumexp(), 4L * rows), k.k(), k.vocab(), k.shardTemperature());
            case TeacherTargets.Sampled s -> new TeacherTargets.Sampled(
                    buffers[0].upload(s.ids(), 4L * rows * s.samples()),
                    buffers[1].upload(s.weights(), 4L * rows * s.samples()), s.samples(), s.vocab(), s.shardTemperature());
        };
    }

    @Override
    public void close() {
        for (Buffer b : buffers) b.close();
    }
}
