package dev.distillery.trainer.checkpoint;

import java.nio.file.Path;
import java.util.Map;

import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;

/**
 * Run in a child JVM by {@link CheckpointStoreTest}: writes checkpoints step after step, forever,
 * each with every parameter equal to its step number, until it is killed.
 */
public final class CheckpointWriterChild {

    public static void main(String[] args) throws Exception {
        CheckpointStore store = CheckpointStore.open(Path.of(args[0]));
        int step = store.latest().map(CheckpointStore.Checkpoint::step).orElse(0);
        try (var kernels = new dev.distillery.kernels.cpu.CpuKernels(1, "vector");
             Gpt2 model = new Gpt2(new Gpt2Config(97, 16, 2, 32, 4), kernels)) {
            while (true) {
                step++;
                for (Tensor t : model.parameters().parameters()) {
                    for (long i = 0; i < t.numel(); i++) t.setFloat(i, step);
                }
                int at = step;
                store.save(step, dir -> {
                    ModelFiles.write(dir, model);
                    dev.distillery.runtime.io.SafetensorsWriter.write(dir.resolve("trainer_state.safetensors"), java.util.List.of(),
                            Map.of("step", Integer.toString(at)));
                });
                store.prune(2);
            }
        }
    }
}
