package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

import dev.distillery.kernels.Precision;
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

    /**
     * Decoding token by token through the KV cache gives, at every position, the logits of the
     * whole window's forward, and so does a prefill of a window and a decode after it: GPT-2, and a Llama with grouped-query heads, q/k/v biases and Llama
     * 3's rope scaling, in fp32 and in bf16 (where the CPU has it). Greedy generation past the
     * context (the window slides) picks at each step the argmax of the forward over the last
     * context tokens.
     */
    @Test
    void decodingThroughTheCacheGivesTheWholeWindowsLogits() {
        var rope = new LlamaConfig.Rope(500000, new LlamaConfig.Rope.Llama3Scaling(8, 1, 4, 4));
        for (java.util.function.Function<CpuKernels, LanguageModel> make : java.util.List.<java.util.function.Function<CpuKernels, LanguageModel>>of(
                k -> new Gpt2(new Gpt2Config(41, 9, 2, 16, 2), k),
                k -> new Llama(new LlamaConfig(LlamaConfig.Family.QWEN2, 41, 9, 2, 16, 4, 2, 4, 24, 1e-6f, rope, false), k))) {
            for (Precision precision : Precision.values()) {   // under bf16 the cache's path reads the activations stored in bf16 too
                try (CpuKernels k = new CpuKernels(2, "auto", precision); LanguageModel m = make.apply(k);
                     dev.distillery.runtime.Workspace ws = new dev.distillery.runtime.Workspace(k, 1 << 16);
                     java.lang.foreign.Arena host = java.lang.foreign.Arena.ofShared();
                     KvCache cache = m.newCache(1, 9); TextGenerator g = new TextGenerator(m, k)) {
                    Rng rng = new Rng(2);
                    var ops = randomForwardOnly(m, k, ws, rng);
                    int n = 9;
                    int[] ids = new int[n];
                    for (int i = 0; i < n; i++) ids[i] = rng.nextInt(41);
                    var tokens = new dev.distillery.runtime.Tensor("tokens", new int[]{1, n}, dev.distillery.kernels.DType.I32, dev.distillery.runtime.Device.CPU,
                            host.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT, ids), false);
                    float[] full = m.forward(ops, tokens, 1, n).toFloatArray();
                    String family = m.getClass().getSimpleName() + " " + k.precision().key();
                    // under bf16 the forward's attention multiplies bf16-rounded q, k, v and probabilities, the decode's
                    // stays in fp32 (as on CUDA): the two differ by bf16's rounding through these sharp random heads (up to
                    // 0.04 seen), not by fp32's; a cache row out of place moves logits by more than this
                    double tol = k.precision() == Precision.BF16 ? 0.1 : 2e-4;
                    for (int pos = 0; pos < n; pos++) {
                        ws.reset();
                        var one = tokens.slice(pos, 1, 1);
                        float[] row = m.decode(ops, cache, one).toFloatArray();
                        for (int j = 0; j < 41; j++) {
                            assertEquals(full[pos * 41 + j], row[j], tol * Math.max(1, Math.abs(full[pos * 41 + j])), family + " position " + pos + ", logit " + j);
                        }
                    }
                    assertEquals(9, cache.length());
                    // the first 8 in one forward, then the ninth through the cache that forward filled
                    try (KvCache filled = m.newCache(1, 9)) {
                        ws.reset();
                        float[] last = m.prefill(ops, filled, tokens.slice(0, 1, 8), 8).toFloatArray();
                        assertEquals(8, filled.length());
                        ws.reset();
                        float[] next = m.decode(ops, filled, tokens.slice(8, 1, 1)).toFloatArray();
                        for (int j = 0; j < 41; j++) {
                            assertEquals(full[7 * 41 + j], last[j], tol * Math.max(1, Math.abs(full[7 * 41 + j])), family + " prefill, logit " + j);
                            assertEquals(full[8 * 41 + j], next[j], tol * Math.max(1, Math.abs(full[8 * 41 + j])), family + " after prefill, logit " + j);
                        }
                    }
                    int[] prompt = {3, 1, 4};
                    int[] greedy = g.generate(prompt, 12, 0, 0, new Rng(1));
                    for (int t = prompt.length; t < greedy.length; t++) {
                        int from = Math.max(0, t - 9), len = t - from;
                        ws.reset();
                        var window = new dev.distillery.runtime.Tensor("window", new int[]{1, len}, dev.distillery.kernels.DType.I32,
                                dev.distillery.runtime.Device.CPU, host.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT,
                                java.util.Arrays.copyOfRange(greedy, from, t)), false);
                        float[] logits = m.forward(ops, window, 1, len).toFloatArray();
                        int best = 0;
                        for (int j = 1; j < 41; j++) if (logits[(len - 1) * 41 + j] > logits[(len - 1) * 41 + best]) best = j;
                        assertEquals(best, greedy[t], family + ": token " + t + " of " + java.util.Arrays.toString(greedy));
                    }
                }
            }
        }
    }

    /**
     * Sequences decoded together match each decoded alone: a batch's prefill and its decodes give
     * every sequence the logits of its own whole-window forward, and batched generation, greedy
     * and sampled (each sequence from its own generator), past the context where the windows
     * slide, writes each sequence's text as a lone run does, with prompts of one length or of
     * several (shorter and longer than the context). GPT-2 and a Llama with grouped-query
     * heads, fp32 and bf16.
     */
    @Test
    void sequencesDecodedTogetherMatchEachDecodedAlone() {
        for (java.util.function.Function<CpuKernels, LanguageModel> make : java.util.List.<java.util.function.Function<CpuKernels, LanguageModel>>of(
                k -> new Gpt2(new Gpt2Config(41, 9, 2, 16, 2), k),
                k -> new Llama(new LlamaConfig(LlamaConfig.Family.QWEN2, 41, 9, 2, 16, 4, 2, 4, 24, 1e-6f, new LlamaConfig.Rope(10000, null), false), k))) {
            for (Precision precision : Precision.values()) {
                int rows = 3, n = 9, vocab = 41;
                try (CpuKernels k = new CpuKernels(2, "auto", precision); LanguageModel m = make.apply(k);
                     dev.distillery.runtime.Workspace ws = new dev.distillery.runtime.Workspace(k, 1 << 16);
                     java.lang.foreign.Arena host = java.lang.foreign.Arena.ofShared();
                     KvCache cache = m.newCache(4, n); TextGenerator together = new TextGenerator(m, k, 4); TextGenerator alone = new TextGenerator(m, k)) {
                    Rng rng = new Rng(3);
                    var ops = randomForwardOnly(m, k, ws, rng);
                    int[] ids = new int[rows * n];
                    for (int i = 0; i < ids.length; i++) ids[i] = rng.nextInt(vocab);
                    var tokens = new dev.distillery.runtime.Tensor("tokens", new int[]{rows, n}, dev.distillery.kernels.DType.I32,
                            dev.distillery.runtime.Device.CPU, host.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT, ids), false);
                    float[] full = m.forward(ops, tokens, rows, n).toFloatArray();
                    String family = m.getClass().getSimpleName() + " " + k.precision().key();
                    // under bf16 the forward's attention multiplies bf16-rounded q, k, v and probabilities, the decode's
                    // stays in fp32 (as on CUDA): the two differ by bf16's rounding through these sharp random heads (up to
                    // 0.04 seen), not by fp32's; a cache row out of place moves logits by more than this
                    double tol = k.precision() == Precision.BF16 ? 0.1 : 2e-4;
                    // the first 5 positions of each sequence in one prefill, then positions 5..8 one decode each
                    int t = 5;
                    int[] prompts = new int[rows * t], next = new int[rows];
                    for (int r = 0; r < rows; r++) System.arraycopy(ids, r * n, prompts, r * t, t);
                    var promptTokens = new dev.distillery.runtime.Tensor("prompts", new int[]{rows, t}, dev.distillery.kernels.DType.I32,
                            dev.distillery.runtime.Device.CPU, host.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT, prompts), false);
                    var nextTokens = new dev.distillery.runtime.Tensor("next", new int[]{rows, 1}, dev.distillery.kernels.DType.I32,
                            dev.distillery.runtime.Device.CPU, host.allocate(4L * rows, 64), false);
                    ws.reset();
                    float[] logits = m.prefill(ops, cache, promptTokens, t).toFloatArray();
                    for (int pos = t - 1; pos < n; pos++) {
                        for (int r = 0; r < rows; r++) {
                            for (int j = 0; j < vocab; j++) {
                                float want = full[(r * n + pos) * vocab + j];
                                assertEquals(want, logits[r * vocab + j], tol * Math.max(1, Math.abs(want)), family + " sequence " + r + ", position " + pos + ", logit " + j);
                            }
                        }
                        if (pos + 1 == n) break;
                        for (int r = 0; r < rows; r++) next[r] = ids[r * n + pos + 1];
                        java.lang.foreign.MemorySegment.copy(next, 0, nextTokens.data(), java.lang.foreign.ValueLayout.JAVA_INT, 0, rows);
                        ws.reset();
                        logits = m.decode(ops, cache, nextTokens).toFloatArray();
                    }
                    assertEquals(n, cache.length());
                    // 12 tokens after 3-token prompts: past the context of 9, the windows slide; then prompts of 1 to 11
                    // tokens (one past the context) together, and 2 to 4 tokens within the context
                    int[][][] batches = {{{3, 1, 4}, {1, 5, 9}, {2, 6, 5}}, {{3, 1, 4, 1}, {5}, {9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3}},
                            {{2, 7}, {1, 8, 2, 8}, {1, 8, 2}}};
                    for (int[][] starts : batches) {
                        for (double temperature : new double[]{0, 1.5}) {
                            int count = starts == batches[2] ? 3 : 12;
                            Rng[] gens = new Rng[rows];
                            for (int r = 0; r < rows; r++) gens[r] = new Rng(40 + r);
                            int[][] texts = together.generate(starts, count, temperature, 0, gens);
                            for (int r = 0; r < rows; r++) {
                                assertArrayEquals(alone.generate(starts[r], count, temperature, 0, new Rng(40 + r)), texts[r],
                                        family + " at temperature " + temperature + ", prompts " + java.util.Arrays.deepToString(starts) + ", sequence " + r);
                                assertEquals(gens[r].nextDouble(), after(new Rng(40 + r), temperature > 0 ? count : 0).nextDouble(),
                                        family + ": sequence " + r + "'s generator drew once a token it sampled");
                            }
                        }
                    }
                    int[][] none = together.generate(batches[1], 0, 1.5, 0, new Rng[]{new Rng(1), new Rng(2), new Rng(3)});
                    assertEquals(java.util.Arrays.deepToString(batches[1]), java.util.Arrays.deepToString(none), "no tokens: the prompts");
                }
            }
        }
    }

    /**
     * {@link TextGenerator#generateAll} gives back every prompt's continuation in the prompts'
     * order, each the text of a lone run from its own generator, whether batches hold prompts of
     * one length only (spread 0) or of several, reports the prompts done after each batch, and
     * stops after a batch when told to, the prompts not continued null.
     */
    @Test
    void generateAllContinuesEachPromptAsALoneRunInThePromptsOrder() {
        try (CpuKernels k = new CpuKernels(2, "auto"); Gpt2 m = new Gpt2(new Gpt2Config(53, 16, 2, 16, 2), k);
             TextGenerator together = new TextGenerator(m, k, 3); TextGenerator alone = new TextGenerator(m, k)) {
            m.initialize(5);
            Rng rng = new Rng(8);
            java.util.List<int[]> prompts = new java.util.ArrayList<>();
            for (int i = 0; i < 11; i++) {
                int[] p = new int[1 + rng.nextInt(6)];
                for (int j = 0; j < p.length; j++) p[j] = rng.nextInt(53);
                prompts.add(p);
            }
            for (int spread : new int[]{0, 2, 5}) {
                java.util.List<Integer> done = new java.util.ArrayList<>();
                int[][] texts = together.generateAll(prompts, 7, 1.2, 0, TextGenerator.NO_STOP, spread, i -> new Rng(100 + i), done::add);
                for (int i = 0; i < prompts.size(); i++) {
                    assertArrayEquals(alone.generate(prompts.get(i), 7, 1.2, 0, new Rng(100 + i)), texts[i], "spread " + spread + ", prompt " + i);
                }
                assertEquals(prompts.size(), done.getLast(), "spread " + spread + ": " + done);
                for (int b = 0; b < done.size(); b++) {
                    int size = done.get(b) - (b == 0 ? 0 : done.get(b - 1));
                    assertTrue(size >= 1 && size <= 3, "spread " + spread + ": batches of 1 to 3, " + done);
                }
                if (spread == 0) {   // each length's prompts in batches of up to 3
                    int batches = prompts.stream().collect(java.util.stream.Collectors.groupingBy(p -> p.length, java.util.stream.Collectors.counting()))
                            .values().stream().mapToInt(n -> (int) ((n + 2) / 3)).sum();
                    assertEquals(batches, done.size(), "one length a batch: " + done);
                }
                if (spread == 5) assertEquals(4, done.size(), "11 prompts of 1 to 6 tokens in batches of 3: " + done);
            }
            // stopped after its first batch: that batch's prompts (the shortest) continued, the rest null
            int[][] first = together.generateAll(prompts, 7, 1.2, 0, TextGenerator.NO_STOP, 5, i -> new Rng(100 + i), done -> false);
            int shortest = prompts.stream().mapToInt(p -> p.length).min().orElseThrow(), continued = 0;
            for (int i = 0; i < prompts.size(); i++) {
                if (first[i] == null) continue;
                continued++;
                assertArrayEquals(alone.generate(prompts.get(i), 7, 1.2, 0, new Rng(100 + i)), first[i], "prompt " + i + " before the stop");
                assertTrue(prompts.get(i).length <= shortest + 5, "prompt " + i + " is of the first batch");
            }
            assertEquals(3, continued, "one batch of 3");
        }
    }

    /**
     * A call reads the weights as they are when it starts: under bf16 the GEMMs keep their packed
     * weights for one call only, so weights changed between two calls of one generator (a student
     * generating between optimizer steps) give the text a new generator gives.
     */
    @Test
    void aCallReadsTheWeightsAsTheyAreWhenItStarts() {
        for (Precision precision : Precision.values()) {
            try (CpuKernels k = new CpuKernels(2, "auto", precision); Gpt2 m = new Gpt2(new Gpt2Config(53, 16, 2, 16, 2), k);
                 TextGenerator g = new TextGenerator(m, k, 2)) {
                int[][] prompts = {{4, 8, 15}, {16, 23, 42}};
                m.initialize(1);
                int[][] first = g.generate(prompts, 10, 0, 0, new Rng[]{new Rng(1), new Rng(2)});
                m.initialize(2);
                int[][] second = g.generate(prompts, 10, 0, 0, new Rng[]{new Rng(1), new Rng(2)});
                try (CpuKernels k2 = new CpuKernels(2, "auto", precision); Gpt2 m2 = new Gpt2(new Gpt2Config(53, 16, 2, 16, 2), k2);
                     TextGenerator fresh = new TextGenerator(m2, k2, 2)) {   // kernels of its own: nothing kept from the first weights
                    m2.initialize(2);
                    assertEquals(java.util.Arrays.deepToString(fresh.generate(prompts, 10, 0, 0, new Rng[]{new Rng(1), new Rng(2)})),
                            java.util.Arrays.deepToString(second), k.precision().key() + ": the new weights");
                }
                assertNotEquals(java.util.Arrays.deepToString(first), java.util.Arrays.deepToString(second), k.precision().key());
            }
        }
    }

    /**
     * A stop token ends a sequence with that token, the rest of the batch going on: each sequence
     * of a batch whose members stop at different steps is the text of its lone run with the same
     * stop, that is its run without one cut after the first stop token it draws; a stopped
     * sequence's generator draws nothing more.
     */
    @Test
    void aStopTokenEndsEachSequenceWhereItIsDrawn() {
        try (CpuKernels k = new CpuKernels(2, "auto"); Gpt2 m = new Gpt2(new Gpt2Config(13, 32, 2, 16, 2), k);
             TextGenerator together = new TextGenerator(m, k, 4); TextGenerator alone = new TextGenerator(m, k)) {
            m.initialize(3);
            int[][] prompts = {{1, 2}, {3}, {4, 5, 6}, {7, 8}};
            int count = 20, stoppedSomewhere = 0;
            int[][] free = new int[prompts.length][];
            for (int r = 0; r < prompts.length; r++) free[r] = alone.generate(prompts[r], count, 1.0, 0, new Rng(60 + r));
            // the stop: the id whose first draw comes at the most different steps over the sequences
            int stop = 0, best = -1;
            for (int id = 0; id < 13; id++) {
                java.util.Set<Integer> steps = new java.util.HashSet<>();
                for (int r = 0; r < prompts.length; r++) {
                    for (int n = prompts[r].length; n < free[r].length; n++) {
                        if (free[r][n] == id) {
                            steps.add(n - prompts[r].length);
                            break;
                        }
                    }
                }
                if (steps.size() > best) {
                    best = steps.size();
                    stop = id;
                }
            }
            Rng[] gens = new Rng[prompts.length];
            for (int r = 0; r < prompts.length; r++) gens[r] = new Rng(60 + r);
            int[][] texts = together.generate(prompts, count, 1.0, 0, gens, stop);
            for (int r = 0; r < prompts.length; r++) {
                int cut = free[r].length;
                for (int n = prompts[r].length; n < free[r].length; n++) {
                    if (free[r][n] == stop) {
                        cut = n + 1;
                        break;
                    }
                }
                if (cut < free[r].length) stoppedSomewhere++;
                assertArrayEquals(java.util.Arrays.copyOf(free[r], cut), texts[r], "sequence " + r);
                assertArrayEquals(texts[r], alone.generate(new int[][]{prompts[r]}, count, 1.0, 0, new Rng[]{new Rng(60 + r)}, stop)[0],
                        "sequence " + r + " alone with the stop");
                assertEquals(gens[r].nextDouble(), after(new Rng(60 + r), cut - prompts[r].length).nextDouble(), "sequence " + r + "'s draws");
            }
            assertTrue(best >= 2, "the stop token " + stop + " is first drawn at " + best + " different steps");
            assertTrue(stoppedSomewhere >= 2, stoppedSomewhere + " sequences drew the stop token");
            org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> alone.generate(new int[][]{{1}}, 3, 1.0, 0,
                    new Rng[]{new Rng(1)}, 13));
        }
    }

    /** rng after n draws. */
    private static Rng after(Rng rng, int n) {
        for (int i = 0; i < n; i++) rng.nextDouble();
        return rng;
    }

    /** Sets every parameter of m at random (norm weights near 1, the rest near 0) and returns forward-only ops over ws. */
    private static dev.distillery.runtime.autograd.DifferentiableOps randomForwardOnly(LanguageModel m, CpuKernels k,
                                                                                      dev.distillery.runtime.Workspace ws, Rng rng) {
        for (var p : m.parameters().parameters()) {
            float[] x = new float[(int) p.numel()];
            boolean norm = p.name().contains("ln_") || p.name().contains("norm");
            for (int i = 0; i < x.length; i++) x[i] = (float) ((norm && p.name().endsWith("weight") ? 1 : 0) + 0.4 * rng.nextGaussian());
            m.parameters().write(p, x);
        }
        var tape = new dev.distillery.runtime.autograd.Tape();
        tape.setEnabled(false);
        return new dev.distillery.runtime.autograd.DifferentiableOps(k, ws, tape);
    }
}
