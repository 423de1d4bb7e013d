package dev.distillery.runtime.autograd;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.runtime.Tensor;

/**
 * Int32 ids (n), one per row (hard labels, targets): where the kernels read them, and the same ids
 * in host memory when the caller has them. A loss counts and checks its labels on the host; with
 * the host copy at hand it does not read them back from a device, which would wait for it.
 *
 * @param ids  int32 (n) where the kernels read them
 * @param host the same n ids in host memory, or null: read back from {@code ids} when needed
 */
public record Labels(Tensor ids, MemorySegment host) {

    public Labels {
        if (host != null && host.byteSize() < 4L * ids.numel()) {
            throw new IllegalArgumentException("host copy of '" + ids.name() + "' holds " + host.byteSize() + " bytes; "
                    + ids.numel() + " ids need " + 4L * ids.numel());
        }
    }

    /** Ids with no host copy: a loss reads them back when it counts them. */
    public static Labels of(Tensor ids) {
        return new Labels(ids, null);
    }

    /** The first n ids from the host copy; null when there is none. */
    int[] hostIds(int n) {
        return host == null ? null : host.asSlice(0, 4L * n).toArray(ValueLayout.JAVA_INT);
    }
}
