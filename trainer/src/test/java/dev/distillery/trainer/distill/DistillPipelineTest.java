package dev.distillery.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.trainer.cli.Main;
import dev.distillery.trainer.data.StrictJson;
import dev.distillery.trainer.data.TokenFile;

/**
 * Progressive distillation (a pipeline of stages, each taught by the one before) and the loss's
 * temperature and alpha schedules.
 */
class DistillPipelineTest {

    private static final int VOCAB = 97, SEQ = 16;

    @Test
    void temperatureAndAlphaFollowTheirScheduleFromTheFirstStepToTheLast() {
        DistillConfig.Loss linear = new DistillConfig.Loss(4.0, 0.8, null, null, null, null, null, null, null, "linear", 1.0, 0.2);
        DistillConfig.Loss cosine = new DistillConfig.Loss(4.0, 0.8, null, null, null, null, null, null, null, "cosine", 1.0, 0.2);
        assertEquals(4f, linear.optionsAt(1, 11).temperature());
        assertEquals(2.5f, linear.optionsAt(6, 11).temperature(), 1e-6);
        assertEquals(1f, linear.optionsAt(11, 11).temperature());
        assertEquals(0.5f, linear.optionsAt(6, 11).alpha(), 1e-6);
        assertEquals(0.2f, linear.optionsAt(11, 11).alpha(), 1e-6);
        // cosine: (1 - cos(pi x)) / 2 of the way, slow at both ends
        assertEquals(4 - 3 * (1 - Math.cos(Math.PI * 0.1)) / 2, cosine.optionsAt(2, 11).temperature(), 1e-6);
        assertEquals(2.5f, cosine.optionsAt(6, 11).temperature(), 1e-6);
        assertEquals(0.2f, cosine.optionsAt(11, 11).alpha(), 1e-6);
        DistillOptions constant = new DistillConfig.Loss(2.0, 0.5, null, null, null, null, null, null, null).optionsAt(7, 11);
        assertEquals(2f, constant.temperature());
        assertEquals(0.5f, constant.alpha());
    }

    @Test
    void aScheduleTheConfigCannotServeIsRefusedByItsKey() {
        String m = assertThrows(IllegalArgumentException.class,
                () -> new DistillConfig.Loss(2.0, 0.5, null, null, null, null, null, null, null, null, 1.0, null).options()).getMessage();
        assertTrue(m.contains("'loss.temperature_end' needs 'loss.schedule' linear or cosine"), m);
        m = assertThrows(IllegalArgumentException.class,
                () -> new DistillConfig.Loss(2.0, 0.5, null, null, null, null, null, null, null, "cosine", 2.0, 1.5).options()).getMessage();
        assertTrue(m.startsWith("'loss': alpha"), m);
        TeacherLayout topK = new TeacherLayout(TeacherTargets.Kind.TOP_K, DType.BF16, VOCAB, 8, 2f);
        m = assertThrows(IllegalArgumentException.class, () -> new DistillConfig.Loss(2.0, 0.5, null, null, null, null, null, null, null,
                "linear", 1.0, null).requireCompatible(topK, Path.of("manifest.json"))).getMessage();
        assertTrue(m.contains("'loss.temperature' is 2.0 to 1.0, but the top-k shards' logsumexp is at 2.0"), m);
    }

    /**
     * Three stages: the transformers Llama fixture teaches a Llama assistant in the process, the
     * assistant's last checkpoint teaches a smaller student, with a cosine schedule; a resumed
     * pipeline that had finished does nothing.
     */
    @Test
    void eachStageIsTaughtByTheLastCheckpointOfTheStageBeforeIt(@TempDir Path dir) throws Exception {
        Path teacher = Path.of(DistillPipelineTest.class.getResource("/dev/distillery/trainer/hf/llama-tiny").toURI());
        Rng rng = new Rng(3);
        for (String name : List.of("train.bin", "val.bin")) {
            int[] tokens = new int[8 * SEQ];
            for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(VOCAB);
            TokenFile.write(dir.resolve(name), tokens);
        }
        String tokens = "\"tokens\": \"" + dir.resolve("train.bin") + "\", \"eval_tokens\": \"" + dir.resolve("val.bin") + "\", \"seq_len\": " + SEQ;
        String common = "\"steps\": 3, \"batch_size\": 2, \"lr\": 0.01";
        Path file = dir.resolve("pipeline.json");
        Files.writeString(file, "{\"stages\": ["
                + "{\"teacher_model\": {\"path\": \"" + teacher + "\", " + tokens + "}, \"out\": \"" + dir.resolve("assistant") + "\", " + common
                + ", \"student\": {\"architecture\": \"llama\", \"layers\": 2, \"channels\": 32, \"heads\": 4, \"kv_heads\": 2}},"
                + "{\"teacher_model\": {" + tokens + "}, \"out\": \"" + dir.resolve("student") + "\", " + common
                + ", \"student\": {\"layers\": 1, \"channels\": 16, \"heads\": 2},"
                + " \"loss\": {\"temperature\": 3.0, \"temperature_end\": 1.0, \"alpha\": 0.0, \"alpha_end\": 0.5, \"schedule\": \"cosine\"}}]}");
        StringWriter out = new StringWriter(), err = new StringWriter();
        assertEquals(0, Main.execute(new String[]{"distill", "--pipeline", file.toString(), "--device", "cpu", "--threads", "1"},
                new PrintWriter(out, true), new PrintWriter(err, true)), err.toString());
        Path assistant = dir.resolve("assistant/checkpoints/step-00000003");
        assertTrue(out.toString().contains("== stage 2 of 2: " + dir.resolve("student") + ", taught by " + assistant), out.toString());
        assertTrue(out.toString().contains("teacher: " + assistant + ", run in the process (LlamaForCausalLM, 2 layers of 32"), out.toString());
        assertTrue(out.toString().contains("student: GPT-2, 1 layers of 16"), out.toString());
        List<JsonNode> train = Files.readAllLines(dir.resolve("student/metrics.jsonl")).stream().map(DistillPipelineTest::json)
                .filter(n -> n.path("kind").asText().equals("train")).toList();
        assertEquals(3.0, train.get(0).get("temperature").asDouble(), 1e-6);
        assertEquals(2.0, train.get(1).get("temperature").asDouble(), 1e-6);
        assertEquals(0.5, train.get(2).get("alpha").asDouble(), 1e-6);
        StringWriter again = new StringWriter();
        assertEquals(0, Main.execute(new String[]{"distill", "--pipeline", file.toString(), "--resume", "--device", "cpu", "--threads", "1"},
                new PrintWriter(again, true), new PrintWriter(err, true)), err.toString());
        assertEquals(2, again.toString().lines().filter(l -> l.startsWith("nothing to do")).count(), again.toString());
    }

    @Test
    void aLaterStageThatNamesItsOwnTeacherIsRefusedBeforeAnyStageRuns(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("pipeline.json");
        Files.writeString(file, "{\"stages\": [{\"teacher\": \"shards\", \"out\": \"a\"}, "
                + "{\"teacher_model\": {\"path\": \"elsewhere\", \"tokens\": \"t.bin\"}, \"out\": \"b\"}]}");
        StringWriter err = new StringWriter();
        assertEquals(Main.EXIT_FAILED, Main.execute(new String[]{"distill", "--pipeline", file.toString()}, new PrintWriter(new StringWriter()),
                new PrintWriter(err, true)));
        assertTrue(err.toString().contains("'stages[1].teacher_model.path' is set by the pipeline"), err.toString());
        assertTrue(!Files.exists(Path.of("a")), "nothing ran");
    }

    private static JsonNode json(String line) {
        try {
            return StrictJson.MAPPER.readTree(line);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }
}
