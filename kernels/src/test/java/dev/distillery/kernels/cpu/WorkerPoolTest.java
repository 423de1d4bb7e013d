package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicIntegerArray;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

class WorkerPoolTest {

    /** Rows [0, n) each visited once by the chunk {@code start} assigns it to, call after call, with idle gaps that let the workers park. */
    @Test
    @Timeout(60)
    void everyRowIsRunOnceByItsChunkAcrossCallsAndParkedWorkers() throws InterruptedException {
        try (WorkerPool pool = new WorkerPool(3)) {
            for (int call = 0; call < 2_000; call++) {
                int n = 1 + call % 97;
                AtomicIntegerArray byChunk = new AtomicIntegerArray(n);
                AtomicIntegerArray visits = new AtomicIntegerArray(n);
                for (int i = 0; i < n; i++) byChunk.set(i, -1);
                pool.forEachChunk(n, 1, (chunk, start, end) -> {
                    for (int i = start; i < end; i++) {
                        visits.incrementAndGet(i);
                        byChunk.set(i, chunk);
                    }
                });
                int chunks = pool.chunks(n, 1);
                for (int i = 0; i < n; i++) {
                    assertEquals(1, visits.get(i), "call " + call + ", row " + i);
                    int chunk = byChunk.get(i);
                    assertTrue(WorkerPool.start(n, chunks, chunk) <= i && i < WorkerPool.start(n, chunks, chunk + 1),
                            "call " + call + ": row " + i + " ran in chunk " + chunk);
                }
                if (call % 200 == 0) Thread.sleep(2);   // past the watch: the workers park
            }
        }
    }

    /**
     * Claimed ranges cover [0, n) once each, at least minPerClaim rows apiece but the last, and a
     * worker kept busy by a slow first range leaves the rest to the others: the claims follow the
     * threads that are free, where chunks would give each thread its fixed share.
     */
    @Test
    @Timeout(60)
    void claimedRangesCoverEveryRowOnceAndGoToTheThreadsThatAreFree() {
        try (WorkerPool pool = new WorkerPool(3)) {
            for (int call = 0; call < 2_000; call++) {
                int n = 1 + call % 211, least = 1 + call % 5;
                AtomicIntegerArray visits = new AtomicIntegerArray(n);
                List<int[]> ranges = Collections.synchronizedList(new ArrayList<>());
                int slots = pool.chunks(n, least);
                pool.forEachClaimed(n, least, (slot, start, end) -> {
                    assertTrue(0 <= slot && slot < slots, "slot " + slot + " of " + slots);
                    ranges.add(new int[]{start, end});
                    for (int i = start; i < end; i++) visits.incrementAndGet(i);
                });
                for (int i = 0; i < n; i++) assertEquals(1, visits.get(i), "call " + call + ", row " + i);
                for (int[] r : ranges) assertTrue(r[1] - r[0] >= least || r[1] == n, "call " + call + ": range " + r[0] + ".." + r[1]);
            }
            int n = 300;
            AtomicIntegerArray stalledRows = new AtomicIntegerArray(1);
            ThreadLocal<Boolean> stalled = ThreadLocal.withInitial(() -> false);
            pool.forEachClaimed(n, 1, (slot, start, end) -> {
                if (start == 0) {
                    stalled.set(true);
                    try {
                        Thread.sleep(300);   // the first range's thread stalls, as a descheduled vCPU does
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                if (stalled.get()) stalledRows.addAndGet(0, end - start);
            });
            assertEquals(n / 6, stalledRows.get(0), "the stalled thread takes its first range alone, a share of 1 / (2 · 3)");
        }
    }

    @Test
    @Timeout(60)
    void aFailingChunkIsRethrownToTheCallerAndThePoolGoesOn() {
        try (WorkerPool pool = new WorkerPool(2)) {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> pool.forEachChunk(10, 1, (chunk, start, end) -> {
                if (chunk == 1) throw new IllegalStateException("chunk 1 failed");
            }));
            assertEquals("chunk 1 failed", e.getMessage());
            int[] sum = new int[2];
            pool.forEachChunk(10, 1, (chunk, start, end) -> sum[chunk] = end - start);
            assertArrayEquals(new int[]{5, 5}, sum);
        }
    }

    /** A call made inside a chunk runs its chunks on that thread instead of waiting for a pool that is waiting for it. */
    @Test
    @Timeout(60)
    void aCallInsideAChunkRunsThereWithTheSameChunks() {
        try (WorkerPool pool = new WorkerPool(2)) {
            int[][] inner = new int[2][2];
            pool.forEachChunk(2, 1, (outer, s, e) -> pool.forEachChunk(8, 1, (chunk, start, end) -> inner[outer][chunk] = end - start));
            assertArrayEquals(new int[]{4, 4}, inner[0]);
            assertArrayEquals(new int[]{4, 4}, inner[1]);
        }
    }

    @Test
    @Timeout(60)
    void callsFromTwoThreadsTakeThePoolInTurn() throws InterruptedException {
        try (WorkerPool pool = new WorkerPool(2)) {
            long[] totals = new long[2];
            Thread[] callers = new Thread[2];
            for (int t = 0; t < 2; t++) {
                int id = t;
                callers[t] = new Thread(() -> {
                    for (int call = 0; call < 1_000; call++) {
                        long[] part = new long[2];
                        pool.forEachChunk(100, 1, (chunk, start, end) -> {
                            for (int i = start; i < end; i++) part[chunk] += i;
                        });
                        totals[id] += part[0] + part[1];
                    }
                });
                callers[t].start();
            }
            for (Thread c : callers) c.join();
            assertArrayEquals(new long[]{1_000L * 4_950, 1_000L * 4_950}, totals);
        }
    }

    @Test
    void aClosedPoolRefusesCalls() {
        WorkerPool pool = new WorkerPool(2);
        pool.close();
        assertThrows(IllegalStateException.class, () -> pool.forEachChunk(10, 1, (chunk, start, end) -> { }));
    }
}
