package dev.distillery.kernels.cpu.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.cpu.VectorOps;

/**
 * The constants the C rows (cpu/src/main/c/rows.h) share with the Java rows, read from the
 * C source and held to their Java twins bit for bit: a polynomial coefficient edited on one side
 * only would make the two rows disagree in the last bits, which NativeRowPassesTest's tolerance
 * would not catch.
 */
class SharedConstantsTest {

    private static final Path SOURCE = Path.of("").toAbsolutePath().getParent().resolve("cpu/src/main/c/rows.h");
    private static final Path ENTRIES = SOURCE.resolveSibling("distill_cpu.c");

    @Test
    void cConstantsEqualTheirJavaTwins() throws IOException {
        String c = Files.readString(SOURCE);
        Map<String, Number> java = new LinkedHashMap<>();
        Object[][] pairs = {{"BLOCK", FusedDistillLoss.BLOCK}, {"EXP2_FIELD_MAX", VectorOps.EXP2_FIELD_MAX}, {"RAISE", DenseRow.RAISE},
                {"LOG2E", VectorOps.LOG2E}, {"ROUND", VectorOps.ROUND}, {"EXP2_LO", VectorOps.EXP2_LO}, {"E1", VectorOps.E1},
                {"E2", VectorOps.E2}, {"E3", VectorOps.E3}, {"E4", VectorOps.E4}, {"E5", VectorOps.E5}, {"E6", VectorOps.E6},
                {"LOG_FLOOR", DenseReverseKl.LOG_FLOOR}, {"SQRT_HALF", VectorOps.SQRT_HALF}, {"L0", VectorOps.L0}, {"L1", VectorOps.L1},
                {"L2", VectorOps.L2}, {"L3", VectorOps.L3}, {"L4", VectorOps.L4}, {"L5", VectorOps.L5}, {"L6", VectorOps.L6},
                {"L7", VectorOps.L7}, {"L8", VectorOps.L8}, {"LN2_HI", VectorOps.LN2_HI}, {"LN2_LO", VectorOps.LN2_LO},
                {"MIX_SCALE", DenseJsd.MIX_SCALE}, {"LOG_MIX_SCALE", DenseJsd.LOG_MIX_SCALE}};
        for (Object[] p : pairs) java.put((String) p[0], (Number) p[1]);
        for (Map.Entry<String, Number> e : java.entrySet()) {
            String name = e.getKey();
            if (e.getValue() instanceof Integer expected) {
                Matcher m = Pattern.compile("#define " + name + " (\\d+)").matcher(c);
                assertTrue(m.find(), "no #define " + name + " in " + SOURCE);
                assertEquals(expected.intValue(), Integer.parseInt(m.group(1)), name);
            } else {
                Matcher m = Pattern.compile("\\b" + name + " = ([-+0-9a-fA-FxXpP.]+)f").matcher(c);
                assertTrue(m.find(), "no float constant " + name + " in " + SOURCE);
                float cValue = Float.parseFloat(m.group(1));
                assertEquals(Float.floatToRawIntBits(e.getValue().floatValue()), Float.floatToRawIntBits(cValue),
                        name + ": C " + m.group(1) + " vs Java " + e.getValue());
            }
        }
    }

    /** The interface version the binding expects is the one the C file exports. */
    @Test
    void abiVersionMatchesTheBinding() throws IOException {
        Matcher m = Pattern.compile("int distillery_cpu_abi\\(void\\) \\{ return (\\d+); }").matcher(Files.readString(ENTRIES));
        assertTrue(m.find(), "no distillery_cpu_abi in " + ENTRIES);
        assertEquals(DistilleryCpu.ABI, Integer.parseInt(m.group(1)));
    }

    /** distillery_rows_kind()'s answers are the binding's ROWS_ constants. */
    @Test
    void rowsKindsMatchTheBinding() throws IOException {
        String c = Files.readString(SOURCE);
        for (Object[] kind : new Object[][]{{"ROWS_NONE", DistilleryCpu.ROWS_NONE}, {"ROWS_AVX2", DistilleryCpu.ROWS_AVX2},
                {"ROWS_AVX512", DistilleryCpu.ROWS_AVX512}}) {
            Matcher m = Pattern.compile("\\b" + kind[0] + " = (\\d+)").matcher(c);
            assertTrue(m.find(), "no " + kind[0] + " in " + SOURCE);
            assertEquals(kind[1], Integer.parseInt(m.group(1)), (String) kind[0]);
        }
    }
}
