package dev.distillery.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;

class DistillConfigTest {

    private static String message(Path dir, String json) throws IOException {
        Path f = dir.resolve("run.json");
        Files.writeString(f, json);
        return assertThrows(IOException.class, () -> DistillConfig.read(f)).getMessage();
    }

    @Test
    void unknownKeysAreNamedWithTheirPath(@TempDir Path dir) throws IOException {
        String top = message(dir, "{\"teacher\": \"t\", \"stpes\": 10}");
        assertTrue(top.contains("unknown key 'stpes'") && top.contains("run.json"), top);
        String nested = message(dir, "{\"teacher\": \"t\", \"loss\": {\"temprature\": 2}}");
        assertTrue(nested.contains("unknown key 'loss.temprature'"), nested);
    }

    @Test
    void anUnknownKeySuggestsTheNearestAndListsTheKnownInOrder(@TempDir Path dir) throws IOException {
        String typo = message(dir, "{\"teacher\": \"t\", \"loss\": {\"temprature\": 2}}");
        assertTrue(typo.contains("did you mean 'temperature'?"), typo);
        String known = typo.substring(typo.indexOf("known here: ") + "known here: ".length(), typo.lastIndexOf(')'));
        List<String> keys = List.of(known.split(", "));
        assertEquals(keys.stream().sorted().toList(), keys, typo);
        assertTrue(keys.contains("alpha") && keys.contains("divergence"), typo);
        String far = message(dir, "{\"teacher\": \"t\", \"colour\": \"blue\"}");
        assertFalse(far.contains("did you mean"), far);
        assertTrue(message(dir, "{\"teacher\": \"t\", \"grad_clp\": 1}").contains("did you mean 'grad_clip'?"));
    }

    @Test
    void badValuesNameTheKey(@TempDir Path dir) throws IOException {
        assertTrue(message(dir, "{}").contains("'teacher' is required"));
        assertTrue(message(dir, "{\"teacher\": \"t\", \"steps\": 0}").contains("'steps' must be >= 1"));
        assertTrue(message(dir, "{\"teacher\": \"t\", \"loss\": {\"alpha\": 1.5}}").contains("alpha must be in [0, 1]"));
        assertTrue(message(dir, "{\"teacher\": \"t\", \"loss\": {\"temperature\": -1}}").contains("temperature"));
        assertTrue(message(dir, "{\"teacher\": \"t\", \"loss\": {\"divergence\": \"kl\"}}").contains("'loss.divergence'"));
        assertTrue(message(dir, "{\"teacher\": \"t\", \"steps\": \"many\"}").contains("run.json"));
    }

    @Test
    void resumingWithAnotherConfigSaysWhatChanged() throws IOException {
        DistillConfig a = DistillConfig.fromJson("{\"teacher\": \"t\", \"lr\": 0.001, \"loss\": {\"alpha\": 0.5}}");
        DistillConfig b = DistillConfig.fromJson("{\"teacher\": \"t\", \"lr\": 0.002, \"loss\": {\"alpha\": 0.5}, \"student\": {\"layers\": 4}}");
        assertEquals(java.util.List.of(), a.changesSince(a.toJson()));
        var changes = b.changesSince(a.toJson());
        assertTrue(changes.stream().anyMatch(c -> c.startsWith("'lr' was 0.001") && c.endsWith("is 0.002 now")), changes.toString());
        assertTrue(changes.stream().anyMatch(c -> c.startsWith("'min_lr'")), "min_lr follows lr by default: " + changes);
        assertTrue(changes.stream().anyMatch(c -> c.startsWith("'student.layers'") && c.contains("ignored")), changes.toString());
    }

    /** The example in docs/examples is a valid config. */
    @Test
    void theDocumentedExampleConfigReads() throws IOException {
        Path example = Path.of("").toAbsolutePath().getParent().resolve("docs/examples/distill-demo.json");
        DistillConfig c = DistillConfig.read(example);
        assertEquals("runs/demo/shards/train", c.teacher());
        assertTrue(c.loss().options().alpha() > 0);
    }

    @Test
    void absentKeysTakeTheDocumentedDefaults(@TempDir Path dir) throws IOException {
        Path f = dir.resolve("run.json");
        Files.writeString(f, "{\"teacher\": \"shards\", \"loss\": {\"divergence\": \"jsd\", \"jsd_beta\": 0.25, \"temperature\": 2}}");
        DistillConfig c = DistillConfig.read(f);
        assertEquals(1000, c.steps());
        assertEquals(8, c.batchSize());
        assertEquals(1e-4, c.minLr(), 1e-12);
        DistillOptions o = c.loss().options();
        assertEquals(new Divergence.Jsd(0.25), o.divergence());
        assertEquals(2f, o.temperature());
        assertEquals(0.5f, o.alpha());
        assertTrue(o.scaleByTemperatureSquared());
        assertEquals(DistillOptions.TopKMode.TAIL_BUCKET, o.topKMode());
        assertEquals(false, c.recomputeAttention());
        assertEquals(c, DistillConfig.fromJson(c.toJson()), "the stored config reads back equal");
        Files.writeString(f, "{\"teacher\": \"shards\", \"recompute_attention\": true}");
        assertEquals(true, DistillConfig.read(f).recomputeAttention());
    }

    @Test
    void onPolicyBatchesUseTheirOwnDivergenceForwardKlUnlessTold(@TempDir Path dir) throws IOException {
        String head = "{\"teacher_model\": {\"path\": \"m\", \"tokens\": \"t.bin\"}, \"loss\": {\"divergence\": \"jsd\"}, \"on_policy\": {\"max_new_tokens\": 4";
        Path f = dir.resolve("run.json");
        Files.writeString(f, head + "}}");
        assertEquals(new Divergence.ForwardKl(), DistillConfig.read(f).onPolicy().divergenceKind(), "not the step's jsd");
        Files.writeString(f, head + ", \"divergence\": \"jsd\", \"jsd_beta\": 0.9}}");
        assertEquals(new Divergence.Jsd(0.9), DistillConfig.read(f).onPolicy().divergenceKind());
        Files.writeString(f, head + ", \"divergence\": \"reverse_kl\"}}");
        assertEquals(new Divergence.ReverseKl(), DistillConfig.read(f).onPolicy().divergenceKind());
        for (String[] bad : new String[][]{{", \"divergence\": \"tvd\"", "'on_policy.divergence' must be forward_kl, reverse_kl or jsd, got tvd"},
                {", \"divergence\": \"jsd\", \"jsd_beta\": 1", "'on_policy.jsd_beta' must be in (0, 1)"}}) {
            Files.writeString(f, head + bad[0] + "}}");
            IOException e = assertThrows(IOException.class, () -> DistillConfig.read(f));
            assertTrue(e.getMessage().contains(bad[1]) && e.getMessage().contains("run.json"), e.getMessage());
        }
    }
}
