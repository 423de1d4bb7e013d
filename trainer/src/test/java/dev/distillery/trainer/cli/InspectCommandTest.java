package dev.distillery.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;
import dev.distillery.runtime.io.SafetensorsWriter;
import dev.distillery.trainer.data.TokenFile;

class InspectCommandTest {

    @TempDir
    Path dir;

    private static String[] run(String... args) {
        StringWriter out = new StringWriter(), err = new StringWriter();
        int status = Main.execute(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new String[]{String.valueOf(status), out.toString(), err.toString()};
    }

    @Test
    void showsSafetensorsTensorsAndMetadata() throws Exception {
        Path f = dir.resolve("m.safetensors");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment w = arena.allocateFrom(ValueLayout.JAVA_FLOAT, 1, 2, 3, 4, 5, 6);
            SafetensorsWriter.write(f, List.of(new SafetensorsWriter.Item("wte.weight", DType.F32, new int[]{2, 3}, w)),
                    Map.of("format", "pt"));
        }
        String[] r = run("inspect", f.toString());
        assertEquals("0", r[0], r[2]);
        assertTrue(r[1].contains("wte.weight") && r[1].contains("[2, 3]") && r[1].contains("metadata format = pt"), r[1]);
    }

    @Test
    void showsTokenFiles() throws Exception {
        Path f = dir.resolve("t.bin");
        TokenFile.write(f, new int[]{5, 6, 7});
        String[] r = run("inspect", f.toString());
        assertEquals("0", r[0], r[2]);
        assertTrue(r[1].contains("3 tokens, uint16") && r[1].contains("[5, 6, 7]"), r[1]);
    }

    @Test
    void aCorruptFileIsOneLineNamingIt() throws Exception {
        Path f = dir.resolve("bad.safetensors");
        Files.write(f, new byte[]{9, 0, 0, 0, 0, 0, 0, 0, '{'});
        String[] r = run("inspect", f.toString());
        assertEquals(String.valueOf(Main.EXIT_FAILED), r[0]);
        assertEquals(1, r[2].strip().lines().count(), r[2]);
        assertTrue(r[2].contains("bad.safetensors"), r[2]);
    }
}
