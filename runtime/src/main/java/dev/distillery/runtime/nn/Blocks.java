package dev.distillery.runtime.nn;

import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;

/** The residual stream through a model's blocks, shared by both families. */
final class Blocks {

    /** One block: the residual stream (rows, width) in, the stream after the block out. */
    interface Block {
        Tensor apply(Tensor x, int layer);
    }

    private Blocks() {
    }

    /**
     * x through {@code layers} blocks. Recording, every activation stays for the backward. Not
     * recording (evaluation, a teacher), the stream is kept in one tensor and each block's
     * activations are freed once the block is done, so a deep model's forward needs one block's
     * activations, not all of them.
     */
    static Tensor run(DifferentiableOps ops, Tensor x, int layers, Block block) {
        return run(ops, x, layers, block, null);
    }

    /**
     * As above, showing {@code tap} (when not null) the stream before the first block (index 0)
     * and after each block but the last (index l + 1): the model taps its final norm's output.
     */
    static Tensor run(DifferentiableOps ops, Tensor x, int layers, Block block, LanguageModel.LayerTap tap) {
        if (tap != null) tap.observe(0, x);
        if (ops.tape().enabled()) {
            for (int l = 0; l < layers; l++) {
                x = block.apply(x, l);
                if (tap != null && l + 1 < layers) tap.observe(l + 1, x);
            }
            return x;
        }
        Workspace ws = ops.workspace();
        Tensor stream = ws.tensor("residual", x.shape());
        ops.kernels().copy(stream.data(), x.data(), x.byteSize());
        for (int l = 0; l < layers; l++) {
            long mark = ws.mark();
            Tensor y = block.apply(stream, l);
            ops.kernels().copy(stream.data(), y.data(), y.byteSize());
            ws.rewind(mark);
            if (tap != null && l + 1 < layers) tap.observe(l + 1, stream);
        }
        return stream;
    }
}
