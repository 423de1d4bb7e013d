package dev.distillery.kernels;

import java.util.Arrays;

/**
 * The tensors of one parameter block as spans of its elements, each with its AdamW weight decay
 * ({@link Kernels#adamWSpans}): span i is the elements [offset(i), offset(i) + length(i)) of the
 * block, its gradients and its moments. Immutable, so a backend may keep what it derives from one
 * (CUDA: its table of chunks on the device) for as long as it sees the same instance.
 */
public final class ParameterSpans {

    private final long[] offsets;
    private final long[] lengths;
    private final float[] weightDecays;

    public ParameterSpans(long[] offsets, long[] lengths, float[] weightDecays) {
        if (offsets.length != lengths.length || offsets.length != weightDecays.length) {
            throw new IllegalArgumentException("spans: " + offsets.length + " offsets, " + lengths.length + " lengths, "
                    + weightDecays.length + " weight decays");
        }
        for (int i = 0; i < offsets.length; i++) {
            if (offsets[i] < 0 || lengths[i] < 0) {
                throw new IllegalArgumentException("span " + i + ": offset " + offsets[i] + ", length " + lengths[i]);
            }
        }
        this.offsets = offsets.clone();
        this.lengths = lengths.clone();
        this.weightDecays = weightDecays.clone();
    }

    public int count() {
        return offsets.length;
    }

    public long offset(int i) {
        return offsets[i];
    }

    public long length(int i) {
        return lengths[i];
    }

    public float weightDecay(int i) {
        return weightDecays[i];
    }

    @Override
    public String toString() {
        return count() + " spans, " + Arrays.stream(lengths).sum() + " elements";
    }
}
