package dev.distillery.runtime.distill;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.TeacherLayout;
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
    private final List<Buffer> buffers = new ArrayList<>();
    private final Map<Integer, Buffer> stateBuffers = new HashMap<>();

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
        TeacherLayout layout = host.layout();
        List<MemorySegment> from = host.buffers(), staged = new ArrayList<>(from.size());
        for (int i = 0; i < from.size(); i++) {
            if (buffers.size() == i) buffers.add(new Buffer());
            staged.add(buffers.get(i).upload(from.get(i), rows * layout.bytesPerRow(i)));
        }
        return layout.over(staged);
    }

    /** The teacher's hidden states {@code layers} ({@code rows} × {@code width} each) where the kernels read; as {@link #stage}. */
    public FeatureDistillation.TeacherStates stage(FeatureDistillation.TeacherStates host, int[] layers, int rows, int width) {
        if (kernels.hostAccessible()) return host;
        Map<Integer, MemorySegment> staged = new HashMap<>();
        long bytes = (long) rows * width * host.type().bytes();
        for (int l : layers) staged.put(l, stateBuffers.computeIfAbsent(l, k -> new Buffer()).upload(host.layer(l), bytes));
        return FeatureDistillation.TeacherStates.of(staged, host.type());
    }

    @Override
    public void close() {
        for (Buffer b : buffers) b.close();
        for (Buffer b : stateBuffers.values()) b.close();
    }
}
