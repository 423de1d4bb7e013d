package dev.distillery.trainer.loop;

import java.util.concurrent.atomic.AtomicReference;

import sun.misc.Signal;

/**
 * SIGTERM, SIGINT and the end of the launching process, turned into a request that the training
 * loop honours between steps: it finishes the step, writes a checkpoint, says where it is and
 * how to continue, and exits with {@link #EXIT_STOPPED}. A second request does not wait: the
 * process halts at once (the last checkpoint is whole; checkpoints are atomic). Outside a
 * training loop a request ends the process as the JVM's own handler would.
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

    /** Asks the running loop to stop after its step; a second request halts the process. */
    public static void request(String why) {
        if (!REQUEST.compareAndSet(null, why) || !loopRunning) {
            System.err.println("stopped by " + why);
            System.err.flush();
            Runtime.getRuntime().halt(EXIT_SIGNALLED);
        }
    }

    /** What asked the loop to stop ("SIGTERM"), or null. */
    public static String requested() {
        return REQUEST.get();
    }

    /** A training loop is running (requests wait for its step) or not (requests end the process). */
    static void loopRunning(boolean running) {
        loopRunning = running;
    }

    /** For tests: forget a request. */
    static void clear() {
        REQUEST.set(null);
    }
}
