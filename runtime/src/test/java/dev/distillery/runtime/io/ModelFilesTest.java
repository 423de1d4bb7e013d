package dev.distillery.runtime.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.optim.AdamW;

class ModelFilesTest {

    private static CpuKernels k;

    @org.junit.jupiter.api.BeforeAll
    static void kernels() {
        k = new CpuKernels(1, "auto");
    }

    @org.junit.jupiter.api.AfterAll
    static void close() {
        k.close();
    }

    @Test
    void modelAndOptimizerRoundTripBitForBit(@TempDir Path dir) throws IOException {
        Gpt2Config c = new Gpt2Config(37, 11, 2, 12, 3);
        try (Gpt2 m = new Gpt2(c, k)) {
            m.initialize(3);
            ModelFiles.write(dir, m);
            AdamW adam = new AdamW(m.parameters(), k, AdamW.Config.defaults());
            long n = m.parameters().blockElements();
            for (long i = 0; i < n; i++) {
                adam.firstMoments().setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i, i * 0.5f);
                adam.secondMoments().setAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i, i * 0.25f);
            }
            adam.setStep(17);
            ModelFiles.writeOptimizer(dir.resolve("state.safetensors"), adam, n, Map.of("data.epoch", "2"));

            assertEquals(c, ModelFiles.readConfig(dir.resolve("config.json")));
            try (LanguageModel back = ModelFiles.read(dir, k)) {
                for (Tensor t : m.parameters().parameters()) {
                    assertArrayEquals(t.toFloatArray(), back.parameters().get(t.name()).toFloatArray(), t.name());
                }
                AdamW restored = new AdamW(back.parameters(), k, AdamW.Config.defaults());
                Map<String, String> meta = ModelFiles.readOptimizer(dir.resolve("state.safetensors"), restored, n);
                assertEquals("2", meta.get("data.epoch"));
                assertEquals(17, restored.step());
                for (long i = 0; i < n; i += 97) {
                    assertEquals(i * 0.25f, restored.secondMoments().getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT, i));
                }
            }
            String json = Files.readString(dir.resolve("config.json"));
            assertTrue(json.contains("\"model_type\" : \"gpt2\"") && json.contains("\"n_embd\" : 12") && json.contains("gelu_new"), json);
            try (SafetensorsFile st = SafetensorsFile.open(dir.resolve("model.safetensors"))) {
                assertEquals("pt", st.metadata().get("format"));
                assertArrayEquals(new int[]{12, 36}, st.entry("h.1.attn.c_attn.weight").shape(), "Conv1D layout (in, out)");
            }
        }
    }

    @Test
    void aMismatchedTensorIsNamedWithItsShapes(@TempDir Path dir) throws IOException {
        try (Gpt2 m = new Gpt2(new Gpt2Config(37, 11, 1, 12, 3), k)) {
            ModelFiles.write(dir, m);
        }
        // Same config, but a model file whose ln_f.bias has the wrong shape.
        try (java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
            Path bad = dir.resolve("model.safetensors");
            try (Gpt2 m = new Gpt2(new Gpt2Config(37, 11, 1, 12, 3), k)) {
                List<SafetensorsWriter.Item> items = new java.util.ArrayList<>();
                for (Tensor t : m.parameters().parameters()) {
                    int[] shape = t.name().equals("ln_f.bias") ? new int[]{6} : t.shape();
                    items.add(new SafetensorsWriter.Item(t.name(), DType.F32, shape, t.data()));
                }
                SafetensorsWriter.write(bad, items, Map.of());
            }
        }
        IOException e = assertThrows(IOException.class, () -> ModelFiles.read(dir, k));
        assertTrue(e.getMessage().contains("ln_f.bias") && e.getMessage().contains("[12]") && e.getMessage().contains("[6]"), e.getMessage());
        Files.writeString(dir.resolve("config.json"), "{\"vocab_size\": 37, \"n_positions\": 11, \"n_layer\": 1, \"n_embd\": 12}");
        IOException missing = assertThrows(IOException.class, () -> ModelFiles.read(dir, k));
        assertTrue(missing.getMessage().contains("'n_head'"), missing.getMessage());
    }
}
