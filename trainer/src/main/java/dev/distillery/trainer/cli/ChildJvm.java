package dev.distillery.trainer.cli;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import sun.misc.Signal;

/**
 * A plain {@code java -jar trainer.jar} relaunched as a child JVM with
 * {@code --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED} and the JVM options
 * this one was given; this process waits and exits with the child's status. Between the two:
 * <ul>
 *   <li>SIGTERM is passed on to the child (which finishes its step and checkpoints, see
 *       {@code StopRequests}); SIGINT is not, because a terminal's Ctrl-C reaches the child
 *       already (both are in the terminal's process group);</li>
 *   <li>the child is told this process's PID and stops when this process ends, however it ends;</li>
 *   <li>the child's standard error passes through, less the one line the JVM prints for every
 *       incubator module ("WARNING: Using incubator modules: ..."), which no option turns off;</li>
 *   <li>the child runs the serial collector unless a collector was chosen: every tensor is off the
 *       heap, which holds a few MB of live objects and the Vector API's short-lived boxes from
 *       before the JIT compiles a kernel, and G1 grows its young generation to hundreds of MB
 *       for those, resident for the rest of the run (docs/DESIGN-NOTES.md).</li>
 * </ul>
 */
public final class ChildJvm {

    static final String INCUBATOR_WARNING = "WARNING: Using incubator modules: jdk.incubator.vector";
    /** C2 compiles the kernels' Vector-API loops without profiled loop predicates (docs/KERNELS.md#vector-api-loops-and-the-jit). */
    static final String NO_PROFILED_LOOP_PREDICATES = "-XX:-UseProfiledLoopPredicate";
    /** The system property that tells the child its launcher's PID. */
    public static final String LAUNCHER_PID = "distillery.launcherPid";

    private ChildJvm() {
    }

    /** Runs the command line in a child JVM and returns its exit status. */
    public static int run(String[] args) throws Exception {
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        List<String> command = new ArrayList<>();
        command.add(java);
        command.add("--add-modules=jdk.incubator.vector");
        command.add("--enable-native-access=ALL-UNNAMED");
        command.addAll(jvmOptions(ManagementFactory.getRuntimeMXBean().getInputArguments()));
        command.add("-D" + LAUNCHER_PID + "=" + ProcessHandle.current().pid());
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add(Main.class.getName());
        command.addAll(List.of(args));
        Process child = new ProcessBuilder(command).redirectInput(ProcessBuilder.Redirect.INHERIT)
                .redirectOutput(ProcessBuilder.Redirect.INHERIT).start();
        // SIGTERM through the handle: Process.destroy() would also close the child's streams, and its last words with them
        Signal.handle(new Signal("TERM"), s -> child.toHandle().destroy());
        Signal.handle(new Signal("INT"), s -> { });
        Thread errors = Thread.ofPlatform().daemon().name("distillery-stderr")
                .start(() -> forwardWithoutWarning(child.getErrorStream(), System.err));
        int status = child.waitFor();
        errors.join(2000);
        return status;
    }

    /**
     * The child's JVM options: this JVM's, less a debugger agent; the serial collector unless one
     * is chosen; an initial heap of 32 MB unless one is given; and C2 without profiled loop
     * predicates unless they are chosen (with them a kernel's loop can be deoptimized and recompiled
     * without end). The heap starts small because
     * the young generation grows with it: before C2 compiles the kernels, the Vector API's
     * fallback allocates gigabytes of short-lived arrays, and a young generation sized from the
     * machine's memory (1/64 of it initially) leaves every page it cycled through resident;
     * a small one reuses a few. Nothing long-lived is on the heap (tensors are off-heap), so it
     * rarely grows (docs/PERFORMANCE.md#side-by-side-with-pytorch).
     */
    static List<String> jvmOptions(List<String> given) {
        List<String> options = new ArrayList<>();
        boolean collectorChosen = false, initialHeapChosen = false, predicationChosen = false;
        for (String option : given) {
            if (option.startsWith("-agentlib:jdwp")) continue;
            collectorChosen |= option.matches("-XX:[+-]Use\\w+GC");
            initialHeapChosen |= option.startsWith("-Xms") || option.startsWith("-XX:InitialHeapSize");
            predicationChosen |= option.matches("-XX:[+-]UseProfiledLoopPredicate");
            options.add(option);
        }
        if (!collectorChosen) options.add("-XX:+UseSerialGC");
        if (!initialHeapChosen) options.add("-Xms32m");
        if (!predicationChosen) options.add(NO_PROFILED_LOOP_PREDICATES);
        return options;
    }

    /**
     * Copies {@code in} to {@code out} as it arrives, except a first line equal to
     * {@link #INCUBATOR_WARNING}: bytes are held back only while they could still be that line.
     */
    static void forwardWithoutWarning(InputStream in, OutputStream out) {
        byte[] warning = (INCUBATOR_WARNING + "\n").getBytes(StandardCharsets.US_ASCII);
        byte[] buf = new byte[8192];
        int matched = 0;
        boolean passing = false;
        try {
            for (int n; (n = in.read(buf)) > 0; ) {
                int from = 0;
                if (!passing) {
                    while (from < n && matched < warning.length && buf[from] == warning[matched]) {
                        from++;
                        matched++;
                    }
                    if (matched == warning.length) {
                        passing = true;                      // the warning, whole: dropped
                    } else if (from < n) {
                        out.write(warning, 0, matched);      // not the warning: what was held back goes out
                        passing = true;
                    }
                }
                if (passing && from < n) out.write(buf, from, n - from);
                out.flush();
            }
            if (!passing) out.write(warning, 0, matched);
            out.flush();
        } catch (IOException e) {
            // the child's error stream closed under us: nothing more to forward
        }
    }
}
