package dev.distillery.trainer.cli;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import java.util.stream.Stream;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.Backends;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.trainer.data.TeacherShardFormat;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code export}: a checkpoint's model for inference, in bf16 by default. Training keeps fp32
 * master weights (and its checkpoints with them, so a run resumes exactly); an export is the
 * model alone, rounded to nearest even, for {@code transformers} or any loader of the family.
 */
@Command(name = "export", mixinStandardHelpOptions = true,
        header = "Writes a checkpoint's model for inference, in a folder that transformers opens.",
        description = "Writes a checkpoint's model for inference into a new folder: config.json and model.safetensors with "
                + "the weights in --dtype (rounded to nearest even), the tokenizer files beside them, no trainer "
                + "state. Reads both families, one file or sharded; the folder opens in transformers as it is.")
public final class ExportCommand implements Callable<Integer> {

    /** What an inference folder keeps of a checkpoint besides the weights and config.json: the tokenizer's files. */
    static final List<String> TOKENIZER_FILES = List.of("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "vocab.json", "merges.txt", "tokenizer.model", "generation_config.json");

    @Parameters(paramLabel = "CHECKPOINT", description = "Checkpoint folder (config.json and model.safetensors, or sharded with an index).")
    Path checkpoint;

    @Option(names = "--out", required = true, description = "New folder to write (must not exist, or be empty).")
    Path out;

    @Option(names = "--dtype", defaultValue = "bf16", description = "Weight type: bf16, f16 or f32 (default: ${DEFAULT-VALUE}).")
    DType dtype;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        PrintWriter log = spec.commandLine().getOut();
        if (Files.exists(out) && (!Files.isDirectory(out) || !isEmpty(out))) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--out " + out + " exists and is not an empty folder");
        }
        if (!Files.isRegularFile(checkpoint.resolve(ModelFiles.CONFIG))) {
            throw new IOException(checkpoint + ": no " + ModelFiles.CONFIG + " (export reads a checkpoint folder)");
        }
        Files.createDirectories(out);
        try (Kernels kernels = Backends.open(Backends.Request.cpu(1, "auto")); LanguageModel model = ModelFiles.readTeacher(checkpoint, kernels)) {
            ModelFiles.write(out, model, dtype);
            int copied = 0;
            for (String name : TOKENIZER_FILES) {
                if (Files.isRegularFile(checkpoint.resolve(name))) {
                    Files.copy(checkpoint.resolve(name), out.resolve(name), StandardCopyOption.COPY_ATTRIBUTES);
                    copied++;
                }
            }
            log.printf(Locale.ROOT, "%s -> %s: %s; weights in %s, %,d bytes; %d tokenizer file%s copied%n", checkpoint, out,
                    model.describe(), TeacherShardFormat.name(dtype),
                    Files.size(out.resolve(ModelFiles.MODEL)), copied, copied == 1 ? "" : "s");
        }
        return 0;
    }

    private static boolean isEmpty(Path dir) throws IOException {
        try (Stream<Path> entries = Files.list(dir)) {
            return entries.findAny().isEmpty();
        }
    }
}
