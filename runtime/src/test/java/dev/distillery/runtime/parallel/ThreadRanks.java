package dev.distillery.runtime.parallel;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BrokenBarrierException;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/** W ranks as threads of one process, for tests of what ranks agree on: an allgather is a shared table between two barriers. */
final class ThreadRanks {

    private final int size;
    private final CyclicBarrier barrier;
    private final byte[][] table;

    ThreadRanks(int size) {
        this.size = size;
        this.barrier = new CyclicBarrier(size);
        this.table = new byte[size][];
    }

    /** Rank r's view; each rank's calls run on its own thread. */
    Collective rank(int r) {
        return new Collective() {
            @Override
            public int rank() {
                return r;
            }

            @Override
            public int size() {
                return size;
            }

            @Override
            public String describe() {
                return "rank " + r + " of " + size + " (threads)";
            }

            @Override
            public void addInRankOrder(MemorySegment sum, MemorySegment x, long n, boolean first) {
                throw new UnsupportedOperationException("thread ranks gather bytes and wait at barriers only");
            }

            @Override
            public double[] sum(double... values) {
                throw new UnsupportedOperationException("thread ranks gather bytes and wait at barriers only");
            }

            @Override
            public List<byte[]> allGather(byte[] mine) {
                table[r] = mine.clone();
                await();
                List<byte[]> out = new ArrayList<>();
                for (byte[] b : table) out.add(b.clone());
                await();   // nobody writes the table again before every rank has read it
                return out;
            }

            @Override
            public void barrier() {
                await();
            }

            @Override
            public void close() {
            }
        };
    }

    private void await() {
        try {
            barrier.await(30, TimeUnit.SECONDS);
        } catch (InterruptedException | BrokenBarrierException | TimeoutException e) {
            throw new IllegalStateException("a thread rank did not arrive", e);
        }
    }
}
