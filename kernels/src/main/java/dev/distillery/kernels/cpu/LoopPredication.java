package dev.distillery.kernels.cpu;

import java.lang.management.ManagementFactory;

import com.sun.management.HotSpotDiagnosticMXBean;

/**
 * Whether this JVM runs C2's profiled loop predication, which the CPU kernels' Vector-API loops
 * should run without ({@code -XX:-UseProfiledLoopPredicate}): with it, a loop over memory
 * segments can be compiled with a predicate that the next call fails, deoptimized, compiled the
 * same way again, and run between compilations in the interpreter, on the Vector API's Java
 * fallbacks; AdamW ran 17–100× slower that way
 * (docs/KERNELS.md#vector-api-loops-and-the-jit). The trainer, the tests and the benchmarks start
 * their JVMs without it.
 */
final class LoopPredication {

    /** The JVM option that turns it off. */
    static final String OFF = "-XX:-UseProfiledLoopPredicate";

    private static final boolean ON = on();

    private LoopPredication() {
    }

    /** A note for a backend's description when it is on, else null. */
    static String note() {
        return ON ? "run with " + OFF + ": profiled loop predication is on, and it can leave the Vector-API kernels interpreted" : null;
    }

    private static boolean on() {
        try {
            HotSpotDiagnosticMXBean hotspot = ManagementFactory.getPlatformMXBean(HotSpotDiagnosticMXBean.class);
            return hotspot != null && Boolean.parseBoolean(hotspot.getVMOption("UseProfiledLoopPredicate").getValue());
        } catch (IllegalArgumentException | UnsupportedOperationException | LinkageError e) {
            return false;   // not HotSpot's C2 (no such option), or a runtime image without jdk.management
        }
    }
}
