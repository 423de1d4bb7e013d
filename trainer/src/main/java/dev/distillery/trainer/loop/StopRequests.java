package dev.distillery.trainer.loop;

import java.util.concurrent.atomic.AtomicReference;

import sun.misc.Signal;

/**
 * SIGTERM, SIGINT and the end of the launching process, turned into a request that the training
 * loop honours between steps: it finishes the step, writes a checkpoint, says where it is and
 * how to continue, and exits with {@link #EXIT_STOPPED} (a teacher dump likewise between its
 * batches, keeping its whole shards for {@code --resume}). A second request, a second or more
 * after the first, does not wait: the process halts at once (the last checkpoint is whole;
 * checkpoints are atomic). Outside a training loop a request ends the process as the JVM's own
 * handler would.
 */
public final class StopRequests {

    /** Exit status of a run stopped by a signal after writing its checkpoint. */
    public static final int EXIT_STOPPED = 4;
    /** Exit status of a second signal, or of a signal outside a training loop (128 + SIGTERM). */
    static final int EXIT_SIGNALLED = 143;

    private static final AtomicReference<String> REQUEST = new AtomicReference<>();
    private static volatile boolean loopRunning;

    private StopRequests() {
    }

    /**
     * Installs the handlers (for the command-line process only; tests that run commands in their
     * own JVM do not): SIGTERM and SIGINT, and, when {@code launcherPid} is not 0, the end of the
     * process that launched this one, so a child JVM never outlives its launcher.
     */
    public static void install(long launcherPid) {
        for (String name : new String[]{"TERM", "INT"}) Signal.handle(new Signal(name), s -> request("SIG" + s.getName()));
        if (launcherPid != 0) {
            ProcessHandle.of(launcherPid).ifPresentOrElse(h -> h.onExit().thenRun(() -> request("the end of the launching process")),
                    () -> request("the end of the launching process"));
        }
    }

    /**
     * A second request this soon after the first is the same stop delivered twice, not a user who
     * will not wait: a SIGTERM sent to the whole process group (a scheduler's, or the terminal's)
     * reaches the child JVM both directly and through its launcher, which passes SIGTERM on.
     */
    static final long SAME_STOP_NANOS = 1_000_000_000L;
    private static volatile long firstRequestNanos;
    private static volatile boolean firstHonoured;

    /**
     * Asks the running loop to stop after its step; a second request (a second or more later) halts
     * the process. Synchronized: each signal's handler runs on a thread of its own, and a second
     * request that read the first's state half written (its request set, not yet whether the loop
     * honours it) halted a process that the first had asked to stop with its checkpoint.
     */
    public static synchronized void request(String why) {
        long now = System.nanoTime();
        if (REQUEST.compareAndSet(null, why)) {
            firstRequestNanos = now;
            firstHonoured = loopRunning;
            if (firstHonoured) return;
        } else if (firstHonoured && now - firstRequestNanos < SAME_STOP_NANOS) {
            return;   // the loop may have ended already: the process is on its way out with its own status
        }
        System.err.println("stopped by " + why);
        System.err.flush();
        Runtime.getRuntime().halt(EXIT_SIGNALLED);
    }

    /** What asked the loop to stop ("SIGTERM"), or null. */
    public static String requested() {
        return REQUEST.get();
    }

    /**
     * A loop that checks {@link #requested()} between its units of work (a training step, a
     * teacher dump's batch) is running, and requests wait for it; or none is, and they end the
     * process.
     */
    public static void loopRunning(boolean running) {
        loopRunning = running;
    }

    /** For tests: forget a request. */
    static void clear() {
        REQUEST.set(null);
    }
}
