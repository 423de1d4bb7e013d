package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;


/** The emulator's own checks catch what they claim to: here, a divergent {@code __syncthreads}. */
class CudaEmulatorChecksTest {

    private record Outcome(int status, String log) {
    }

    private static Outcome run(Path binary, String... args) throws Exception {
        var cmd = new java.util.ArrayList<String>();
        cmd.add(binary.toString());
        cmd.addAll(java.util.List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the planted kernel did not finish:\n" + log);
        return new Outcome(p.exitValue(), log);
    }

    @org.junit.jupiter.params.ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"os-threads", "fibers"})
    void barriersReachedFromDifferentCallSitesAbortNamingBoth(String mode) throws Exception {
        try (EmulationBuild gcc = new EmulationBuild("distillery-emu-checks")) {
            Path planted = mode.equals("fibers") ? gcc.build("planted_divergent_barrier.cpp", "planted", "-O1", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE")
                    : gcc.build("planted_divergent_barrier.cpp", "planted", "-O1");
            Outcome control = run(planted, "uniform");
            assertEquals(0, control.status(), control.log());
            assertTrue(control.log().contains("finished"), control.log());

            Outcome bug = run(planted);
            assertEquals(3, bug.status(), bug.log());
            assertTrue(bug.log().contains("different call sites"), bug.log());
            assertTrue(bug.log().contains("planted_divergent_barrier.cpp:14") && bug.log().contains("planted_divergent_barrier.cpp:16"),
                    bug.log());
        }
    }
}
