package dev.distillery.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * StepServer's line protocol, which paired_steps.py reads: "ready ..." first, then one line a
 * count with that many positive step times, on the smallest student; a line that is not a count
 * is refused by what it held.
 */
class StepServerTest {

    private static TrainingStepBenchmark tiny(String loss) {
        return StepServer.benchmark("TINY", "fp32", loss, "keep", 1);
    }

    @ParameterizedTest
    @ValueSource(strings = {"ce", "distill"})
    void eachCountGetsALineOfThatManyStepTimes(String loss) throws Exception {
        TrainingStepBenchmark b = tiny(loss);
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try {
            StepServer.serve(b, new BufferedReader(new StringReader("3\n1\n")), new PrintStream(bytes, true, StandardCharsets.UTF_8));
        } finally {
            b.tearDown();
        }
        String[] lines = bytes.toString(StandardCharsets.UTF_8).split("\n");
        assertEquals(3, lines.length, String.join(" | ", lines));
        assertTrue(lines[0].startsWith("ready distillery config TINY fp32 " + loss), lines[0]);
        int[] counts = {3, 1};
        for (int i = 0; i < counts.length; i++) {
            String[] times = lines[i + 1].trim().split(" ");
            assertEquals(counts[i], times.length, lines[i + 1]);
            for (String t : times) assertTrue(Double.parseDouble(t) > 0, lines[i + 1]);
        }
    }

    @Test
    void aLineThatIsNotACountIsRefusedByName() {
        TrainingStepBenchmark b = tiny("ce");
        try {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> StepServer.serve(b,
                    new BufferedReader(new StringReader("two\n")), new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8)));
            assertTrue(e.getMessage().contains("'two'"), e.getMessage());
        } finally {
            b.tearDown();
        }
    }
}
