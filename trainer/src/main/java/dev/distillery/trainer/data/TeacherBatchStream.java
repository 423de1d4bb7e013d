package dev.distillery.trainer.data;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.atomic.AtomicReference;

import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.distill.FeatureDistillation;

/**
 * Batches of sequences (teacher shards, or token windows for a teacher run in the process) in a
 * seeded random order, prepared by a background thread.
 *
 * <p>Each epoch is a permutation of all sequences, drawn from {@code Rng(seed +
 * epoch)}, cut into batches of {@code batch} sequences (a last partial batch is dropped). The
 * prefetcher copies a batch's input ids and teacher targets into one of {@code depth} reusable
 * slots, so a batch's B·T target rows are contiguous (what the chunked loss wants) and nothing is
 * allocated after construction. The consumer takes a batch with {@link #next()}, uses it, and
 * gives the slot back with {@link #release(Batch)}; time spent blocked in {@code next()} is
 * counted ({@link #waitNanos()}) so the trainer can report the fraction of step time lost to data.
 * A position (epoch, batch) can be resumed exactly.
 *
 * <p>{@link #onePass} is the evaluation form: one permutation (of {@code Rng(seed)}) in batches
 * that cover every sequence once, the last batch padded with repeats of its last sequence that
 * {@link Batch#valid()} tells the consumer to ignore; then the stream ends.
 */
public final class TeacherBatchStream implements AutoCloseable {

    /**
     * One prepared batch; valid until {@link #release(Batch)}. Its first {@code valid} sequences
     * are real; the rest (only in the last batch of a {@link #onePass} stream) are padding.
     * {@code targets} is null when the sequences carry none.
     */
    public record Batch(int epoch, int index, MemorySegment inputIds, TeacherTargets targets, int[] sequences, int valid, Slot slot,
                        FeatureDistillation.TeacherStates hiddenStates) {
    }

    /** A reusable set of buffers for one batch: its input ids and one buffer per buffer of the teacher layout. */
    public static final class Slot {
        private final MemorySegment ids;
        private final List<MemorySegment> targets = new ArrayList<>();
        private final Map<Integer, MemorySegment> hidden = new HashMap<>();

        private Slot(Arena arena, HostMemory memory, long rows, TeacherLayout layout, int[] hiddenLayers, long hiddenBytesPerRow) {
            ids = memory.allocate(arena, Math.max(1, rows * 4));
            for (int i = 0; layout != null && i < layout.bufferTypes().size(); i++) targets.add(memory.allocate(arena, Math.max(1, rows * layout.bytesPerRow(i))));
            for (int l : hiddenLayers) hidden.put(l, memory.allocate(arena, rows * hiddenBytesPerRow));
        }

        /** The slot's hidden states as the loss reads them; null when it holds none. */
        private FeatureDistillation.TeacherStates states() {
            return hidden.isEmpty() ? null : FeatureDistillation.TeacherStates.of(hidden, TeacherShardFormat.HIDDEN_TYPE);
        }
    }

    /**
     * Where slots come from: plain host memory, or the kernels' staging memory
     * ({@code Kernels::allocateStaging}: page-locked on CUDA, so the copies to the device overlap
     * compute). 64-byte aligned, freed with the arena.
     */
    @FunctionalInterface
    public interface HostMemory {
        MemorySegment allocate(Arena arena, long bytes);

        HostMemory PLAIN = (arena, bytes) -> arena.allocate(bytes, 64);
    }

    private final Sequences shards;
    private final int batch;
    private final long seed;
    private final int batchesPerEpoch;
    private final boolean onePass;
    private final Arena arena = Arena.ofShared();
    private final BlockingQueue<Slot> free;
    private final BlockingQueue<Batch> ready;
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    private final Thread producer;
    private final TeacherLayout layout;
    private final int rank, share;
    private long waitNanos;

    /**
     * @param startEpoch first epoch to produce (0 for a fresh run)
     * @param startBatch first batch within it (to resume)
     */
    public TeacherBatchStream(Sequences shards, int batch, long seed, int depth, int startEpoch, int startBatch) {
        this(shards, batch, seed, depth, startEpoch, startBatch, HostMemory.PLAIN);
    }

    /** As above, with the slots in {@code memory}. */
    public TeacherBatchStream(Sequences shards, int batch, long seed, int depth, int startEpoch, int startBatch, HostMemory memory) {
        this(shards, batch, seed, depth, startEpoch, startBatch, memory, 0, 1);
    }

    /**
     * As above for rank {@code rank} of {@code world} data-parallel processes: the batches are the
     * same global batches of {@code batch} sequences on every rank, and each rank's {@link Batch}
     * holds its share, sequences [rank·batch/world, (rank + 1)·batch/world) of each, so the shares
     * are disjoint and cover every batch. batch must be a multiple of world.
     */
    public TeacherBatchStream(Sequences shards, int batch, long seed, int depth, int startEpoch, int startBatch, HostMemory memory,
                              int rank, int world) {
        this(shards, batch, seed, depth, startEpoch, startBatch, memory, false, rank, world);
    }

    /** Every sequence once, in {@code ceil(sequences / batch)} batches (the last padded), then the end. */
    public static TeacherBatchStream onePass(Sequences shards, int batch, long seed) {
        return new TeacherBatchStream(shards, batch, seed, 1, 0, 0, HostMemory.PLAIN, true, 0, 1);
    }

    private TeacherBatchStream(Sequences shards, int batch, long seed, int depth, int startEpoch, int startBatch, HostMemory memory,
                               boolean onePass, int rank, int world) {
        if (batch < 1 || (!onePass && batch > shards.sequences())) {
            throw new IllegalArgumentException("batch " + batch + " must be in [1, " + shards.sequences() + " sequences]");
        }
        if (world < 1 || rank < 0 || rank >= world || batch % world != 0) {
            throw new IllegalArgumentException("a batch of " + batch + " cannot be shared evenly by " + world + " ranks (rank " + rank + ")");
        }
        this.rank = rank;
        this.share = batch / world;
        if (depth < 1) throw new IllegalArgumentException("prefetch depth must be >= 1, got " + depth);
        this.shards = shards;
        this.batch = batch;
        this.seed = seed;
        this.onePass = onePass;
        this.batchesPerEpoch = onePass ? (shards.sequences() + batch - 1) / batch : shards.sequences() / batch;
        if (startBatch < 0 || startBatch >= batchesPerEpoch) {
            throw new IllegalArgumentException("start batch " + startBatch + " must be in [0, " + batchesPerEpoch + ")");
        }
        this.layout = shards.layout();
        long rows = (long) share * shards.seqLen();
        this.free = new ArrayBlockingQueue<>(depth);
        this.ready = new ArrayBlockingQueue<>(depth);
        long hiddenBytesPerRow = (long) shards.hiddenSize() * TeacherShardFormat.HIDDEN_TYPE.bytes();
        for (int i = 0; i < depth; i++) free.add(new Slot(arena, memory, rows, layout, shards.hiddenLayers(), hiddenBytesPerRow));
        this.producer = Thread.ofPlatform().daemon().name("distillery-prefetch").start(() -> produce(startEpoch, startBatch));
    }

    public int batchesPerEpoch() {
        return batchesPerEpoch;
    }

    /** The sequence order of an epoch: a permutation of [0, sequences) from Rng(seed + epoch). */
    public int[] order(int epoch) {
        int n = shards.sequences();
        int[] p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        Rng rng = new Rng(seed + epoch);
        for (int i = n - 1; i > 0; i--) {
            int j = rng.nextInt(i + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    private void produce(int epoch, int first) {
        try {
            for (int e = epoch; e == epoch || !onePass; e++) {
                int[] order = order(e);
                for (int bIdx = e == epoch ? first : 0; bIdx < batchesPerEpoch; bIdx++) {
                    Slot slot = free.take();
                    int valid = Math.min(batch, order.length - bIdx * batch);
                    int[] seqs = Arrays.copyOfRange(order, bIdx * batch, bIdx * batch + valid);
                    if (share < batch) seqs = Arrays.copyOfRange(seqs, rank * share, (rank + 1) * share);   // training batches are always full
                    ready.put(fill(slot, e, bIdx, seqs, Math.min(valid, share)));
                }
            }
        } catch (InterruptedException stop) {
            Thread.currentThread().interrupt();
        } catch (Throwable t) {
            failure.set(t);
        }
    }

    private Batch fill(Slot slot, int epoch, int index, int[] seqs, int valid) {
        int t = shards.seqLen();
        for (int i = 0; i < share; i++) {
            int sequence = seqs[Math.min(i, valid - 1)];
            try {
                shards.copyInputIds(sequence, slot.ids, 4L * i * t);
                for (var h : slot.hidden.entrySet()) {
                    MemorySegment from = shards.hiddenState(sequence, h.getKey());
                    copy(from, h.getValue(), i, from.byteSize());
                }
                if (layout == null) continue;
                List<MemorySegment> from = shards.targets(sequence).buffers();
                for (int b = 0; b < from.size(); b++) copy(from.get(b), slot.targets.get(b), i, t * layout.bytesPerRow(b));
            } catch (InternalError fault) {   // a mapped page past the file's end: the file shrank after it was opened
                throw shards.unreadable(sequence, fault);
            }
        }
        return new Batch(epoch, index, slot.ids, layout == null ? null : layout.over(slot.targets), seqs, valid, slot, slot.states());
    }

    private static void copy(MemorySegment src, MemorySegment dst, int i, long bytes) {
        MemorySegment.copy(src, 0, dst, i * bytes, bytes);
    }

    /** The next batch, blocking until the prefetcher has it; rethrows a prefetcher failure. */
    public Batch next() throws InterruptedException {
        long t0 = System.nanoTime();
        Batch b;
        while ((b = ready.poll(50, java.util.concurrent.TimeUnit.MILLISECONDS)) == null) {
            Throwable t = failure.get();
            if (t instanceof java.io.UncheckedIOException io) throw io;   // already names the file and the sequence
            if (t != null) throw new IllegalStateException("teacher prefetcher failed: " + t.getMessage(), t);
        }
        waitNanos += System.nanoTime() - t0;
        return b;
    }

    /** Gives a batch's buffers back to the prefetcher; the batch must not be used afterwards. */
    public void release(Batch b) {
        free.add(b.slot());
    }

    /** Total time {@link #next()} spent waiting for data. */
    public long waitNanos() {
        return waitNanos;
    }

    @Override
    public void close() {
        producer.interrupt();
        try {
            producer.join(10_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        arena.close();
    }
}
