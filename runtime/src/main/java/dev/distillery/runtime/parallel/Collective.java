package dev.distillery.runtime.parallel;

import java.lang.foreign.MemorySegment;
import java.util.List;

import dev.distillery.kernels.HostSums;

/**
 * The processes of one data-parallel run and what they say to each other: one process
 * ({@link Single}, its own values), or the ranks of an {@code mpirun} ({@link MpiCollective}).
 * Sums are made in rank order from every rank's values, so every rank gets the same bits whatever
 * the library's reduction algorithm, and W ranks of A micro-batches add the gradients as one
 * process adding W·A micro-batches in that order does. An interface rather than a closed set so
 * that tests can run ranks as threads.
 */
public interface Collective extends AutoCloseable {

    int rank();

    int size();

    /** One line for logs. */
    String describe();

    /**
     * sum ← ((first ? x₀ : sum + x₀) + x₁) + … + x_{W−1}, x_r being rank r's x (n fp32 values in
     * host memory each; sum may be x): the same additions, in the same order, as one process
     * adding the ranks' vectors one after another.
     */
    void addInRankOrder(MemorySegment sum, MemorySegment x, long n, boolean first);

    /** Each value summed over the ranks in rank order (losses and counts for the log). */
    double[] sum(double... values);

    /** Every rank's {@code mine}, in rank order; all ranks must pass the same length. */
    List<byte[]> allGather(byte[] mine);

    /** Waits until every rank has called it. */
    void barrier();

    @Override
    void close();

    /** This process alone. */
    record Single() implements Collective {
        @Override
        public int rank() {
            return 0;
        }

        @Override
        public int size() {
            return 1;
        }

        @Override
        public String describe() {
            return "one process";
        }

        @Override
        public void addInRankOrder(MemorySegment sum, MemorySegment x, long n, boolean first) {
            HostSums.addInOrder(sum, x, 1, Math.toIntExact(n), first);
        }

        @Override
        public double[] sum(double... values) {
            return values.clone();
        }

        @Override
        public List<byte[]> allGather(byte[] mine) {
            return List.of(mine.clone());
        }

        @Override
        public void barrier() {
        }

        @Override
        public void close() {
        }
    }

    /**
     * The ranks of an {@code mpirun} when this process was started by one (Open MPI sets
     * {@code OMPI_COMM_WORLD_SIZE}), else this process alone.
     *
     * @throws IllegalStateException naming what is missing when launched by mpirun without a loadable libmpi
     */
    static Collective open() {
        String world = System.getenv("OMPI_COMM_WORLD_SIZE");
        if (world == null) return new Single();
        return MpiCollective.init();
    }
}
