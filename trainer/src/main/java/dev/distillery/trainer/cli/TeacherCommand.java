package dev.distillery.trainer.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.concurrent.Callable;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.parallel.Collective;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.trainer.teacher.LanguageModelTraining;
import dev.distillery.trainer.teacher.LogitDump;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/** {@code teacher train | dump-logits}: make a teacher in Java and store what it says. */
@Command(name = "teacher", mixinStandardHelpOptions = true,
        description = "Trains a teacher on a token file, or dumps its logits as teacher shards.",
        subcommands = {TeacherCommand.Train.class, TeacherCommand.DumpLogits.class})
public final class TeacherCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    @Command(name = "train", mixinStandardHelpOptions = true,
            description = {"Next-token (cross-entropy) training of a GPT-2 model on an llm.c token file.",
                    "Writes <out>/metrics.jsonl, <out>/curves.png and checkpoints in <out>/checkpoints/."})
    static final class Train implements Callable<Integer> {
        @Option(names = "--tokens", required = true, description = "Training token file (llm.c .bin).")
        Path tokens;
        @Option(names = "--val", description = "Held-out token file for perplexity.")
        Path val;
        @Option(names = "--out", required = true, description = "Run folder.")
        Path out;
        @Option(names = "--tokenizer", description = "tokenizer.json to store with the checkpoints.")
        Path tokenizer;
        @Option(names = "--vocab", required = true, description = "Vocabulary size (the tokenizer's).")
        int vocab;
        @Option(names = "--layers", defaultValue = "6", description = "Transformer blocks (default: ${DEFAULT-VALUE}).")
        int layers;
        @Option(names = "--channels", defaultValue = "384", description = "Model width (default: ${DEFAULT-VALUE}).")
        int channels;
        @Option(names = "--heads", defaultValue = "6", description = "Attention heads (default: ${DEFAULT-VALUE}).")
        int heads;
        @Option(names = "--context", defaultValue = "128", description = "Sequence length (default: ${DEFAULT-VALUE}).")
        int context;
        @Option(names = "--batch", defaultValue = "8", description = "Sequences per step (default: ${DEFAULT-VALUE}).")
        int batch;
        @Option(names = "--steps", defaultValue = "1000", description = "Optimizer steps (default: ${DEFAULT-VALUE}).")
        int steps;
        @Option(names = "--lr", defaultValue = "1e-3", description = "Peak learning rate (default: ${DEFAULT-VALUE}); cosine to lr/10.")
        double lr;
        @Option(names = "--warmup", defaultValue = "50", description = "Warmup steps (default: ${DEFAULT-VALUE}).")
        int warmup;
        @Option(names = "--eval-every", defaultValue = "0", description = "Steps between evaluations, 0 = at the end (default: ${DEFAULT-VALUE}).")
        int evalEvery;
        @Option(names = "--checkpoint-every", defaultValue = "500", description = "Steps between checkpoints, 0 = at the end only (default: ${DEFAULT-VALUE}).")
        int checkpointEvery;
        @Option(names = "--seed", defaultValue = "1234", description = "Init and data seed (default: ${DEFAULT-VALUE}).")
        long seed;
        @Option(names = "--resume", description = "Continue from the latest checkpoint in <out>/checkpoints (exactly).")
        boolean resume;
        @Option(names = "--stop-after", defaultValue = "0", description = "Stop with a checkpoint after this step; continue later with --resume.")
        int stopAfter;
        @Option(names = "--recompute-attention", description = "Keep none of attention's probabilities: they are made a band of rows at a"
                + " time in the forward and again in the backward, so no batch x heads x context^2 floats exist, for one more score product"
                + " a layer; the same bits on the CPU (but the backward's last bits under bf16 on AVX512-BF16; on CUDA, past one band of rows).")
        boolean recomputeAttention;
        @Mixin
        DeviceOptions device;
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws Exception {
            PrintWriter o = spec.commandLine().getOut(), e = spec.commandLine().getErr();
            Gpt2Config model = new Gpt2Config(vocab, context, layers, channels, heads);
            var options = new LanguageModelTraining.Options(tokens, val, out, tokenizer, model, batch, steps, lr, lr / 10, warmup,
                    0.1, 1.0, evalEvery, 16, checkpointEvery, seed, recomputeAttention);
            try (Kernels k = device.open(0, o)) {
                LanguageModelTraining.run(options, k, resume, stopAfter, o, e);
            }
            return 0;
        }
    }

    @Command(name = "dump-logits", mixinStandardHelpOptions = true,
            header = "Runs a teacher checkpoint over a token file and writes teacher shards.",
            description = "Runs a teacher checkpoint over a token file and writes teacher shards (docs/FORMATS.md): dense "
                    + "logits, top-k with the full logsumexp, or sampled ids with importance weights.")
    static final class DumpLogits implements Callable<Integer> {
        @Option(names = "--teacher", required = true, description = "Teacher checkpoint folder (config.json + model.safetensors).")
        Path teacher;
        @Option(names = "--tokens", required = true, description = "Token file to run the teacher over.")
        Path tokens;
        @Option(names = "--out", required = true, description = "Shard directory to write.")
        Path out;
        @Option(names = "--targets", defaultValue = "topk",
                description = "dense, topk or sampled (default: ${DEFAULT-VALUE}).")
        TeacherTargets.Kind kind;
        @Option(names = "--k", defaultValue = "64", description = "Top-k size or samples per position (default: ${DEFAULT-VALUE}).")
        int k;
        @Option(names = "--dtype", defaultValue = "bf16",
                description = "f32, f16 or bf16 logits (default: ${DEFAULT-VALUE}).")
        DType dtype;
        @Option(names = "--temperature", defaultValue = "1.0", description = "Shard temperature for the logsumexp and sampling (default: ${DEFAULT-VALUE}).")
        double temperature;
        @Option(names = "--seq-len", defaultValue = "0", description = "Tokens per sequence (default: the teacher's context).")
        int seqLen;
        @Option(names = "--shard-sequences", defaultValue = "1024", description = "Sequences per shard (default: ${DEFAULT-VALUE}).")
        int perShard;
        @Option(names = "--batch", defaultValue = "8", description = "Sequences per forward pass (default: ${DEFAULT-VALUE}).")
        int batch;
        @Option(names = "--max-sequences", defaultValue = "0", description = "At most this many sequences, 0 = all (default: ${DEFAULT-VALUE}).")
        int max;
        @Option(names = "--seed", defaultValue = "1234", description = "Seed of the sampled targets (default: ${DEFAULT-VALUE}).")
        long seed;
        @Option(names = "--tokenizer-id", description = "Tokenizer name for the manifest (default: the tokenizer file's path, or 'unknown').")
        String tokenizerId;
        @Option(names = "--tokenizer", description = "tokenizer.json the token ids were made with; its SHA-256 goes into the "
                + "manifest, and distill refuses a run tokenizer that differs (default: the teacher folder's tokenizer.json, if any).")
        Path tokenizer;
        @Option(names = "--overwrite", description = "Replace the shards of a non-empty --out (without it, such a folder is refused).")
        boolean overwrite;
        @Option(names = "--resume", description = "Continue a dump that stopped in --out (a signal, a crash): keep its whole shards and "
                + "write the rest, with the same options (checked against --out/dump.json).")
        boolean resume;
        @Option(names = "--hidden-layers", split = ",", paramLabel = "L",
                description = "Also store these hidden states of the teacher (bf16) for feature distillation, numbered as transformers' "
                        + "output_hidden_states: 0 the embeddings, l after block l, the number of blocks the final norm's output (e.g. 2,4).")
        int[] hiddenLayers;
        @Mixin
        DeviceOptions device;
        @CommandLine.Spec
        CommandLine.Model.CommandSpec spec;

        @Override
        public Integer call() throws Exception {
            PrintWriter o = spec.commandLine().getOut(), e = spec.commandLine().getErr();
            if (perShard < 1 || batch < 1) throw new CommandLine.ParameterException(spec.commandLine(), "--shard-sequences and --batch must be >= 1");
            // under mpirun, the ranks split the shards; else this process writes them all
            try (Collective collective = Collective.open()) {
                PrintWriter said = collective.rank() == 0 ? o : new PrintWriter(java.io.Writer.nullWriter());
                try (Kernels kernels = device.open(0, said)) {
                    LogitDump.run(new LogitDump.Options(teacher, tokens, out, kind, k, dtype, temperature, seqLen, perShard, batch, max, seed,
                            tokenizerId, tokenizer, overwrite, hiddenLayers, resume), kernels, collective, said, e);
                }
            }
            return 0;
        }
    }
}
