package dev.distillery.runtime.parallel;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.IntFunction;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DeviceCollectives;

/**
 * Joining the ranks' device group (NCCL's path, which no GPU has run here), with ranks as threads
 * and device collectives that record what they are asked: the id is made once, by rank 0, and
 * every rank joins with it; where any rank has none, no rank makes an id or joins.
 */
class DeviceGroupTest {

    /** Device collectives that record ids made and groups joined. */
    private static final class Recording implements DeviceCollectives {
        final AtomicInteger made = new AtomicInteger();
        final List<String> joined;

        Recording(List<String> joined) {
            this.joined = joined;
        }

        @Override
        public String describe() {
            return "recording";
        }

        @Override
        public byte[] newId() {
            return new byte[]{7, 3, (byte) made.incrementAndGet(), 9};
        }

        @Override
        public int idBytes() {
            return 4;
        }

        @Override
        public Sum join(byte[] id, int rank, int size) {
            joined.add(java.util.Arrays.toString(id) + " " + rank + "/" + size);
            return new Sum() {
                @Override
                public void sum(MemorySegment x, long n) {
                }

                @Override
                public void close() {
                }
            };
        }
    }

    private static List<DeviceCollectives.Sum> joinAll(int size, IntFunction<DeviceCollectives> perRank) throws Exception {
        ThreadRanks ranks = new ThreadRanks(size);
        try (ExecutorService pool = Executors.newFixedThreadPool(size)) {
            List<Future<DeviceCollectives.Sum>> futures = new ArrayList<>();
            for (int r = 0; r < size; r++) {
                int rank = r;
                futures.add(pool.submit(() -> DeviceGroup.join(ranks.rank(rank), perRank.apply(rank))));
            }
            List<DeviceCollectives.Sum> out = new ArrayList<>();
            for (Future<DeviceCollectives.Sum> f : futures) out.add(f.get());
            return out;
        }
    }

    @Test
    void everyRankJoinsWithTheIdRankZeroMade() throws Exception {
        List<String> joined = new CopyOnWriteArrayList<>();
        Recording[] devices = {new Recording(joined), new Recording(joined), new Recording(joined)};
        List<DeviceCollectives.Sum> sums = joinAll(3, r -> devices[r]);
        for (DeviceCollectives.Sum s : sums) assertEquals(true, s != null);
        assertArrayEquals(new int[]{1, 0, 0}, new int[]{devices[0].made.get(), devices[1].made.get(), devices[2].made.get()});
        assertEquals(List.of("[7, 3, 1, 9] 0/3", "[7, 3, 1, 9] 1/3", "[7, 3, 1, 9] 2/3"), joined.stream().sorted().toList());
    }

    @Test
    void aRankWithoutThemKeepsEveryRankOnTheHostPath() throws Exception {
        List<String> joined = new CopyOnWriteArrayList<>();
        Recording[] devices = {new Recording(joined), null, new Recording(joined)};
        for (DeviceCollectives.Sum s : joinAll(3, r -> devices[r])) assertNull(s);
        assertEquals(0, devices[0].made.get() + devices[2].made.get());
        assertEquals(List.of(), joined);
    }
}
