package dev.distillery.runtime.parallel;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.LockSupport;

import dev.distillery.bindings.MpiLibrary;
import dev.distillery.bindings.SharedLibraries;
import dev.distillery.bindings.mpi.Mpi;
import dev.distillery.kernels.HostSums;

/**
 * The ranks of an {@code mpirun}, through Open MPI (CPU ranks; the gradients are in host memory).
 * A sum in rank order is an allgather of every rank's values followed by the same additions on
 * every rank, r = 0, 1, …: W times the memory of one vector, and bits that do not depend on the
 * library's reduction algorithm or the ranks' timing. Errors come back as {@code MpiException}s
 * (the world communicator's error handler is MPI_ERRORS_RETURN), never as a silent abort.
 *
 * <p>A rank that dies is named by mpirun, which then ends the job. A rank that hangs (alive, but
 * never joining the next collective) would block the others forever. So before each collective
 * every rank sends every other one an arrival note (the collective's number) and waits for
 * theirs without blocking: after {@code -Ddistillery.collectiveTimeout} seconds (default 600;
 * 0 = none) it names the ranks whose notes have not come, and exits with status 1; mpirun ends the
 * rest. A note with another number means the ranks took different paths, and is refused. A
 * barrier is the notes alone; an allgather starts only when every rank has arrived, and runs
 * under a watchdog with the same timeout for a rank that stops inside it.
 */
public final class MpiCollective implements Collective {

    /** Floats per allgather call: MPI counts are ints, and a bounded receive buffer. */
    private static final int CHUNK = 1 << 24;
    /** The point-to-point tag of the arrival notes (collectives never match point-to-point messages). */
    private static final int ARRIVAL_TAG = 7301;

    private final MpiLibrary.Handles h;
    private final int rank, size;
    private final String library;
    private final Arena arena = Arena.ofShared();
    private MemorySegment gathered;
    private final long timeoutSeconds;
    /** The blocking call this rank is in (null between calls), and since when (System.nanoTime). */
    private volatile String waitingIn;
    private volatile long waitingSince;
    /** How many collectives this rank has started: the number its arrival notes carry. */
    private long collectives;
    /** The arrival notes: this rank's (8 bytes), one slot per rank for theirs, and a request per receive and per send. */
    private final MemorySegment noteOut, notesIn, requests, flag;

    private MpiCollective(MpiLibrary.Handles h, int rank, int size, String library, long timeoutSeconds) {
        this.h = h;
        this.rank = rank;
        this.size = size;
        this.library = library;
        this.timeoutSeconds = timeoutSeconds;
        this.noteOut = arena.allocate(8, 8);
        this.notesIn = arena.allocate(8L * size, 8);
        this.requests = arena.allocate(ValueLayout.ADDRESS, 2L * size);
        this.flag = arena.allocate(ValueLayout.JAVA_INT);
        if (timeoutSeconds > 0) Thread.ofPlatform().daemon().name("distillery-collective-watchdog").start(this::watch);
    }

    /** The watchdog's loop: ends the process when one blocking call has waited past the timeout. */
    private void watch() {
        while (true) {
            try {
                Thread.sleep(Math.min(1000, timeoutSeconds * 250));
            } catch (InterruptedException e) {
                return;
            }
            String in = waitingIn;
            if (in != null && System.nanoTime() - waitingSince > timeoutSeconds * 1_000_000_000L && in.equals(waitingIn)) {
                System.err.println("rank " + rank + " of " + size + ": every rank reached " + in + ", which has not completed in "
                        + timeoutSeconds + " s; a rank has died or hangs inside it. Ending the job (rank 0's last checkpoint is whole; "
                        + "-Ddistillery.collectiveTimeout sets the wait)");
                System.err.flush();
                Runtime.getRuntime().halt(1);
            }
        }
    }

    /**
     * Runs one blocking MPI collective once every rank has arrived at it (see the class comment),
     * under the watchdog; {@code what} names it in the messages.
     */
    private void blocking(String what, Runnable call) {
        if (size > 1) awaitArrivals(what);
        waitingSince = System.nanoTime();
        waitingIn = what;
        try {
            call.run();
        } finally {
            waitingIn = null;
        }
    }

    /**
     * Sends this rank's arrival note for the next collective to every other rank and polls for
     * theirs: a spin for the first microseconds (ranks in step arrive together), then 50 µs naps.
     */
    private void awaitArrivals(String what) {
        long number = ++collectives;
        noteOut.set(ValueLayout.JAVA_LONG, 0, number);
        for (int r = 0; r < size; r++) {
            if (r == rank) continue;
            MpiLibrary.check(Mpi.MPI_Irecv(notesIn.asSlice(8L * r, 8), 8, h.byteType(), r, ARRIVAL_TAG, h.commWorld(), request(2 * r)),
                    "MPI_Irecv(the arrival note of rank " + r + ")");
            MpiLibrary.check(Mpi.MPI_Isend(noteOut, 8, h.byteType(), r, ARRIVAL_TAG, h.commWorld(), request(2 * r + 1)),
                    "MPI_Isend(an arrival note to rank " + r + ")");
        }
        boolean[] done = new boolean[2 * size];
        done[2 * rank] = done[2 * rank + 1] = true;
        int pending = 2 * (size - 1);
        long t0 = System.nanoTime();
        for (long polls = 0; pending > 0; polls++) {
            for (int i = 0; i < done.length; i++) {
                if (done[i]) continue;
                MpiLibrary.check(Mpi.MPI_Test(request(i), flag, MemorySegment.NULL), "MPI_Test(arrival note " + i + ")");
                if (flag.get(ValueLayout.JAVA_INT, 0) != 0) {
                    done[i] = true;
                    pending--;
                }
            }
            if (pending == 0) break;
            if (timeoutSeconds > 0 && System.nanoTime() - t0 > timeoutSeconds * 1_000_000_000L) notArrived(what, number, done);
            if (polls < 2000) Thread.onSpinWait(); else LockSupport.parkNanos(50_000);
        }
        for (int r = 0; r < size; r++) {
            long theirs = notesIn.get(ValueLayout.JAVA_LONG, 8L * r);
            if (r != rank && theirs != number) {
                throw new IllegalStateException("rank " + rank + " of " + size + " is at collective " + number + " (" + what + ") but rank " + r
                        + " is at its collective " + theirs + ": the ranks took different paths");
            }
        }
    }

    private MemorySegment request(int i) {
        return requests.asSlice(ValueLayout.ADDRESS.byteSize() * i, ValueLayout.ADDRESS.byteSize());
    }

    /**
     * Names the ranks whose notes have not come (their receive is still pending), or else those
     * that have not taken this rank's note (its send is), and ends this process.
     */
    private void notArrived(String what, long number, boolean[] done) {
        List<String> silent = new ArrayList<>(), deaf = new ArrayList<>();
        for (int r = 0; r < size; r++) {
            if (!done[2 * r]) silent.add("rank " + r);
            else if (!done[2 * r + 1]) deaf.add("rank " + r);
        }
        List<String> named = silent.isEmpty() ? deaf : silent;
        String verb = silent.isEmpty() ? " taken this rank's note for " : " reached ";
        System.err.println("rank " + rank + " of " + size + ": " + String.join(", ", named) + (named.size() == 1 ? " has" : " have")
                + " not" + verb + what + " (collective " + number + ") in " + timeoutSeconds + " s; "
                + (named.size() == 1 ? "it has died or hangs" : "they have died or hang") + ". Ending the job (rank 0's last checkpoint is whole; "
                + "-Ddistillery.collectiveTimeout sets the wait)");
        System.err.flush();
        Runtime.getRuntime().halt(1);
    }

    /** {@code -Ddistillery.collectiveTimeout}: seconds, at least 0. */
    static long timeoutSeconds() {
        String v = System.getProperty("distillery.collectiveTimeout", "600").trim();
        try {
            long s = Long.parseLong(v);
            if (s >= 0) return s;
        } catch (NumberFormatException e) {
            // named below
        }
        throw new IllegalArgumentException("-Ddistillery.collectiveTimeout must be a whole number of seconds >= 0, got '" + v + "'");
    }

    static MpiCollective init() {
        SharedLibraries.Probe p = MpiLibrary.load();
        if (!p.loaded()) {
            throw new IllegalStateException("started by mpirun (OMPI_COMM_WORLD_SIZE is set) but Open MPI's library is " + p.describe()
                    + "; install it (Debian: libopenmpi3 / openmpi-bin)");
        }
        MpiLibrary.Handles h = MpiLibrary.handles();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment flag = a.allocate(ValueLayout.JAVA_INT);
            MpiLibrary.check(Mpi.MPI_Initialized(flag), "MPI_Initialized");
            if (flag.get(ValueLayout.JAVA_INT, 0) == 0) MpiLibrary.check(Mpi.MPI_Init(MemorySegment.NULL, MemorySegment.NULL), "MPI_Init");
            MpiLibrary.check(Mpi.MPI_Comm_set_errhandler(h.commWorld(), h.errorsReturn()), "MPI_Comm_set_errhandler(MPI_ERRORS_RETURN)");
            MemorySegment out = a.allocate(ValueLayout.JAVA_INT);
            MpiLibrary.check(Mpi.MPI_Comm_rank(h.commWorld(), out), "MPI_Comm_rank");
            int rank = out.get(ValueLayout.JAVA_INT, 0);
            MpiLibrary.check(Mpi.MPI_Comm_size(h.commWorld(), out), "MPI_Comm_size");
            int size = out.get(ValueLayout.JAVA_INT, 0);
            MemorySegment version = a.allocate(Mpi.MPI_MAX_LIBRARY_VERSION_STRING() + 1L);
            MpiLibrary.check(Mpi.MPI_Get_library_version(version, out), "MPI_Get_library_version");
            String v = version.getString(0).lines().findFirst().orElse("MPI").strip();
            return new MpiCollective(h, rank, size, v.replaceAll(",.*", ""), timeoutSeconds());
        }
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return size;
    }

    @Override
    public String describe() {
        return "rank " + rank + " of " + size + " (" + library + ")";
    }

    @Override
    public void addInRankOrder(MemorySegment sum, MemorySegment x, long n, boolean first) {
        for (long from = 0; from < n; from += CHUNK) {
            int count = (int) Math.min(CHUNK, n - from);
            if (gathered == null || gathered.byteSize() < 4L * count * size) gathered = arena.allocate(4L * Math.min(CHUNK, n) * size, 64);
            MemorySegment mine = x.asSlice(4 * from, 4L * count), out = sum.asSlice(4 * from, 4L * count);
            blocking("MPI_Allgather of the gradients", () -> MpiLibrary.check(Mpi.MPI_Allgather(mine, count, h.floatType(), gathered, count,
                    h.floatType(), h.commWorld()), "MPI_Allgather(" + count + " floats)"));
            HostSums.addInOrder(out, gathered, size, count, first);
        }
    }

    @Override
    public double[] sum(double... values) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment mine = a.allocateFrom(ValueLayout.JAVA_DOUBLE, values), all = a.allocate(8L * values.length * size);
            blocking("MPI_Allgather of " + values.length + " sums", () -> MpiLibrary.check(Mpi.MPI_Allgather(mine, values.length,
                    h.doubleType(), all, values.length, h.doubleType(), h.commWorld()), "MPI_Allgather(" + values.length + " doubles)"));
            double[] out = new double[values.length];
            for (int i = 0; i < values.length; i++) {
                for (int r = 0; r < size; r++) out[i] += all.getAtIndex(ValueLayout.JAVA_DOUBLE, (long) r * values.length + i);
            }
            return out;
        }
    }

    @Override
    public List<byte[]> allGather(byte[] mine) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment in = a.allocateFrom(ValueLayout.JAVA_BYTE, mine), all = a.allocate((long) mine.length * size);
            blocking("MPI_Allgather of " + mine.length + " bytes", () -> MpiLibrary.check(Mpi.MPI_Allgather(in, mine.length, h.byteType(),
                    all, mine.length, h.byteType(), h.commWorld()), "MPI_Allgather(" + mine.length + " bytes)"));
            List<byte[]> out = new ArrayList<>();
            for (int r = 0; r < size; r++) out.add(all.asSlice((long) r * mine.length, mine.length).toArray(ValueLayout.JAVA_BYTE));
            return out;
        }
    }

    @Override
    public void barrier() {
        // every rank's arrival note is in: that is a barrier, and waiting for it names a rank that never comes
        if (size > 1) awaitArrivals("a barrier");
    }

    @Override
    public void close() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment flag = a.allocate(ValueLayout.JAVA_INT);
            if (Mpi.MPI_Finalized(flag) == Mpi.MPI_SUCCESS() && flag.get(ValueLayout.JAVA_INT, 0) == 0) Mpi.MPI_Finalize();
        }
        arena.close();
    }
}
