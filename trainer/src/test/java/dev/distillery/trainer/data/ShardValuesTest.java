package dev.distillery.trainer.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.Map;
import java.util.function.Consumer;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;

/**
 * Each mistake a shard writer makes is found before the first step, named by shard file,
 * sequence and position; shards written right pass.
 */
class ShardValuesTest {

    private static final int V = ShardFixtures.V, T = ShardFixtures.T, K = ShardFixtures.K, S = ShardFixtures.S;
    private static final double TEMPERATURE = ShardFixtures.TEMPERATURE;

    @TempDir
    Path dir;

    private Path shards(String kind, DType logitType, Consumer<Map<String, MemorySegment>> mutate) throws IOException {
        return ShardFixtures.write(dir, kind, logitType, mutate);
    }

    private Path shards(String kind, DType logitType, Consumer<Map<String, MemorySegment>> mutate, boolean everyShard) throws IOException {
        return ShardFixtures.write(dir, kind, logitType, mutate, everyShard, null);
    }

    private static ShardValues.Summary check(Path d) throws IOException {
        try (TeacherShards shards = TeacherShards.open(d, true)) {
            return ShardValues.check(shards, 2, new PrintWriter(new StringWriter()));
        }
    }

    private static String problem(Path d) {
        return assertThrows(IOException.class, () -> check(d)).getMessage();
    }

    /** Row r = sequence 1, position 2 of the second shard. */
    private static final int ROW = T + 2;

    @Test
    void shardsWrittenRightPassAndCountEveryPosition() throws IOException {
        for (String kind : new String[]{"dense", "topk", "sampled"}) {
            for (DType type : new DType[]{DType.F32, DType.BF16, DType.F16}) {
                ShardValues.Summary s = check(shards(kind, type, t -> { }));
                assertEquals(2L * S * T, s.rows(), kind + " " + type);
                assertEquals(0, s.rowsWithoutTail(), kind + " " + type);
            }
        }
    }

    @Test
    void nonFiniteLogitsAndOutOfRangeInputIdsAreNamedWithTheirPlace() throws IOException {
        for (DType type : new DType[]{DType.F32, DType.BF16, DType.F16}) {
            String m = problem(shards("dense", type, t -> type.write(t.get("logits"), (long) ROW * V + 17, Float.POSITIVE_INFINITY)));
            assertTrue(m.endsWith("shard-1.safetensors, sequence 1, position 2: logits: token 17 is Infinity; teacher logits must be finite"), m);
        }
        String m = problem(shards("topk", DType.BF16, t -> t.get("logsumexp").setAtIndex(ValueLayout.JAVA_FLOAT, ROW, Float.NaN)));
        assertTrue(m.endsWith("sequence 1, position 2: logsumexp: NaN; it must be finite"), m);
        m = problem(shards("dense", DType.F32, t -> t.get("input_ids").setAtIndex(ValueLayout.JAVA_INT, ROW, V)));
        assertTrue(m.endsWith("shard-1.safetensors, sequence 1, position 2: input_ids: token id 50 is outside the vocabulary [0, 50)"), m);
    }

    @Test
    void topKIdsOutOfRangeOrRepeatedAreNamed() throws IOException {
        String m = problem(shards("topk", DType.BF16, t -> t.get("topk_ids").setAtIndex(ValueLayout.JAVA_INT, (long) ROW * K + 3, -1)));
        assertTrue(m.endsWith("position 2: topk_ids: entry 3 is -1, outside the vocabulary [0, 50)"), m);
        m = problem(shards("topk", DType.BF16, t -> t.get("topk_ids").setAtIndex(ValueLayout.JAVA_INT, (long) ROW * K + 2,
                t.get("topk_ids").getAtIndex(ValueLayout.JAVA_INT, (long) ROW * K))));
        assertTrue(m.contains("sequence 1, position 2: topk_ids: id ") && m.endsWith("is listed twice (entries 0 and 2); top-k ids must be distinct"), m);
    }

    @Test
    void aLogsumexpAtTheWrongTemperatureIsNamedWithTheLikelyCause() throws IOException {
        // The logsumexp of the logits at T = 1 where the manifest says 2: every row's top-k mass exceeds 1.
        String m = problem(shards("topk", DType.BF16, t -> {
            double sum = 46;
            for (int j = 0; j < K; j++) sum += Math.exp(10 - j);
            for (int r = 0; r < S * T; r++) t.get("logsumexp").setAtIndex(ValueLayout.JAVA_FLOAT, r, (float) (Math.log(sum) / 2));
        }));
        assertTrue(m.contains("shard-1.safetensors, sequence 0, position 0: topk_logits: the top-4 probabilities"), m);
        assertTrue(m.contains("more than 1 beyond what rounding explains") && m.contains("at the manifest's temperature 2.0"), m);
    }

    @Test
    void roundingToBf16AloneIsNotAnError() throws IOException {
        // A top-1 holding nearly all the mass: its bf16 logit rounds up by up to half an ulp, and the mass may then pass 1.
        Path d = shards("topk", DType.BF16, t -> {
            for (int r = 0; r < S * T; r++) {
                for (int j = 0; j < K; j++) DType.BF16.write(t.get("topk_logits"), (long) r * K + j, j == 0 ? 30.1f : -40);
                t.get("logsumexp").setAtIndex(ValueLayout.JAVA_FLOAT, r, 30.1f / (float) TEMPERATURE);
            }
        });
        assertTrue(Math.exp(30.125 / TEMPERATURE - 30.1f / TEMPERATURE) > 1 + 1e-3, "bf16 rounds 30.1 up to 30.125: a mass above 1");
        ShardValues.Summary s = check(d);
        assertEquals(S * T, s.rowsWithoutTail(), "the second shard's rows leave no tail");
    }

    @Test
    void aLogsumexpOverTheTopKOnlyIsWarnedAbout() throws IOException {
        Consumer<Map<String, MemorySegment>> topKOnly = t -> {
            double sum = 0;
            for (int j = 0; j < K; j++) sum += Math.exp((10 - j) / TEMPERATURE);
            for (int r = 0; r < S * T; r++) t.get("logsumexp").setAtIndex(ValueLayout.JAVA_FLOAT, r, (float) Math.log(sum));
        };
        Path d = shards("topk", DType.F32, topKOnly);
        try (TeacherShards shards = TeacherShards.open(d, true)) {
            ShardValues.Summary s = ShardValues.check(shards, 2, new PrintWriter(new StringWriter()));
            assertEquals(S * T, s.rowsWithoutTail());
            assertNull(ShardValues.warning(s, shards.layout(), d.toString()), "the first shard has a tail: no warning");
        }
        // Every shard so written: a warning.
        Path both = shards("topk", DType.F32, topKOnly, true);
        try (TeacherShards shards = TeacherShards.open(both, true)) {
            ShardValues.Summary s = ShardValues.check(shards, 2, new PrintWriter(new StringWriter()));
            assertEquals(2L * S * T, s.rowsWithoutTail());
            String w = ShardValues.warning(s, shards.layout(), both.toString());
            assertNotNull(w);
            assertTrue(w.contains("a logsumexp taken over the top-k only gives this"), w);
        }
    }

    @Test
    void sampledWeightsMustBeFiniteNonNegativeAndSumToOne() throws IOException {
        String m = problem(shards("sampled", DType.F32, t -> t.get("sampled_weights").setAtIndex(ValueLayout.JAVA_FLOAT, (long) ROW * K, 0.5f)));
        assertTrue(m.endsWith("sequence 1, position 2: sampled_weights: the row's weights sum to 1.25, not 1; each position's weights must sum to 1"), m);
        m = problem(shards("sampled", DType.F32, t -> t.get("sampled_weights").setAtIndex(ValueLayout.JAVA_FLOAT, (long) ROW * K + 1, -0.25f)));
        assertTrue(m.endsWith("sampled_weights: entry 1 is -0.25; weights must be finite and >= 0"), m);
        m = problem(shards("sampled", DType.F32, t -> t.get("sampled_ids").setAtIndex(ValueLayout.JAVA_INT, (long) ROW * K + 1, 1000)));
        assertTrue(m.endsWith("sampled_ids: entry 1 is 1000, outside the vocabulary [0, 50)"), m);
    }
}
