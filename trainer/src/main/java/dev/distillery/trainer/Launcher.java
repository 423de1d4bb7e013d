package dev.distillery.trainer;

import java.lang.reflect.Method;

/**
 * The jar's entry point, compiled for Java 8 so that any JVM can run it far enough to say what
 * is wrong. On Java 25 it checks that the incubator Vector API module is resolved: when it is, it
 * runs the command line ({@link #MAIN}); when it is not (a plain {@code java -jar}), it hands over
 * to {@link #CHILD}, which relaunches the JVM with the flags the engine needs and exits with the
 * child's status. Both are reached by name: they are compiled for Java 25.
 */
public final class Launcher {

    static final String MAIN = "dev.distillery.trainer.cli.Main";
    static final String CHILD = "dev.distillery.trainer.cli.ChildJvm";
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
            Method entry = Class.forName(MAIN).getMethod("main", String[].class);
            entry.invoke(null, (Object) args);
            return;
        }
        Method relaunch = Class.forName(CHILD).getMethod("run", String[].class);
        System.exit((Integer) relaunch.invoke(null, (Object) args));
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
}
