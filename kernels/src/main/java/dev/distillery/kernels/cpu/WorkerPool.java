package dev.distillery.kernels.cpu;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A fixed pool that splits a range of rows into {@link #threads()} contiguous chunks, runs chunk 0
 * on the caller and the others on workers, and waits for all. Chunk boundaries depend only on the
 * range and the thread count, so per-chunk partial sums combined in chunk order are deterministic.
 *
 * <p>A step makes a few hundred such calls, many of a millisecond or less, so the hand-off
 * counts: a worker that has finished a chunk watches for the next call for {@link #SPIN_NANOS}
 * before it parks, and the caller watches as long for the workers' chunks before it parks,
 * instead of both going through a queue and a futex at every call (docs/PERFORMANCE.md). One call
 * runs at a time: a call from another thread waits for the pool, and a call made inside a chunk
 * (on the caller or a worker) runs its chunks there, one after another.
 */
public final class WorkerPool implements AutoCloseable {

    @FunctionalInterface
    public interface ChunkBody {
        /** Processes rows [start, end) as chunk number {@code chunk}. */
        void run(int chunk, int start, int end);
    }

    /** How long an idle worker watches for the next call, and a caller for the workers to finish, before parking. */
    static final long SPIN_NANOS = 200_000;

    private final int threads;
    private final Worker[] workers;
    private final ReentrantLock calling = new ReentrantLock();

    // the call in progress, published by the volatile write of generation
    private ChunkBody body;
    private int n, chunks;
    private volatile long generation;
    private volatile boolean closed;
    private volatile Thread caller;
    private volatile boolean callerParked;
    private final AtomicInteger running = new AtomicInteger();
    private final AtomicReference<Throwable> failure = new AtomicReference<>();

    public WorkerPool(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        this.threads = threads;
        this.workers = new Worker[threads - 1];
        for (int i = 0; i < workers.length; i++) {
            workers[i] = new Worker(i + 1);
            workers[i].thread.start();
        }
    }

    public int threads() {
        return threads;
    }

    /** Number of chunks {@link #forEachChunk} uses for a range of n with at least minPerChunk rows each. */
    public int chunks(int n, int minPerChunk) {
        return Math.max(1, Math.min(threads, n / Math.max(1, minPerChunk)));
    }

    /** Splits [0, n) into {@code chunks(n, minPerChunk)} pieces and runs them in parallel. */
    public void forEachChunk(int n, int minPerChunk, ChunkBody body) {
        int chunks = chunks(n, minPerChunk);
        if (chunks == 1) {
            body.run(0, 0, n);
            return;
        }
        if (calling.isHeldByCurrentThread() || Thread.currentThread() instanceof WorkerThread) {
            for (int i = 0; i < chunks; i++) body.run(i, start(n, chunks, i), start(n, chunks, i + 1));
            return;
        }
        if (closed) throw new IllegalStateException("the CPU worker pool is closed");
        calling.lock();
        try {
            this.body = body;
            this.n = n;
            this.chunks = chunks;
            this.caller = Thread.currentThread();
            failure.set(null);
            running.set(chunks - 1);
            generation++;   // publishes the call
            for (int i = 0; i < chunks - 1; i++) {
                if (workers[i].parked) LockSupport.unpark(workers[i].thread);
            }
            try {
                body.run(0, 0, start(n, chunks, 1));
            } catch (Throwable t) {
                failure.compareAndSet(null, t);
            }
            long waitStart = System.nanoTime();
            while (running.get() != 0) {
                if (System.nanoTime() - waitStart < SPIN_NANOS) {
                    Thread.onSpinWait();
                } else {
                    callerParked = true;
                    if (running.get() != 0) LockSupport.park(this);
                    callerParked = false;
                }
            }
            this.body = null;
        } finally {
            calling.unlock();
        }
        Throwable t = failure.getAndSet(null);
        if (t instanceof RuntimeException re) throw re;
        if (t instanceof Error err) throw err;
        if (t != null) throw new IllegalStateException("worker failed", t);
    }

    /**
     * Runs [0, n) over as many threads as {@link #forEachChunk} would, in ranges that each thread
     * claims as it comes free, each a share of the rows left (1 / (2 · threads), at least
     * minPerClaim): a thread that runs behind (a busy vCPU) takes fewer rows instead of holding up
     * the call. The body's {@code chunk} is the claiming thread's slot, below {@code chunks(n,
     * minPerClaim)}, for scratch of its own. Which rows go to which thread, and in how many ranges,
     * is not fixed, so only a body whose rows are independent of each other (no partial sums kept
     * per chunk) may run here.
     */
    public void forEachClaimed(int n, int minPerClaim, ChunkBody body) {
        int chunks = chunks(n, minPerClaim), least = Math.max(1, minPerClaim);
        if (chunks == 1) {
            body.run(0, 0, n);
            return;
        }
        AtomicInteger next = new AtomicInteger();
        forEachChunk(chunks, 1, (slot, s, e) -> {
            while (true) {
                int start = next.get();
                if (start >= n) return;
                int end = Math.min(n, start + Math.max(least, (n - start + 2 * chunks - 1) / (2 * chunks)));
                if (next.compareAndSet(start, end)) body.run(slot, start, end);
            }
        });
    }

    /** Start row of chunk i when n rows are split into the given number of chunks. */
    static int start(int n, int chunks, int i) {
        return (int) ((long) n * i / chunks);
    }

    @Override
    public void close() {
        closed = true;
        for (Worker w : workers) LockSupport.unpark(w.thread);
    }

    private static final class WorkerThread extends Thread {
        WorkerThread(Runnable r) {
            super(r, "distillery-cpu-worker");
            setDaemon(true);
        }
    }

    /** Runs chunk {@code index} of each call that has that many chunks. */
    private final class Worker implements Runnable {
        final int index;
        final Thread thread = new WorkerThread(this);
        volatile boolean parked;

        Worker(int index) {
            this.index = index;
        }

        @Override
        public void run() {
            long seen = 0;
            while (true) {
                long idleSince = System.nanoTime();
                long g;
                while ((g = generation) == seen && !closed) {
                    if (System.nanoTime() - idleSince < SPIN_NANOS) {
                        Thread.onSpinWait();
                    } else {
                        parked = true;
                        if (generation == seen && !closed) LockSupport.park(this);
                        parked = false;
                    }
                }
                if (closed) return;
                seen = g;
                int count = chunks;
                if (index >= count) continue;
                try {
                    body.run(index, start(n, count, index), start(n, count, index + 1));
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                } finally {
                    if (running.decrementAndGet() == 0 && callerParked) LockSupport.unpark(caller);
                }
            }
        }
    }
}
