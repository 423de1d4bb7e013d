package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Labels;

/**
 * The token and target buffers of one (batch, time) shape: written on the host, checked against
 * the vocabulary, and copied to where the kernels compute. Persistent, so a steady loop allocates
 * no native memory.
 */
public final class ModelInputs implements AutoCloseable {

    private final Kernels kernels;
    private final int batch, time, vocab;
    private final Arena arena = Arena.ofShared();
    private final Tensor tokens, targets;
    /** Tokens then targets, both where the kernels read them and on the host: one copy sets both. */
    private final MemorySegment ids, hostIds, hostTokens, hostTargets;

    ModelInputs(Kernels kernels, int batch, int time, int vocab) {
        this.kernels = kernels;
        this.batch = batch;
        this.time = time;
        this.vocab = vocab;
        Device device = Device.of(kernels);
        long bytes = 4L * batch * time, second = (bytes + 63) / 64 * 64;   // the targets 64-byte aligned, as every buffer is
        this.ids = kernels.allocate(arena, second + bytes);
        this.hostIds = arena.allocate(second + bytes, 64);
        this.tokens = new Tensor("tokens", new int[]{batch, time}, DType.I32, device, ids.asSlice(0, bytes), false);
        this.targets = new Tensor("targets", new int[]{batch * time}, DType.I32, device, ids.asSlice(second, bytes), false);
        this.hostTokens = hostIds.asSlice(0, bytes);
        this.hostTargets = hostIds.asSlice(second, bytes);
        tokens.keepHostCopy(hostTokens);   // the ids are only ever copied up from it
    }

    /** Token ids (batch, time), where the kernels read them. */
    public Tensor tokens() {
        return tokens;
    }

    /** Target ids (batch · time), where the kernels read them; -100 masks a position. */
    public Tensor targets() {
        return targets;
    }

    /** The targets with their host copy, for a loss that counts and checks them without reading them back. */
    public Labels labels() {
        return new Labels(targets, hostTargets);
    }

    /** The target of position i, from the host copy. */
    public int target(long i) {
        return hostTargets.getAtIndex(ValueLayout.JAVA_INT, i);
    }

    /**
     * Sets the inputs from host int32 buffers: tokens (batch, time) and targets (batch · time),
     * where -100 masks a position. Ids are checked against the vocabulary (a target may be -100).
     *
     * @throws IllegalArgumentException naming the position of the first id out of range
     */
    public void setInputs(MemorySegment tokenIds, MemorySegment targetIds) {
        for (long i = 0; i < (long) batch * time; i++) {
            int id = tokenIds.getAtIndex(ValueLayout.JAVA_INT, i), target = targetIds.getAtIndex(ValueLayout.JAVA_INT, i);
            if (id < 0 || id >= vocab) throw new IllegalArgumentException("token id " + id + " at position " + i + " is outside the vocabulary of " + vocab);
            if (target != DifferentiableOps.IGNORE_INDEX && (target < 0 || target >= vocab)) {
                throw new IllegalArgumentException("target id " + target + " at position " + i + " is outside the vocabulary of " + vocab);
            }
        }
        MemorySegment.copy(tokenIds, 0, hostTokens, 0, hostTokens.byteSize());
        MemorySegment.copy(targetIds, 0, hostTargets, 0, hostTargets.byteSize());
        upload();
    }

    /**
     * Fills the buffers from int32 ids (batch, time): tokens = ids, targets = the next id in the
     * same sequence, the last position of each sequence ignored (its next token is unknown).
     *
     * @throws IllegalArgumentException naming the position when an id is outside the vocabulary
     */
    public void setSequences(MemorySegment ids) {
        setSequences(ids, batch);
    }

    /**
     * As {@link #setSequences(MemorySegment)}, with only the first {@code valid} sequences
     * labelled: the others (padding of a last, partial batch) have every target ignored, so they
     * count for nothing in any loss or evaluation.
     */
    public void setSequences(MemorySegment ids, int valid) {
        if (valid < 1 || valid > batch) throw new IllegalArgumentException("valid sequences " + valid + " must be in [1, " + batch + "]");
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t < time; t++) {
                long i = (long) b * time + t;
                int id = ids.getAtIndex(ValueLayout.JAVA_INT, i);
                if (id < 0 || id >= vocab) {
                    throw new dev.distillery.kernels.distill.BadRowException(i, "token id " + Integer.toUnsignedString(id)
                            + " is outside the model's vocabulary of " + vocab);
                }
                hostTokens.setAtIndex(ValueLayout.JAVA_INT, i, id);
                if (t > 0) hostTargets.setAtIndex(ValueLayout.JAVA_INT, i - 1, id);
            }
            hostTargets.setAtIndex(ValueLayout.JAVA_INT, (long) b * time + time - 1, DifferentiableOps.IGNORE_INDEX);
            if (b >= valid) {
                for (int t = 0; t < time; t++) hostTargets.setAtIndex(ValueLayout.JAVA_INT, (long) b * time + t, DifferentiableOps.IGNORE_INDEX);
            }
        }
        upload();
    }

    /**
     * Fills the buffers from {@code batch} windows of {@code time + 1} token ids each
     * (row-major): tokens = window[0, time), targets = window[1, time].
     */
    public void setWindows(int[] windows) {
        if (windows.length != batch * (time + 1)) {
            throw new IllegalArgumentException("expected " + batch + " windows of " + (time + 1) + " ids, got " + windows.length + " ids");
        }
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t <= time; t++) {
                int id = windows[b * (time + 1) + t];
                if (id < 0 || id >= vocab) {
                    throw new IllegalArgumentException("token id " + id + " in window " + b + ", position " + t
                            + " is outside the model's vocabulary of " + vocab);
                }
                if (t < time) hostTokens.setAtIndex(ValueLayout.JAVA_INT, (long) b * time + t, id);
                if (t > 0) hostTargets.setAtIndex(ValueLayout.JAVA_INT, (long) b * time + t - 1, id);
            }
        }
        upload();
    }

    /** One copy for tokens and targets: on a device each copy from pageable host memory is a wait. */
    private void upload() {
        kernels.copyFromHost(ids, hostIds, hostIds.byteSize());
    }

    @Override
    public void close() {
        arena.close();
    }
}
