package dev.distillery.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;

import org.junit.jupiter.api.Test;

class ChildJvmTest {

    /** The child's stderr arrives in whatever pieces the pipe gives: here one byte at a time, the worst case for the matching. */
    private static String forward(String childStderr) {
        byte[] bytes = childStderr.getBytes(StandardCharsets.UTF_8);
        InputStream trickle = new InputStream() {
            private final ByteArrayInputStream in = new ByteArrayInputStream(bytes);

            @Override
            public int read() {
                return in.read();
            }

            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                return in.read(b, off, Math.min(len, 1));
            }
        };
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ChildJvm.forwardWithoutWarning(trickle, out);
        return out.toString(StandardCharsets.UTF_8);
    }

    @Test
    void theChildRunsTheSerialCollectorOnASmallInitialHeapWithoutProfiledLoopPredicatesUnlessOthersWereChosen() {
        String off = ChildJvm.NO_PROFILED_LOOP_PREDICATES;
        assertEquals(java.util.List.of("-Xmx2g", "-XX:+UseSerialGC", "-Xms32m", off),
                ChildJvm.jvmOptions(java.util.List.of("-Xmx2g", "-agentlib:jdwp=transport=dt_socket,server=y")));
        assertEquals(java.util.List.of("-XX:+UseG1GC", "-Xmx2g", "-Xms32m", off), ChildJvm.jvmOptions(java.util.List.of("-XX:+UseG1GC", "-Xmx2g")));
        assertEquals(java.util.List.of("-XX:+UseParallelGC", "-Xms1g", off), ChildJvm.jvmOptions(java.util.List.of("-XX:+UseParallelGC", "-Xms1g")));
        assertEquals(java.util.List.of("-XX:InitialHeapSize=64m", "-XX:+UseSerialGC", off),
                ChildJvm.jvmOptions(java.util.List.of("-XX:InitialHeapSize=64m")));
        assertEquals(java.util.List.of("-XX:+UseProfiledLoopPredicate", "-XX:+UseSerialGC", "-Xms32m"),
                ChildJvm.jvmOptions(java.util.List.of("-XX:+UseProfiledLoopPredicate")));
    }

    @Test
    void theIncubatorWarningLineIsDroppedAndEverythingElsePassesThrough() {
        String warning = ChildJvm.INCUBATOR_WARNING + "\n";
        assertEquals("device: cpu\nstep 1\r", forward(warning + "device: cpu\nstep 1\r"));
        assertEquals("", forward(warning));
        // a first line that only starts like the warning, or comes later, is the child's own and stays
        assertEquals("WARNING: Using something else\n", forward("WARNING: Using something else\n"));
        assertEquals("error: x\n" + warning, forward("error: x\n" + warning));
        assertEquals("WARNING: Using incubator", forward("WARNING: Using incubator"));
    }
}
