package dev.distillery.trainer.cli;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.io.LlamaFiles;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.io.ModelWeights;
import dev.distillery.runtime.io.SafetensorsFile;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LlamaConfig;
import dev.distillery.trainer.data.TeacherManifest;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.distill.DistillRun;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

/** Prints what a file holds: a safetensors header, a teacher shard directory, or a token file. */
@Command(name = "inspect",
        mixinStandardHelpOptions = true,
        header = "Validates a file (safetensors, teacher shards, checkpoint, tokens) and shows what it holds.",
        description = {
                "Shows what a file holds, after validating it:",
                "  a .safetensors file: every tensor's dtype, shape and byte range, and the metadata;",
                "  a teacher shard directory (with manifest.json): the manifest and each shard's tensors;",
                "  a checkpoint folder (config.json + model.safetensors): the architecture, tensors and trainer state;",
                "  an llm.c token file (.bin): layout, token count and the first tokens."})
public final class InspectCommand implements Callable<Integer> {

    @Parameters(paramLabel = "PATH", description = "A .safetensors file, a teacher shard directory, a checkpoint folder or a .bin token file.")
    Path path;

    @CommandLine.Option(names = "--verify", description = "For a shard directory: check every shard's SHA-256 against the manifest and every teacher value "
            + "(finite, ids in range and distinct, top-k mass at most 1, sampled weights summing to 1).")
    boolean verify;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        if (Files.isDirectory(path) && Files.exists(path.resolve(ModelFiles.CONFIG))) {
            if (ModelFiles.isLlama(path)) {
                LlamaConfig c = LlamaFiles.readConfig(path.resolve(ModelFiles.CONFIG));
                out.printf(Locale.ROOT, "checkpoint %s: %s, %d layers, hidden %d, %d heads (%d key/value) of %d, MLP %d, vocab %d, "
                                + "context %d, rms eps %s, rope theta %s%s%s%s%n", path, c.family().architecture, c.layers(), c.hidden(), c.heads(),
                        c.kvHeads(), c.headSize(), c.intermediate(), c.vocabSize(), c.contextLength(), c.rmsEps(), c.rope().theta(),
                        c.rope().llama3() != null ? " (llama3 scaling)" : "", c.qkvBias() ? ", q/k/v biases" : "", c.tied() ? ", tied head" : "");
            } else {
                Gpt2Config c = ModelFiles.readConfig(path.resolve(ModelFiles.CONFIG));
                out.printf(Locale.ROOT, "checkpoint %s: GPT-2, %d layers, %d channels, %d heads, vocab %d, context %d: %,d parameters%n",
                        path, c.layers(), c.channels(), c.heads(), c.vocabSize(), c.contextLength(), c.parameterCount());
            }
            out.println("tokenizer.json: " + (Files.exists(path.resolve("tokenizer.json")) ? "present" : "absent"));
            boolean split = !Files.exists(path.resolve(ModelFiles.MODEL)) && Files.exists(path.resolve(ModelWeights.INDEX));
            if (split) {
                try (ModelWeights weights = ModelWeights.open(path)) {   // every listed file present and holding its tensors
                    out.printf("%nweights: %s%n", weights.describe(path));
                }
            }
            for (String f : split ? new String[]{"trainer_state.safetensors"} : new String[]{ModelFiles.MODEL, "trainer_state.safetensors"}) {
                if (!Files.exists(path.resolve(f))) {
                    out.printf("%n%s: absent%n", f);
                    continue;
                }
                try (SafetensorsFile st = SafetensorsFile.open(path.resolve(f))) {
                    out.printf(Locale.ROOT, "%n%s (%d tensors)%n", f, st.entries().size());
                    tensors(out, st);
                }
            }
        } else if (Files.isDirectory(path)) {
            if (!Files.exists(path.resolve("manifest.json"))) {
                throw new IllegalArgumentException(path + ": a directory with neither manifest.json (teacher shards) nor config.json (checkpoint)");
            }
            try (TeacherShards shards = TeacherShards.open(path, verify)) {
                TeacherManifest m = shards.manifest();
                out.printf(Locale.ROOT, "teacher shards %s: %d sequences of %d tokens, vocab %d, targets %s%s, dtype %s, temperature %s%n",
                        path, shards.sequences(), m.seqLen(), m.vocabSize(), m.targets(),
                        shards.layout().kind() == TeacherTargets.Kind.DENSE ? "" : " (k " + m.k() + ")", m.dtype(), m.temperature());
                out.printf(Locale.ROOT, "teacher %s, tokenizer %s%s%n", m.teacher(), m.tokenizer(), verify ? ", checksums verified" : "");
                if (verify) DistillRun.checkValues(shards, path.toString(), out, spec.commandLine().getErr());
                for (TeacherManifest.Shard s : m.shards()) {
                    try (SafetensorsFile st = SafetensorsFile.open(path.resolve(s.file()))) {
                        out.printf(Locale.ROOT, "%n%s (%d sequences)%n", s.file(), s.sequences());
                        tensors(out, st);
                    }
                }
            }
        } else if (path.toString().endsWith(".bin")) {
            try (TokenFile f = TokenFile.open(path)) {
                int n = (int) Math.min(16, f.size());
                int[] first = new int[n];
                f.read(0, n, first);
                out.printf(Locale.ROOT, "token file %s: %d tokens, uint%d%n", path, f.size(), 8 * f.tokenWidth());
                out.println("first tokens: " + Arrays.toString(first));
            }
        } else {
            try (SafetensorsFile st = openSafetensors(path)) {
                out.printf(Locale.ROOT, "safetensors %s: %d tensors, header %d bytes%n", path, st.entries().size(), st.headerBytes());
                tensors(out, st);
            }
        }
        return 0;
    }

    /** A file without the .safetensors name that does not parse as one is named for what inspect reads, not only for its header. */
    private static SafetensorsFile openSafetensors(Path path) throws IOException {
        try {
            return SafetensorsFile.open(path);
        } catch (IOException | RuntimeException e) {
            if (path.getFileName() == null || path.getFileName().toString().endsWith(".safetensors")) throw e;
            throw new IllegalArgumentException(path + ": not a .safetensors file (" + String.valueOf(e.getMessage()).replace(path + ": ", "")
                    + "); inspect reads .safetensors files, .bin token files, teacher shard directories and checkpoint folders", e);
        }
    }

    private static void tensors(PrintWriter out, SafetensorsFile st) {
        String format = "  %-32s %-5s %-20s %14s %14s%n";
        out.printf(Locale.ROOT, format, "tensor", "dtype", "shape", "begin", "bytes");
        for (SafetensorsFile.Entry e : st.entries().values()) {
            out.printf(Locale.ROOT, format, e.name(), e.dtype().safetensorsName(), Arrays.toString(e.shape()), e.begin(), e.byteSize());
        }
        for (Map.Entry<String, String> kv : st.metadata().entrySet()) {
            out.printf(Locale.ROOT, "  metadata %s = %s%n", kv.getKey(), kv.getValue());
        }
    }
}
