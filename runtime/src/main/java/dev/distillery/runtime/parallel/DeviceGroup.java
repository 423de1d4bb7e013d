package dev.distillery.runtime.parallel;

import dev.distillery.kernels.DeviceCollectives;

/**
 * The ranks' group on their devices (NCCL), joined over a {@link Collective}: every rank says
 * whether its kernels have device collectives, and only if all do does rank 0 make the group's id,
 * which one allgather hands to every rank before each joins. A rank without them therefore never
 * leaves the others waiting in a join; the whole run falls back to the host-memory sum instead.
 * Every rank calls {@link #join} together.
 */
public final class DeviceGroup {

    private DeviceGroup() {
    }

    /** The joined group, or null when some rank (this one or another) has no device collectives. */
    public static DeviceCollectives.Sum join(Collective collective, DeviceCollectives mine) {
        for (byte[] has : collective.allGather(new byte[]{(byte) (mine != null ? 1 : 0)})) {
            if (has[0] == 0) return null;
        }
        byte[] id = collective.allGather(collective.rank() == 0 ? mine.newId() : new byte[mine.idBytes()]).getFirst();
        return mine.join(id, collective.rank(), collective.size());
    }
}
