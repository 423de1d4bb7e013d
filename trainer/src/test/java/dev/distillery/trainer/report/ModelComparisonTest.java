package dev.distillery.trainer.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModelForward;
import dev.distillery.runtime.nn.TextGenerator;
import dev.distillery.runtime.Rng;
import dev.distillery.trainer.data.TokenFile;

class ModelComparisonTest {

    private static final int VOCAB = 37, T = 12;

    private static Path tokens(Path dir) throws IOException {
        Rng rng = new Rng(5);
        int[] ids = new int[40 * T];
        for (int i = 0; i < ids.length; i++) ids[i] = (int) (rng.nextDouble() * VOCAB);
        Path p = dir.resolve("val.bin");
        TokenFile.write(p, ids);
        return p;
    }

    @Test
    void aTeacherThatSaysNothingGivesEverySampleThePerplexityOfItsVocabulary(@TempDir Path dir) throws IOException {
        // tied embeddings all zero: every logit of the teacher is 0, so each sampled token costs exactly log V
        try (var kernels = new CpuKernels(1, "auto"); var val = TokenFile.open(tokens(dir));
             var student = new Gpt2(new Gpt2Config(VOCAB, T, 1, 8, 2), kernels);
             var uniform = new Gpt2(new Gpt2Config(VOCAB, T, 1, 16, 2), kernels)) {
            student.initialize(3);
            uniform.initialize(4);
            Tensor wte = uniform.parameters().get("wte.weight");
            for (long i = 0; i < wte.numel(); i++) wte.setFloat(i, 0f);
            assertEquals(VOCAB, ModelComparison.samplePerplexity(student, uniform, val, T, kernels), 1e-3);
        }
    }

    @Test
    void theTeacherScoresTheSampledHalfOfEachWindowAsAFloat64ReferenceDoes(@TempDir Path dir) throws IOException {
        try (var kernels = new CpuKernels(1, "auto"); var val = TokenFile.open(tokens(dir));
             var student = new Gpt2(new Gpt2Config(VOCAB, T, 1, 8, 2), kernels);
             var teacher = new Gpt2(new Gpt2Config(VOCAB, T, 2, 16, 2), kernels);
             var generator = new TextGenerator(student, kernels);
             var one = new LanguageModelForward(teacher, kernels, 1, T);
             var host = Arena.ofConfined()) {
            student.initialize(3);
            teacher.initialize(5);
            int prompt = T / 2, windows = (int) Math.min(ModelComparison.SAMPLES, val.size() / T);
            MemorySegment ids = host.allocate(4L * T, 64);
            int[] start = new int[prompt];
            double nll = 0;
            for (int b = 0; b < windows; b++) {
                val.read((long) b * T, prompt, start);
                int[] seq = generator.generate(start, T - prompt, 1.0, 0, new Rng(ModelComparison.SAMPLE_SEED + b));
                for (int p = 0; p < T; p++) ids.setAtIndex(ValueLayout.JAVA_INT, p, seq[p]);
                MemorySegment logits = one.logits(ids);
                for (int p = prompt - 1; p < T - 1; p++) {
                    double max = Double.NEGATIVE_INFINITY, sum = 0;
                    for (int j = 0; j < VOCAB; j++) max = Math.max(max, logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) p * VOCAB + j));
                    for (int j = 0; j < VOCAB; j++) sum += Math.exp(logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) p * VOCAB + j) - max);
                    nll += max + Math.log(sum) - logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) p * VOCAB + seq[p + 1]);
                }
            }
            double reference = Math.exp(nll / (windows * (T - prompt)));
            assertEquals(reference, ModelComparison.samplePerplexity(student, teacher, val, T, kernels), 1e-4 * reference);
        }
    }

    @Test
    void samplesAreSeededAlikeForEveryModelAndIdsTheTeacherCannotScoreGiveNaN(@TempDir Path dir) throws IOException {
        try (var kernels = new CpuKernels(1, "auto"); var val = TokenFile.open(tokens(dir));
             var a = new Gpt2(new Gpt2Config(VOCAB, T, 1, 8, 2), kernels);
             var b = new Gpt2(new Gpt2Config(VOCAB, T, 1, 8, 2), kernels);
             var teacher = new Gpt2(new Gpt2Config(VOCAB, T, 2, 16, 2), kernels);
             var wider = new Gpt2(new Gpt2Config(VOCAB + 3, T, 1, 8, 2), kernels)) {
            a.initialize(3);
            b.initialize(4);
            teacher.initialize(5);
            wider.initialize(3);
            double pa = ModelComparison.samplePerplexity(a, teacher, val, T, kernels);
            assertTrue(Double.isFinite(pa) && pa > 1, "perplexity " + pa);
            assertEquals(pa, ModelComparison.samplePerplexity(a, teacher, val, T, kernels), 0, "the same samples again");
            assertNotEquals(pa, ModelComparison.samplePerplexity(b, teacher, val, T, kernels), "another model writes other text");
            assertTrue(Double.isNaN(ModelComparison.samplePerplexity(wider, teacher, val, T, kernels)), "ids the teacher cannot score");
        }
    }
}
