package dev.distillery.bench;

import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Precision;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.TextGenerator;

/**
 * Greedy generation through the KV cache ({@link TextGenerator}): {@code tokens} new tokens from
 * one start token per call, in milliseconds (tokens/s = tokens / seconds). JMH's warm-up lets the
 * JIT compile the decode path first, so this is the rate of a process that generates for a while;
 * {@code trainer.jar generate} prints the rate of one run in a fresh JVM, which includes that
 * compilation (docs/PERFORMANCE.md, "Generation with a KV cache").
 *
 * <p>{@code model}: a checkpoint folder of either family, read as {@code generate} reads it;
 * {@code demo-teacher}, a GPT-2 of the quick demo's teacher shape (vocabulary 1,024, context 64,
 * 4 × 192, 6 heads); or {@code gpt2-vocab}, a 4 × 128 GPT-2 (4 heads, context 256) with GPT-2's
 * 50,257-token vocabulary, where the LM head and the sampling over the vocabulary weigh most;
 * or {@code llama3-vocab}, the same with Llama 3's 128,256-token vocabulary; random weights for
 * all three. Past the context the window slides and each token costs a window's
 * forward. {@code temperature} 0 is greedy; else sampling, among the {@code topK} most likely
 * (0: all), as {@code generate --temperature --top-k}. {@code batch} sequences from the same
 * start token decode together, each sampling from its own generator, as {@code generate --samples
 * --batch} does (tokens/s = batch · tokens / seconds). With {@code prompts} N > 0, N prompts of
 * random ids and random lengths of 1 to {@code promptLength} tokens are continued instead, {@code
 * batch} at a time, by {@link TextGenerator#generateAll} as {@code generate --prompt-file} does
 * (tokens/s = N · tokens / seconds): {@code spread} 0 batches prompts of one length only, −1 takes
 * {@link TextGenerator#spread}.
 *
 * <pre>java -jar bench/target/benchmarks.jar GenerationBenchmark -p model=CHECKPOINT -p tokens=250
 * java -jar bench/target/benchmarks.jar GenerationBenchmark -p model=gpt2-vocab -p batch=32 -p prompts=64 -p spread=0,-1</pre>
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "-XX:-UseProfiledLoopPredicate", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class GenerationBenchmark {

    @Param({"demo-teacher"})
    public String model;

    @Param({"63"})
    public int tokens;

    @Param({"2"})
    public int threads;

    /** The fp32 GEMM: auto = ours where the native CPU library runs; blas = OpenBLAS; vector = the pure Vector-API GEMM. */
    @Param({"auto"})
    public String gemm;

    @Param({"0"})
    public double temperature;

    @Param({"0"})
    public int topK;

    @Param({"1"})
    public int batch;

    /** 0: batch sequences from the start token; N: N prompts of random lengths through {@link TextGenerator#generateAll}. */
    @Param({"0"})
    public int prompts;

    @Param({"48"})
    public int promptLength;

    /** generateAll's spread: 0, one length a batch; −1, {@link TextGenerator#spread}. */
    @Param({"-1"})
    public int spread;

    /** fp32, or bf16 (as {@code generate --precision}: the GEMMs on bf16 operands). */
    @Param({"fp32"})
    public String precision;

    /** cpu, or cuda (on a machine with a GPU: each token's few dozen launches). */
    @Param({"cpu"})
    public String device;

    private Kernels kernels;
    private LanguageModel lm;
    private TextGenerator generator;
    private int[][] starts;
    private java.util.List<int[]> promptList;

    @Setup(Level.Trial)
    public void setUp() throws IOException {
        kernels = HostOnlyCudaBackend.openKernels(device, threads, gemm, Precision.parse(precision, "precision"));
        Gpt2Config shape = switch (model) {
            case "demo-teacher" -> new Gpt2Config(1024, 64, 4, 192, 6);
            case "gpt2-vocab" -> new Gpt2Config(50257, 256, 4, 128, 4);
            case "llama3-vocab" -> new Gpt2Config(128256, 256, 4, 128, 4);
            default -> null;
        };
        if (shape != null) {
            Gpt2 g = new Gpt2(shape, kernels);
            g.initialize(1);
            lm = g;
        } else {
            lm = ModelFiles.readTeacher(Path.of(model), kernels);
        }
        generator = new TextGenerator(lm, kernels, batch);
        starts = new int[batch][];
        java.util.Arrays.fill(starts, new int[]{lm.vocabSize() - 1});
        Rng rng = new Rng(7);
        promptList = new java.util.ArrayList<>();
        for (int i = 0; i < prompts; i++) {
            int[] p = new int[1 + rng.nextInt(promptLength)];
            for (int j = 0; j < p.length; j++) p[j] = rng.nextInt(lm.vocabSize());
            promptList.add(p);
        }
    }

    @Benchmark
    public int[][] generate() {
        if (prompts > 0) {
            return generator.generateAll(promptList, tokens, temperature, topK, TextGenerator.NO_STOP, spread < 0 ? TextGenerator.spread(tokens) : spread, i -> new Rng(1 + i), done -> true);
        }
        Rng[] rngs = new Rng[batch];
        for (int r = 0; r < batch; r++) rngs[r] = new Rng(1 + r);
        return generator.generate(starts, tokens, temperature, topK, rngs);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        generator.close();
        lm.close();
        kernels.close();
    }
}
