package dev.distillery.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.trainer.cli.Main;
import dev.distillery.trainer.data.StrictJson;
import dev.distillery.trainer.data.TokenFile;

/**
 * {@code teacher_model}: a Llama teacher (the transformers fixture) run in the process on windows
 * of a token file, against the same teacher's dense f32 shards of the same windows. With one seed
 * the two runs see the same batches, so their losses agree step by step to float32 accuracy and
 * their held-out numbers too; a run stopped and resumed ends bit-identical to one that was not.
 */
class InProcessTeacherRunTest {

    private static final int SEQ = 16, WINDOWS = 12, VOCAB = 97;

    @Test
    void aTeacherRunInTheProcessTrainsAsItsStoredLogitsDoAndResumesExactly(@TempDir Path dir) throws Exception {
        Path teacher = Path.of(InProcessTeacherRunTest.class.getResource("/dev/distillery/trainer/hf/llama-tiny").toURI());
        Rng rng = new Rng(5);
        for (String name : List.of("train.bin", "val.bin")) {
            int[] tokens = new int[(name.equals("train.bin") ? WINDOWS : 4) * SEQ + 3];
            for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(VOCAB);
            TokenFile.write(dir.resolve(name), tokens);
            assertEquals(0, run("teacher", "dump-logits", "--teacher", teacher.toString(), "--tokens", dir.resolve(name).toString(), "--out",
                    dir.resolve("shards-" + name).toString(), "--targets", "dense", "--dtype", "f32", "--seq-len", Integer.toString(SEQ)));
        }
        String common = "\"steps\": 4, \"batch_size\": 4, \"lr\": 0.01, \"eval_every\": 2, \"seed\": 7, "
                + "\"student\": {\"architecture\": \"llama\", \"layers\": 1, \"channels\": 16, \"heads\": 2}, \"loss\": {\"temperature\": 2.0, \"alpha\": 0.3}";
        Path stored = config(dir, "stored", "\"teacher\": \"" + dir.resolve("shards-train.bin") + "\", \"eval_teacher\": \""
                + dir.resolve("shards-val.bin") + "\", " + common);
        String model = "\"teacher_model\": {\"path\": \"" + teacher + "\", \"tokens\": \"" + dir.resolve("train.bin") + "\", \"eval_tokens\": \""
                + dir.resolve("val.bin") + "\", \"seq_len\": " + SEQ + "}, " + common;
        Path live = config(dir, "live", model), split = config(dir, "split", model);
        StringWriter out = new StringWriter();
        assertEquals(0, run(out, "distill", "--config", stored.toString()));
        assertEquals(0, run(out = new StringWriter(), "distill", "--config", live.toString()));
        assertTrue(out.toString().contains("run in the process (LlamaForCausalLM, 2 layers of 48") && out.toString().contains("its logits "),
                out.toString());
        List<JsonNode> a = records(dir.resolve("stored")), b = records(dir.resolve("live"));
        assertEquals(a.size(), b.size());
        for (int i = 0; i < a.size(); i++) {
            JsonNode x = a.get(i), y = b.get(i);
            assertEquals(x.get("kind").asText(), y.get("kind").asText());
            for (String key : x.get("kind").asText().equals("train") ? List.of("loss", "ce", "divergence", "grad_norm") : List.of("ce", "kl", "agreement")) {
                double p = x.get(key).asDouble(), q = y.get(key).asDouble();
                assertEquals(p, q, 1e-4 * Math.max(1e-3, Math.abs(p)), "step " + x.get("step") + " " + key);
            }
        }
        // both students side by side with the teacher: eval --compare
        StringWriter table = new StringWriter();
        assertEquals(0, run(table, "eval", "--compare", dir.resolve("live/checkpoints/step-00000004").toString(),
                dir.resolve("stored/checkpoints/step-00000004").toString(), "--teacher", teacher.toString(), "--tokens",
                dir.resolve("val.bin").toString(), "--out", dir.resolve("compare").toString(), "--generate", "8", "--batch", "2"));
        List<String> rows = Files.readAllLines(dir.resolve("compare/compare.md"));
        assertEquals(2 + 3, rows.size(), String.join("\n", rows));
        assertTrue(rows.get(2).startsWith("| " + teacher) && rows.get(2).contains("| 0.0000 | 100.0% |"), rows.get(2));
        assertTrue(rows.get(3).contains("step-00000004") && !rows.get(3).contains("| 0.0000 |"), rows.get(3));
        assertTrue(Files.size(dir.resolve("compare/compare.png")) > 1000);
        assertTrue(table.toString().contains(rows.get(3)), table.toString());
        // stopped after step 2 and resumed: the same parameters, bit for bit, as the run that was not
        assertEquals(0, run("distill", "--config", split.toString(), "--stop-after", "2"));
        assertEquals(0, run("distill", "--config", split.toString(), "--resume"));
        try (CpuKernels kernels = new CpuKernels(1, "auto");
             LanguageModel p = ModelFiles.read(dir.resolve("live/checkpoints/step-00000004"), kernels);
             LanguageModel q = ModelFiles.read(dir.resolve("split/checkpoints/step-00000004"), kernels)) {
            for (var t : p.parameters().parameters()) {
                assertEquals(-1, t.data().mismatch(q.parameters().get(t.name()).data()), t.name() + " after an interrupted run");
            }
        }
    }

    /**
     * On-policy (GKD): every micro-batch continued by the student's own samples, the loss only on
     * the sampled positions (batch × max_new_tokens rows), and a run stopped and resumed samples
     * and ends exactly as one that was not.
     */
    @Test
    void onPolicyBatchesCountTheSampledPositionsAndResumeExactly(@TempDir Path dir) throws Exception {
        Path teacher = Path.of(InProcessTeacherRunTest.class.getResource("/dev/distillery/trainer/hf/llama-tiny").toURI());
        Rng rng = new Rng(6);
        int[] tokens = new int[WINDOWS * SEQ];
        for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(VOCAB);
        TokenFile.write(dir.resolve("train.bin"), tokens);
        String body = "\"teacher_model\": {\"path\": \"" + teacher + "\", \"tokens\": \"" + dir.resolve("train.bin") + "\", \"seq_len\": " + SEQ
                + "}, \"on_policy\": {\"fraction\": 1.0, \"max_new_tokens\": 6, \"temperature\": 1.0}, \"steps\": 4, \"batch_size\": 2, "
                + "\"grad_accum\": 2, \"lr\": 0.01, \"seed\": 3, \"student\": {\"architecture\": \"llama\", \"layers\": 1, \"channels\": 16, \"heads\": 2}";
        Path whole = config(dir, "whole", body), split = config(dir, "split", body);
        assertEquals(0, run("distill", "--config", whole.toString()));
        for (JsonNode r : records(dir.resolve("whole"))) {
            assertEquals(2, r.get("on_policy_batches").asInt(), r.toString());
            assertEquals(2 * 2 * 6, r.get("on_policy_rows").asInt(), "two micro-batches of 2 windows, 6 sampled positions each: " + r);
            assertTrue(Double.isFinite(r.get("loss").asDouble()) && r.get("loss").asDouble() == r.get("divergence").asDouble(),
                    "the divergence alone (alpha 0 on sampled tokens): " + r);
        }
        assertEquals(0, run("distill", "--config", split.toString(), "--stop-after", "2"));
        assertEquals(0, run("distill", "--config", split.toString(), "--resume"));
        try (CpuKernels kernels = new CpuKernels(1, "auto");
             LanguageModel p = ModelFiles.read(dir.resolve("whole/checkpoints/step-00000004"), kernels);
             LanguageModel q = ModelFiles.read(dir.resolve("split/checkpoints/step-00000004"), kernels)) {
            for (var t : p.parameters().parameters()) {
                assertEquals(-1, t.data().mismatch(q.parameters().get(t.name()).data()), t.name() + " after an interrupted on-policy run");
            }
        }
        StringWriter err = new StringWriter();
        Path bad = config(dir, "bad", "\"teacher\": \"shards\", \"on_policy\": {\"max_new_tokens\": 4}");
        assertEquals(Main.EXIT_FAILED, Main.execute(new String[]{"distill", "--config", bad.toString()}, new PrintWriter(new StringWriter()),
                new PrintWriter(err, true)));
        assertTrue(err.toString().contains("'on_policy' needs 'teacher_model'"), err.toString());
    }

    /**
     * Hidden-state distillation from shards that carry the teacher's states (dump-logits
     * --hidden-layers, bf16) and from the same teacher run in the process (fp32): the feature
     * loss agrees at step 1 to bf16 accuracy and falls in both; the projections live in the trainer
     * state, not in the student's weights, and a run stopped and resumed ends bit-identical.
     */
    @Test
    void hiddenStatesFromShardsOrFromTheTeacherInTheProcessTrainAndResumeExactly(@TempDir Path dir) throws Exception {
        Path teacher = Path.of(InProcessTeacherRunTest.class.getResource("/dev/distillery/trainer/hf/llama-tiny").toURI());
        Rng rng = new Rng(8);
        int[] tokens = new int[WINDOWS * SEQ];
        for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(VOCAB);
        TokenFile.write(dir.resolve("train.bin"), tokens);
        StringWriter dumped = new StringWriter();
        assertEquals(0, run(dumped, "teacher", "dump-logits", "--teacher", teacher.toString(), "--tokens", dir.resolve("train.bin").toString(),
                "--out", dir.resolve("shards").toString(), "--targets", "dense", "--dtype", "f32", "--seq-len", Integer.toString(SEQ),
                "--hidden-layers", "1,2"));
        assertTrue(dumped.toString().contains("hidden states [1, 2] in bf16"), dumped.toString());
        String common = "\"steps\": 8, \"batch_size\": 4, \"lr\": 0.01, \"seed\": 7, \"checkpoint_every\": 2, "
                + "\"student\": {\"architecture\": \"llama\", \"layers\": 1, \"channels\": 16, \"heads\": 2}, \"loss\": {\"alpha\": 0.3}, "
                + "\"hidden_states\": {\"pairs\": [[1, 1], [1, 2]], \"distance\": \"mse\", \"weight\": 0.5}";
        Path stored = config(dir, "stored", "\"teacher\": \"" + dir.resolve("shards") + "\", " + common);
        String model = "\"teacher_model\": {\"path\": \"" + teacher + "\", \"tokens\": \"" + dir.resolve("train.bin") + "\", \"seq_len\": " + SEQ
                + "}, " + common;
        Path live = config(dir, "live", model), split = config(dir, "split", model);
        StringWriter out = new StringWriter();
        assertEquals(0, run(out, "distill", "--config", stored.toString()));
        assertTrue(out.toString().contains("hidden states: mse of 2 pairs (student width 16 -> teacher width 48"), out.toString());
        assertEquals(0, run("distill", "--config", live.toString()));
        List<JsonNode> a = records(dir.resolve("stored")), b = records(dir.resolve("live"));
        double first = a.getFirst().get("feature").asDouble();
        assertEquals(first, b.getFirst().get("feature").asDouble(), 2e-2 * first, "step 1's feature loss, bf16 states against fp32");
        for (List<JsonNode> run : List.of(a, b)) {
            double f1 = run.getFirst().get("feature").asDouble(), f8 = run.getLast().get("feature").asDouble();
            assertTrue(f8 < 0.8 * f1, "the feature loss falls: " + f1 + " -> " + f8);
            JsonNode r = run.getFirst();
            assertEquals(0.3 * r.get("ce").asDouble() + 0.7 * r.get("divergence").asDouble() + 0.5 * r.get("feature").asDouble(),
                    r.get("loss").asDouble(), 1e-5, "total = alpha ce + (1 - alpha) divergence + weight feature: " + r);
        }
        Path ckpt = dir.resolve("live/checkpoints/step-00000008");
        try (var st = dev.distillery.runtime.io.SafetensorsFile.open(ckpt.resolve("trainer_state.safetensors"));
             var weights = dev.distillery.runtime.io.SafetensorsFile.open(ckpt.resolve("model.safetensors"))) {
            assertTrue(st.contains("feature_projections.1.weight") && st.contains("feature_projections.adam.m"), "projections and moments kept");
            assertTrue(!weights.contains("feature_projections.0.weight"), "the student's weights hold no projection");
        }
        assertEquals(0, run("distill", "--config", split.toString(), "--stop-after", "4"));
        assertEquals(0, run("distill", "--config", split.toString(), "--resume"));
        try (CpuKernels kernels = new CpuKernels(1, "auto");
             LanguageModel p = ModelFiles.read(ckpt, kernels);
             LanguageModel q = ModelFiles.read(dir.resolve("split/checkpoints/step-00000008"), kernels)) {
            for (var t : p.parameters().parameters()) {
                assertEquals(-1, t.data().mismatch(q.parameters().get(t.name()).data()), t.name() + " after an interrupted run");
            }
        }
        // refused before step 1, by key
        for (String[] c : new String[][]{
                {"\"teacher\": \"" + dir.resolve("shards") + "\", \"hidden_states\": {\"pairs\": [[1, 0]]}",
                        "'hidden_states.pairs' reads the teacher's hidden state 0, but the shards of"},
                {model.replace("[[1, 1], [1, 2]]", "[[2, 1]]"), "'hidden_states.pairs': student hidden state 2 does not exist"},
                {model.replace("[[1, 1], [1, 2]]", "[[1, 3]]"), "'hidden_states.pairs': teacher hidden state 3 does not exist"},
                {model.replace("\"distance\": \"mse\"", "\"distance\": \"l1\""), "'hidden_states.distance' must be mse or cosine"},
                {model + ", \"on_policy\": {\"max_new_tokens\": 4}", "'hidden_states' and 'on_policy' cannot be combined"}}) {
            StringWriter err = new StringWriter();
            assertEquals(Main.EXIT_FAILED, Main.execute(new String[]{"distill", "--config", config(dir, "bad" + c[1].length(), c[0]).toString(),
                    "--device", "cpu"}, new PrintWriter(new StringWriter()), new PrintWriter(err, true)), err.toString());
            assertTrue(err.toString().contains(c[1]), c[1] + " in: " + err);
        }
    }

    /**
     * Several teachers: a teacher with a copy of itself (its dense shards and its model run in the
     * process) trains step for step as the teacher alone, as a mean of losses and as a mixture;
     * three different teachers (Llama shards, Qwen2 and GPT-2 run in the process) mixed train and
     * resume bit-identically; impossible combinations are refused by key before step 1.
     */
    @Test
    void severalTeachersTrainAsTheirDefinitionsSayAndResumeExactly(@TempDir Path dir) throws Exception {
        Path hf = Path.of(InProcessTeacherRunTest.class.getResource("/dev/distillery/trainer/hf").toURI());
        Rng rng = new Rng(9);
        for (String name : List.of("train.bin", "other.bin")) {
            int[] tokens = new int[WINDOWS * SEQ];
            for (int i = 0; i < tokens.length; i++) tokens[i] = rng.nextInt(VOCAB);
            TokenFile.write(dir.resolve(name), tokens);
        }
        for (String[] d : new String[][]{{"dense", "train.bin"}, {"topk", "train.bin"}, {"dense", "other.bin"}}) {
            assertEquals(0, run("teacher", "dump-logits", "--teacher", hf.resolve("llama-tiny").toString(), "--tokens", dir.resolve(d[1]).toString(),
                    "--out", dir.resolve(d[0] + "-" + d[1]).toString(), "--targets", d[0], "--k", "8", "--dtype", "f32", "--seq-len", Integer.toString(SEQ)));
        }
        String common = "\"teacher\": \"" + dir.resolve("dense-train.bin") + "\", \"steps\": 4, \"batch_size\": 4, \"lr\": 0.01, \"seed\": 7, "
                + "\"checkpoint_every\": 2, \"student\": {\"architecture\": \"llama\", \"layers\": 1, \"channels\": 16, \"heads\": 2}, "
                + "\"loss\": {\"temperature\": 2.0, \"alpha\": 0.3, \"divergence\": \"jsd\"}";
        String copy = ", \"teachers\": [{\"model\": \"" + hf.resolve("llama-tiny") + "\", \"weight\": 3}]";
        assertEquals(0, run("distill", "--config", config(dir, "alone", common).toString()));
        for (String combination : List.of("mean", "mixture")) {
            StringWriter out = new StringWriter();
            assertEquals(0, run(out, "distill", "--config", config(dir, combination, common + copy + ", \"teachers_combination\": \"" + combination + "\"")
                    .toString()));
            assertTrue(out.toString().contains("teachers: " + combination + " of 2, weights 0.25"), out.toString());
            List<JsonNode> a = records(dir.resolve("alone")), b = records(dir.resolve(combination));
            for (int i = 0; i < a.size(); i++) {
                for (String key : List.of("loss", "ce", "divergence", "grad_norm")) {
                    double p = a.get(i).get(key).asDouble(), q = b.get(i).get(key).asDouble();
                    assertEquals(p, q, 1e-4 * Math.max(1e-3, Math.abs(p)), combination + ": step " + a.get(i).get("step") + " " + key);
                }
            }
        }
        String three = common + ", \"teachers_combination\": \"mixture\", \"teacher_weight\": 2, \"teachers\": [{\"model\": \""
                + hf.resolve("qwen2-tiny") + "\"}, {\"model\": \"" + hf.resolve("gpt2-tiny") + "\"}]";
        assertEquals(0, run("distill", "--config", config(dir, "three", three).toString()));
        assertEquals(0, run("distill", "--config", config(dir, "three-split", three).toString(), "--stop-after", "2"));
        assertEquals(0, run("distill", "--config", config(dir, "three-split", three).toString(), "--resume"));
        try (CpuKernels kernels = new CpuKernels(1, "auto");
             LanguageModel p = ModelFiles.read(dir.resolve("three/checkpoints/step-00000004"), kernels);
             LanguageModel q = ModelFiles.read(dir.resolve("three-split/checkpoints/step-00000004"), kernels)) {
            for (var t : p.parameters().parameters()) {
                assertEquals(-1, t.data().mismatch(q.parameters().get(t.name()).data()), t.name() + " after an interrupted run of three teachers");
            }
        }
        Path otherVocab = dir.resolve("vocab-50");
        try (CpuKernels kernels = new CpuKernels(1, "auto"); LanguageModel m = new dev.distillery.runtime.nn.Gpt2(
                new dev.distillery.runtime.nn.Gpt2Config(50, SEQ, 1, 8, 2), kernels)) {
            m.initialize(1);
            ModelFiles.write(otherVocab, m);
        }
        for (String[] c : new String[][]{
                {common.replace("dense-train.bin", "topk-train.bin") + copy + ", \"teachers_combination\": \"mixture\"",
                        "'teachers_combination' mixture needs each teacher's whole distribution"},
                {common + ", \"teachers\": [{\"shards\": \"" + dir.resolve("topk-train.bin") + "\"}], \"teachers_combination\": \"mixture\"",
                        "'teachers[0].shards' " + dir.resolve("topk-train.bin") + " holds TOP_K targets"},
                {common + ", \"teachers\": [{\"shards\": \"" + dir.resolve("dense-other.bin") + "\"}]", "teachers must score the same windows"},
                {common + ", \"teachers\": [{\"model\": \"" + otherVocab + "\"}]", "vocabulary 50, the first teacher's is 97; teachers must share a vocabulary"},
                {common + ", \"hidden_states\": {\"pairs\": [[1, 1]]}", "'hidden_states' needs the teacher's hidden states, and the shards of"},
                {common + ", \"teachers\": [{\"shards\": \"a\", \"model\": \"b\"}]", "'teachers[0]' must give exactly one of 'shards'"},
                {common + ", \"teacher_weight\": 2", "'teacher_weight' applies to several teachers"},
                {common + ", \"teachers_combination\": \"mixture\", \"teachers\": [" + String.join(", ", java.util.Collections.nCopies(8,
                        "{\"shards\": \"" + dir.resolve("dense-train.bin") + "\"}")) + "]",
                        "'teachers' lists 8 more teachers, and 'teachers_combination' mixture takes at most 8 in all"},
                {common + ", \"teachers_combination\": \"median\"" + copy, "'teachers_combination' must be mean or mixture"}}) {
            StringWriter err = new StringWriter();
            assertEquals(Main.EXIT_FAILED, Main.execute(new String[]{"distill", "--config", config(dir, "refused", c[0]).toString(), "--device", "cpu"},
                    new PrintWriter(new StringWriter()), new PrintWriter(err, true)), err.toString());
            assertTrue(err.toString().contains(c[1]), c[1] + " in: " + err);
            assertTrue(!Files.exists(dir.resolve("refused")), "a refused config writes nothing: " + c[1]);
        }
    }

    @Test
    void aTeacherModelWithShardsOrWithoutTokensIsRefusedByItsKey(@TempDir Path dir) throws Exception {
        for (String[] c : new String[][]{
                {"\"teacher\": \"shards\", \"teacher_model\": {\"path\": \"m\", \"tokens\": \"t.bin\"}", "'teacher_model' and 'teacher' name two teachers"},
                {"\"teacher_model\": {\"path\": \"m\"}", "'teacher_model.tokens' is required"},
                {"\"teacher_model\": {\"path\": \"m\", \"tokens\": \"t.bin\"}, \"eval_teacher\": \"v\"", "'eval_teacher' holds stored shards"}}) {
            StringWriter err = new StringWriter();
            assertEquals(Main.EXIT_FAILED, Main.execute(new String[]{"distill", "--config", config(dir, "bad", c[0]).toString()},
                    new PrintWriter(new StringWriter()), new PrintWriter(err, true)), err.toString());
            assertTrue(err.toString().contains(c[1]), err.toString());
        }
    }

    private static Path config(Path dir, String name, String body) throws Exception {
        Path file = dir.resolve(name + ".json");
        Files.writeString(file, "{\"out\": \"" + dir.resolve(name) + "\", " + body + "}");
        return file;
    }

    private static List<JsonNode> records(Path run) throws Exception {
        List<JsonNode> list = new java.util.ArrayList<>();
        for (String line : Files.readAllLines(run.resolve("metrics.jsonl"))) {
            JsonNode n = StrictJson.MAPPER.readTree(line);
            if (n.path("kind").asText().equals("train") || n.path("kind").asText().equals("eval")) list.add(n);
        }
        return list;
    }

    private static int run(String... args) {
        return run(new StringWriter(), args);
    }

    private static int run(StringWriter out, String... args) {
        String[] all = java.util.stream.Stream.concat(java.util.Arrays.stream(args), java.util.stream.Stream.of("--device", "cpu", "--threads", "1"))
                .toArray(String[]::new);
        StringWriter err = new StringWriter();
        int status = Main.execute(all, new PrintWriter(out, true), new PrintWriter(err, true));
        if (status != 0) System.err.println(err);
        return status;
    }
}
