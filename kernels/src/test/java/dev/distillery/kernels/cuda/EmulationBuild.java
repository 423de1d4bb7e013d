package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Assumptions;

/** Compiles an emulation gate ({@code cuda/src/test/emulation/*.cpp}) with g++ into a temporary folder. */
public final class EmulationBuild implements AutoCloseable {

    private final Path gpp = Path.of("/usr/bin/g++");
    private final Path emulation = Path.of("").toAbsolutePath().getParent().resolve("cuda/src/test/emulation");
    private final Path work;

    /** Skips the calling test class (saying why) where g++ is missing. */
    public EmulationBuild(String prefix) throws IOException {
        Assumptions.assumeTrue(Files.isExecutable(gpp), "g++ not found at /usr/bin/g++: the CUDA emulation gate needs it");
        work = Files.createTempDirectory(prefix);
    }

    public Path work() {
        return work;
    }

    /** g++ -std=c++20 {@code flags} {@code source} → {@code name}; fails the test with the compiler's output. */
    public Path build(String source, String name, String... flags) throws Exception {
        Path out = work.resolve(name);
        List<String> cmd = new ArrayList<>(List.of(gpp.toString(), "-std=c++20", "-g", "-pthread"));
        cmd.addAll(List.of(flags));
        cmd.addAll(List.of("-x", "c++", "-I", emulation.resolve("include").toString(), emulation.resolve(source).toString(),
                "-o", out.toString()));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        assertTrue(p.waitFor(300, TimeUnit.SECONDS) && p.exitValue() == 0, "g++ " + String.join(" ", flags) + " failed:\n" + log);
        return out;
    }

    @Override
    public void close() throws IOException {
        try (var files = Files.list(work)) {
            for (Path f : files.toList()) Files.deleteIfExists(f);
        }
        Files.deleteIfExists(work);
    }
}
