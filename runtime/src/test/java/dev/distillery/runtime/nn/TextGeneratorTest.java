package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Rng;

class TextGeneratorTest {

    @Test
    void topOneSamplingIsGreedyAndSeedsReproduce() {
        try (CpuKernels k = new CpuKernels(2, "auto"); Gpt2 m = new Gpt2(new Gpt2Config(53, 9, 2, 16, 2), k);
             TextGenerator g = new TextGenerator(m, k)) {
            m.initialize(11);
            var wte = m.parameters().get("wte.weight");
            for (long i = 0; i < wte.numel(); i++) wte.setFloat(i, wte.getFloat(i) * 30);
            int[] prompt = {4, 8};
            // 20 tokens from a context of 9: the window slides.
            int[] greedy = g.generate(prompt, 20, 0, 0, new Rng(1));
            assertEquals(22, greedy.length);
            assertArrayEquals(greedy, g.generate(prompt, 20, 1.0, 1, new Rng(99)), "top-1 sampling = greedy");
            int[] a = g.generate(prompt, 20, 1.5, 0, new Rng(5)), b = g.generate(prompt, 20, 1.5, 0, new Rng(5));
            assertArrayEquals(a, b, "same seed, same text");
            assertNotEquals(java.util.Arrays.toString(a), java.util.Arrays.toString(g.generate(prompt, 20, 1.5, 0, new Rng(6))));
            for (int x : a) assertTrue(x >= 0 && x < 53);
        }
    }
}
