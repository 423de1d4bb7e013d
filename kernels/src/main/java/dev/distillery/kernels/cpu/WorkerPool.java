package dev.distillery.kernels.cpu;

import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * A fixed pool that splits a range of rows into {@link #threads()} contiguous chunks, runs chunk 0
 * on the caller and the others on workers, and waits for all. Chunk boundaries depend only on the
 * range and the thread count, so per-chunk partial sums combined in chunk order are deterministic.
 */
public final class WorkerPool implements AutoCloseable {

    @FunctionalInterface
    public interface ChunkBody {
        /** Processes rows [start, end) as chunk number {@code chunk}. */
        void run(int chunk, int start, int end);
    }

    private final int threads;
    private final ExecutorService workers;

    public WorkerPool(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        this.threads = threads;
        this.workers = threads == 1 ? null : Executors.newFixedThreadPool(threads - 1, r -> {
            Thread t = new Thread(r, "distillery-cpu-worker");
            t.setDaemon(true);
            return t;
        });
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
        @SuppressWarnings("unchecked")
        Future<?>[] pending = new Future<?>[chunks - 1];
        for (int i = 1; i < chunks; i++) {
            int chunk = i;
            pending[i - 1] = workers.submit(() -> body.run(chunk, start(n, chunks, chunk), start(n, chunks, chunk + 1)));
        }
        Throwable failure = null;
        try {
            body.run(0, 0, start(n, chunks, 1));
        } catch (Throwable t) {
            failure = t;
        }
        for (Future<?> f : pending) {
            try {
                f.get();
            } catch (ExecutionException e) {
                if (failure == null) failure = e.getCause();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                if (failure == null) failure = e;
            }
        }
        if (failure instanceof RuntimeException re) throw re;
        if (failure instanceof Error err) throw err;
        if (failure != null) throw new IllegalStateException("worker failed", failure);
    }

    /** Start row of chunk i when n rows are split into the given number of chunks. */
    static int start(int n, int chunks, int i) {
        return (int) ((long) n * i / chunks);
    }

    @Override
    public void close() {
        if (workers != null) workers.shutdownNow();
    }
}
