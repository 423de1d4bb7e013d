package dev.distillery.trainer.teacher;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.io.SafetensorsFile;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.trainer.cli.Main;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.data.TokenFile;

/**
 * GPT-2 checkpoints saved by {@code transformers} (save_pretrained: names under {@code transformer.},
 * float32 and bfloat16) are teachers as they are: {@code teacher dump-logits} gives the logits
 * transformers computed, recorded by {@code src/test/python/hf_gpt2_fixture.py}.
 */
class HuggingFaceCheckpointTest {

    private static final int S = 4, T = 32, V = 97;

    private static Path fixture(String name) throws URISyntaxException {
        return Path.of(HuggingFaceCheckpointTest.class.getResource("/dev/distillery/trainer/hf/" + name).toURI());
    }

    /** Runs dump-logits (dense f32) on {@code model} over the fixture's windows; the max |ours − transformers'|. */
    private static double maxDifference(Path model, String expected, Path dir) throws Exception {
        return maxDifference(model, "gpt2-tiny-logits.safetensors", expected, S, T, dir);
    }

    private static double maxDifference(Path model, String logitsFile, String expected, int S, int T, Path dir) throws Exception {
        float[] logits;
        try (SafetensorsFile st = SafetensorsFile.open(fixture(logitsFile))) {
            int[] windows = st.bytes("input_ids").toArray(ValueLayout.JAVA_INT);
            Path tokens = dir.resolve("windows.bin");
            TokenFile.write(tokens, windows);
            logits = st.bytes(expected).toArray(ValueLayout.JAVA_FLOAT);
            Path shards = dir.resolve("shards-" + expected);
            StringWriter err = new StringWriter();
            int status = Main.execute(new String[]{"teacher", "dump-logits", "--teacher", model.toString(), "--tokens", tokens.toString(),
                    "--out", shards.toString(), "--targets", "dense", "--dtype", "f32", "--seq-len", Integer.toString(T),
                    "--device", "cpu", "--threads", "1"}, new PrintWriter(new StringWriter()), new PrintWriter(err, true));
            assertEquals(0, status, err.toString());
            double max = 0;
            try (TeacherShards ts = TeacherShards.open(shards, true)) {
                assertEquals(S, ts.sequences());
                for (int s = 0; s < S; s++) {
                    MemorySegment got = ((TeacherTargets.Dense) ts.sequence(s).targets()).logits();
                    for (int i = 0; i < T * V; i++) {
                        max = Math.max(max, Math.abs(got.getAtIndex(ValueLayout.JAVA_FLOAT, i) - logits[s * T * V + i]));
                    }
                }
            }
            return max;
        }
    }

    @Test
    void aFloat32Gpt2SavedByTransformersGivesTransformersLogits(@TempDir Path dir) throws Exception {
        double d = maxDifference(fixture("gpt2-tiny"), "logits", dir);
        assertTrue(d < 1e-4, "max |ours - transformers'| = " + d);
    }

    @Test
    void aBfloat16Gpt2IsWidenedOnLoadAndGivesTransformersLogits(@TempDir Path dir) throws Exception {
        double d = maxDifference(fixture("gpt2-tiny-bf16"), "logits_bf16", dir);
        assertTrue(d < 1e-4, "max |ours - transformers'| = " + d);
    }

    @Test
    void aGpt2ReadFromTransformersAndWrittenByDistilleryReadsBackBitForBit(@TempDir Path dir) throws Exception {
        try (CpuKernels kernels = new CpuKernels(1, "auto"); LanguageModel hf = ModelFiles.read(fixture("gpt2-tiny"), kernels)) {
            ModelFiles.write(dir.resolve("ours"), hf);
            try (LanguageModel back = ModelFiles.read(dir.resolve("ours"), kernels)) {
                for (var t : hf.parameters().parameters()) {
                    float[] a = t.data().toArray(ValueLayout.JAVA_FLOAT), b = back.parameters().get(t.name()).data().toArray(ValueLayout.JAVA_FLOAT);
                    assertTrue(java.util.Arrays.equals(a, b), t.name());
                }
            }
        }
    }

    @Test
    void aConfigThatIsNotGpt2AsThisCodeComputesItIsRefusedByItsKey(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("m");
        Files.createDirectories(model);
        Files.copy(fixture("gpt2-tiny/model.safetensors"), model.resolve("model.safetensors"));
        String config = Files.readString(fixture("gpt2-tiny/config.json"));
        for (String[] change : new String[][]{
                {"\"activation_function\": \"gelu_new\"", "\"activation_function\": \"relu\"", "'activation_function' is relu"},
                {"\"model_type\": \"gpt2\"", "\"model_type\": \"bert\"", "'model_type' is bert"},
                {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false", "'tie_word_embeddings' is false"}}) {
            assertTrue(config.contains(change[0]), change[0]);
            Files.writeString(model.resolve("config.json"), config.replace(change[0], change[1]));
            StringWriter err = new StringWriter();
            int status = Main.execute(new String[]{"inspect", model.toString()}, new PrintWriter(new StringWriter()), new PrintWriter(err, true));
            assertEquals(Main.EXIT_FAILED, status);
            assertTrue(err.toString().contains("config.json: " + change[2]) && err.toString().strip().lines().count() == 1, err.toString());
        }
    }

    @Test
    void aCheckpointSplitOverFilesWithAnIndexReadsAsOne(@TempDir Path dir) throws Exception {
        Path split = dir.resolve("split");
        Files.createDirectories(split);
        Files.copy(fixture("gpt2-tiny/config.json"), split.resolve("config.json"));
        java.util.Map<String, String> map = new java.util.LinkedHashMap<>();
        try (SafetensorsFile st = SafetensorsFile.open(fixture("gpt2-tiny/model.safetensors"))) {
            java.util.List<dev.distillery.runtime.io.SafetensorsWriter.Item> first = new java.util.ArrayList<>(), second = new java.util.ArrayList<>();
            for (var e : st.entries().values()) {
                boolean one = e.name().contains(".h.0.") || e.name().contains("wte");
                (one ? first : second).add(new dev.distillery.runtime.io.SafetensorsWriter.Item(e.name(), e.dtype(), e.shape(), st.bytes(e.name())));
                map.put(e.name(), one ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
            }
            dev.distillery.runtime.io.SafetensorsWriter.write(split.resolve("model-00001-of-00002.safetensors"), first, java.util.Map.of());
            dev.distillery.runtime.io.SafetensorsWriter.write(split.resolve("model-00002-of-00002.safetensors"), second, java.util.Map.of());
        }
        Files.writeString(split.resolve("model.safetensors.index.json"), new com.fasterxml.jackson.databind.ObjectMapper()
                .writeValueAsString(java.util.Map.of("metadata", java.util.Map.of("total_size", 0), "weight_map", map)));
        double d = maxDifference(split, "logits", dir);
        assertTrue(d < 1e-4, "max |ours - transformers'| = " + d);
        Files.delete(split.resolve("model-00002-of-00002.safetensors"));
        StringWriter err = new StringWriter();
        assertEquals(Main.EXIT_FAILED, Main.execute(new String[]{"inspect", split.toString()}, new PrintWriter(new StringWriter()),
                new PrintWriter(err, true)));
        assertTrue(err.toString().contains("model.safetensors.index.json: lists model-00002-of-00002.safetensors, which is missing"), err.toString());
    }

    @Test
    void aStudentStartsFromChosenTeacherLayers(@TempDir Path dir) throws Exception {
        try (CpuKernels kernels = new CpuKernels(1, "auto"); LanguageModel teacher = ModelFiles.read(fixture("gpt2-tiny"), kernels);
             LanguageModel student = ModelFiles.readLayers(fixture("gpt2-tiny"), new int[]{1}, kernels)) {
            assertEquals(1, student.layers());
            assertEquals(teacher.width(), student.width());
            for (var t : student.parameters().parameters()) {
                String from = t.name().startsWith("h.0.") ? "h.1." + t.name().substring(4) : t.name();
                assertTrue(java.util.Arrays.equals(teacher.parameters().get(from).data().toArray(ValueLayout.JAVA_FLOAT),
                        t.data().toArray(ValueLayout.JAVA_FLOAT)), t.name() + " is the teacher's " + from);
            }
        }
        String m = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> {
            try (CpuKernels kernels = new CpuKernels(1, "auto")) {
                ModelFiles.readLayers(fixture("gpt2-tiny"), new int[]{0, 2}, kernels).close();
            }
        }).getMessage();
        assertTrue(m.startsWith("layer 2 is not one of the 2 layers of "), m);
        // distill from the teacher's own shards, the student starting from its second block
        maxDifference(fixture("gpt2-tiny"), "logits", dir);
        Path cfg = dir.resolve("run.json");
        Files.writeString(cfg, "{\"teacher\": \"" + dir.resolve("shards-logits") + "\", \"out\": \"" + dir.resolve("run") + "\", "
                + "\"steps\": 2, \"batch_size\": 2, \"init_from\": \"" + fixture("gpt2-tiny") + "\", \"init_layers\": [1]}");
        StringWriter err = new StringWriter();
        int status = Main.execute(new String[]{"distill", "--config", cfg.toString(), "--device", "cpu", "--threads", "1"},
                new PrintWriter(new StringWriter()), new PrintWriter(err, true));
        assertEquals(0, status, err.toString());
        assertEquals(1, ModelFiles.readConfig(dir.resolve("run/checkpoints/step-00000002/config.json")).layers());
    }

    /**
     * Llama-family teachers saved by transformers: a LlamaForCausalLM with grouped-query attention,
     * Llama 3's rope scaling and an untied head, and a Qwen2ForCausalLM with q/k/v biases, one
     * key/value head and a tied head (fixtures by {@code src/test/python/hf_llama_fixture.py}).
     */
    @Test
    void llamaAndQwen2TeachersGiveTransformersLogits(@TempDir Path dir) throws Exception {
        for (String[] m : new String[][]{{"llama-tiny", "llama"}, {"qwen2-tiny", "qwen2"}}) {
            double d = maxDifference(fixture(m[0]), "llama-tiny-logits.safetensors", m[1], 3, 24, dir.resolve(m[0]));
            assertTrue(d < 1e-4, m[0] + ": max |ours - transformers'| = " + d);
        }
    }

    /** The same Llama forward through the CUDA kernels, run by the CPU emulation of the device. */
    @Test
    void theLlamaForwardOnTheEmulatedCudaDeviceGivesTransformersLogits() throws Exception {
        try (var gcc = new dev.distillery.kernels.cuda.EmulationBuild("distillery-emu-llama");
             SafetensorsFile st = SafetensorsFile.open(fixture("llama-tiny-logits.safetensors"));
             java.lang.foreign.Arena host = java.lang.foreign.Arena.ofConfined()) {
            Path library = gcc.build("emu_device.cpp", "libdistillery_emu.so", "-O2", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE", "-shared", "-fPIC");
            MemorySegment ids = host.allocate(4L * 3 * 24, 64);
            MemorySegment.copy(st.bytes("input_ids"), 0, ids, 0, 4L * 3 * 24);
            float[] expected = st.bytes("llama").toArray(ValueLayout.JAVA_FLOAT);
            try (var device = new dev.distillery.kernels.cuda.EmulatedCudaBackend(library);
                 var cuda = new dev.distillery.kernels.cuda.CudaKernels(device);
                 var model = ModelFiles.readTeacher(fixture("llama-tiny"), cuda);
                 var llama = new dev.distillery.runtime.nn.LanguageModelForward(model, cuda, 3, 24)) {
                float[] got = llama.logits(ids).toArray(ValueLayout.JAVA_FLOAT);
                double max = 0;
                for (int i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(got[i] - expected[i]));
                assertTrue(max < 1e-4, "max |emulated CUDA - transformers'| = " + max);
                // our kernels (cuBLAS does the GEMMs): per block 2 RMSNorms, 2 rotations, 3 head layouts, the attention softmax, 2 residuals, SwiGLU
                assertTrue(device.launches() >= 2 * 11, device.launches() + " kernels ran on the emulated device");
            }
        }
    }

    /** eval on a Llama teacher: its CE over held-out windows is the one computed from its dumped logits. */
    @Test
    void evalMeasuresALlamaTeachersCrossEntropy(@TempDir Path dir) throws Exception {
        int[] tokens;
        try (SafetensorsFile st = SafetensorsFile.open(fixture("llama-tiny-logits.safetensors"))) {
            tokens = st.bytes("input_ids").toArray(ValueLayout.JAVA_INT);   // 72 tokens: one window of 64 + 1
        }
        Path file = dir.resolve("val.bin");
        TokenFile.write(file, tokens);
        StringWriter out = new StringWriter(), err = new StringWriter();
        assertEquals(0, Main.execute(new String[]{"teacher", "dump-logits", "--teacher", fixture("llama-tiny").toString(), "--tokens", file.toString(),
                "--out", dir.resolve("dense").toString(), "--targets", "dense", "--dtype", "f32", "--device", "cpu", "--threads", "1"},
                new PrintWriter(new StringWriter()), new PrintWriter(err, true)), err.toString());
        double expected = 0;
        try (TeacherShards ts = TeacherShards.open(dir.resolve("dense"), true)) {
            MemorySegment logits = ((TeacherTargets.Dense) ts.sequence(0).targets()).logits();
            for (int p = 0; p < 64; p++) {
                double max = Double.NEGATIVE_INFINITY, sum = 0;
                for (int j = 0; j < V; j++) max = Math.max(max, logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) p * V + j));
                for (int j = 0; j < V; j++) sum += Math.exp(logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) p * V + j) - max);
                expected += max + Math.log(sum) - logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) p * V + tokens[p + 1]);
            }
        }
        expected /= 64;
        assertEquals(0, Main.execute(new String[]{"eval", "--model", fixture("llama-tiny").toString(), "--tokens", file.toString(), "--json",
                "--device", "cpu", "--threads", "1"}, new PrintWriter(out, true), new PrintWriter(err, true)), err.toString());
        double ce = new com.fasterxml.jackson.databind.ObjectMapper().readTree(out.toString().lines().filter(l -> l.startsWith("{"))
                .findFirst().orElseThrow()).get("cross_entropy").asDouble();
        assertEquals(expected, ce, 1e-5, out.toString());
    }

    /** Greedy sampling from a Llama teacher takes, at each step, the argmax of its logits over the window so far. */
    @Test
    void greedyGenerationFromALlamaTeacherFollowsItsLogits() throws Exception {
        int[] prompt = {5, 17, 42, 3};
        int count = 6, window = prompt.length + count;
        try (CpuKernels kernels = new CpuKernels(1, "auto"); LanguageModel model = ModelFiles.readTeacher(fixture("llama-tiny"), kernels);
             var gen = new dev.distillery.runtime.nn.TextGenerator(model, kernels);
             java.lang.foreign.Arena host = java.lang.foreign.Arena.ofConfined()) {
            int[] seq = gen.generate(prompt, count, 0, 0, new dev.distillery.runtime.Rng(1));
            int[] expected = java.util.Arrays.copyOf(prompt, window);
            for (int n = prompt.length; n < window; n++) {
                try (var exact = new dev.distillery.runtime.nn.LanguageModelForward(model, kernels, 1, n)) {
                    MemorySegment ids = host.allocate(4L * n, 64);
                    for (int i = 0; i < n; i++) ids.setAtIndex(ValueLayout.JAVA_INT, i, expected[i]);
                    MemorySegment logits = exact.logits(ids);
                    int best = 0;
                    for (int j = 1; j < V; j++) {
                        if (logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) (n - 1) * V + j) > logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) (n - 1) * V + best)) best = j;
                    }
                    expected[n] = best;
                }
            }
            org.junit.jupiter.api.Assertions.assertArrayEquals(expected, seq);
        }
    }

    /** Llama and Qwen2 models read from transformers' files and written by Distillery read back bit for bit, config and all. */
    @Test
    void llamaFamilyModelsWrittenByDistilleryReadBackBitForBit(@TempDir Path dir) throws Exception {
        for (String name : new String[]{"llama-tiny", "qwen2-tiny"}) {
            try (CpuKernels kernels = new CpuKernels(1, "auto"); LanguageModel hf = ModelFiles.read(fixture(name), kernels)) {
                ModelFiles.write(dir.resolve(name), hf);
                assertEquals(dev.distillery.runtime.io.LlamaFiles.readConfig(fixture(name).resolve("config.json")),
                        dev.distillery.runtime.io.LlamaFiles.readConfig(dir.resolve(name).resolve("config.json")), name);
                try (LanguageModel back = ModelFiles.read(dir.resolve(name), kernels)) {
                    assertEquals(hf.parameters().layout().keySet(), back.parameters().layout().keySet(), name);
                    for (var t : hf.parameters().parameters()) {
                        float[] a = t.data().toArray(ValueLayout.JAVA_FLOAT), b = back.parameters().get(t.name()).data().toArray(ValueLayout.JAVA_FLOAT);
                        assertTrue(java.util.Arrays.equals(a, b), name + " " + t.name());
                    }
                }
            }
        }
    }

    /**
     * A Llama student distilled from a Llama teacher's shards: one taken from the teacher's second
     * block, one fresh from the config's architecture. Each checkpoint reads back as itself and
     * scores its own held-out CE again.
     */
    @Test
    void llamaStudentsDistilFromALlamaTeacherAndReadBackAsThemselves(@TempDir Path dir) throws Exception {
        maxDifference(fixture("llama-tiny"), "llama-tiny-logits.safetensors", "llama", 3, 24, dir.resolve("llama-tiny"));
        Path shards = dir.resolve("llama-tiny").resolve("shards-llama");
        for (String[] run : new String[][]{
                {"from-teacher", "\"init_from\": \"" + fixture("llama-tiny") + "\", \"init_layers\": [1]"},
                {"fresh", "\"student\": {\"architecture\": \"llama\", \"layers\": 2, \"channels\": 32, \"heads\": 4, \"kv_heads\": 2, "
                        + "\"intermediate\": 40, \"tie_embeddings\": false}"}}) {
            Path cfg = dir.resolve(run[0] + ".json");
            Files.writeString(cfg, "{\"teacher\": \"" + shards + "\", \"out\": \"" + dir.resolve(run[0]) + "\", \"steps\": 3, "
                    + "\"batch_size\": 2, \"lr\": 0.01, \"loss\": {\"temperature\": 2.0}, " + run[1] + "}");
            StringWriter out = new StringWriter(), err = new StringWriter();
            assertEquals(0, Main.execute(new String[]{"distill", "--config", cfg.toString(), "--device", "cpu", "--threads", "1"},
                    new PrintWriter(out, true), new PrintWriter(err, true)), err.toString());
            assertTrue(out.toString().contains("student: LlamaForCausalLM, " + (run[0].equals("fresh") ? "2 layers of 32" : "1 layers of 48")), out.toString());
            Path checkpoint = dir.resolve(run[0]).resolve("checkpoints/step-00000003");
            try (CpuKernels kernels = new CpuKernels(1, "auto"); LanguageModel a = ModelFiles.read(checkpoint, kernels)) {
                ModelFiles.write(dir.resolve(run[0] + "-again"), a);
                try (LanguageModel b = ModelFiles.read(dir.resolve(run[0] + "-again"), kernels)) {
                    for (var t : a.parameters().parameters()) {
                        assertTrue(java.util.Arrays.equals(t.data().toArray(ValueLayout.JAVA_FLOAT),
                                b.parameters().get(t.name()).data().toArray(ValueLayout.JAVA_FLOAT)), run[0] + " " + t.name());
                    }
                }
                if (run[0].equals("from-teacher")) {
                    try (LanguageModel teacher = ModelFiles.read(fixture("llama-tiny"), kernels)) {
                        assertFalse(java.util.Arrays.equals(teacher.parameters().get("model.layers.1.mlp.up_proj.weight").data().toArray(ValueLayout.JAVA_FLOAT),
                                a.parameters().get("model.layers.0.mlp.up_proj.weight").data().toArray(ValueLayout.JAVA_FLOAT)), "the student trained");
                    }
                }
            }
            StringWriter evalOut = new StringWriter();
            assertEquals(0, Main.execute(new String[]{"eval", "--model", checkpoint.toString(), "--teacher-shards", shards.toString(), "--json",
                    "--batch", "3", "--device", "cpu", "--threads", "1"}, new PrintWriter(evalOut, true), new PrintWriter(err, true)), err.toString());
            assertTrue(evalOut.toString().contains("\"top1_agreement\""), evalOut.toString());
        }
    }
}
