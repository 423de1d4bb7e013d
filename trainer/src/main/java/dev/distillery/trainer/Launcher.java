package dev.distillery.trainer;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.lang.management.ManagementFactory;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.List;

/**
 * The jar's entry point, compiled for Java 8 so that any JVM can run it far enough to say what
 * is wrong. On Java 25 it checks that the incubator Vector API module is resolved; when it is
 * not (a plain {@code java -jar}), it relaunches the same JVM binary with
 * {@code --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED} plus the JVM
 * options it was given, and exits with the child's status. The child's standard error passes
 * through, less the one line the JVM prints for every incubator module ("WARNING: Using incubator
 * modules: ..."), which no option turns off and which says nothing to a user of this jar.
 */
public final class Launcher {

    static final String MAIN = "dev.distillery.trainer.cli.Main";
    static final String INCUBATOR_WARNING = "WARNING: Using incubator modules: jdk.incubator.vector";
    private static final int REQUIRED = 25;

    private Launcher() {
    }

    public static void main(String[] args) throws Exception {
        int feature = featureVersion(System.getProperty("java.specification.version", "0"));
        if (feature < REQUIRED) {
            System.err.println("distillery needs Java " + REQUIRED + " or newer, but this is Java "
                    + System.getProperty("java.version") + " (" + System.getProperty("java.home")
                    + "); install a JDK 25 and run: <jdk-25>/bin/java -jar trainer.jar");
            System.exit(2);
        }
        if (vectorModuleResolved()) {
            Class<?> main = Class.forName(MAIN);
            Method entry = main.getMethod("main", String[].class);
            entry.invoke(null, (Object) args);
            return;
        }
        System.exit(relaunch(args));
    }

    static int featureVersion(String spec) {
        String s = spec.startsWith("1.") ? spec.substring(2) : spec;
        int end = 0;
        while (end < s.length() && Character.isDigit(s.charAt(end))) end++;
        return end == 0 ? 0 : Integer.parseInt(s.substring(0, end));
    }

    private static boolean vectorModuleResolved() {
        try {
            Class.forName("jdk.incubator.vector.FloatVector", false, Launcher.class.getClassLoader());
            return true;
        } catch (ClassNotFoundException e) {
            return false;
        }
    }

    private static int relaunch(String[] args) throws Exception {
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        List<String> command = new ArrayList<String>();
        command.add(java);
        command.add("--add-modules=jdk.incubator.vector");
        command.add("--enable-native-access=ALL-UNNAMED");
        for (String option : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (!option.startsWith("-agentlib:jdwp")) command.add(option);
        }
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add(MAIN);
        for (String a : args) command.add(a);
        ProcessBuilder pb = new ProcessBuilder(command).redirectInput(ProcessBuilder.Redirect.INHERIT)
                .redirectOutput(ProcessBuilder.Redirect.INHERIT);
        final Process child = pb.start();
        Thread errors = new Thread(new Runnable() {
            @Override
            public void run() {
                forwardWithoutWarning(child.getErrorStream(), System.err);
            }
        }, "distillery-stderr");
        errors.setDaemon(true);
        errors.start();
        Runtime.getRuntime().addShutdownHook(new Thread(new Runnable() {
            @Override
            public void run() {
                child.destroy();
            }
        }));
        int status = child.waitFor();
        errors.join(2000);
        return status;
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
