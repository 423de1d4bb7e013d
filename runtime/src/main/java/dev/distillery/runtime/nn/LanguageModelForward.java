package dev.distillery.runtime.nn;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;

/**
 * A model's logits for batches of (b, t) token windows, forward only: what a teacher gives. It
 * records nothing for a backward, and frees each block's activations once the next block has read
 * them, so its workspace holds one block's activations and the logits.
 */
public final class LanguageModelForward implements AutoCloseable {

    private final LanguageModel model;
    private final Kernels kernels;
    private final Graph graph;
    private final int b, t;
    private final Arena arena = Arena.ofShared();
    private final Tensor tokens;
    private MemorySegment hostLogits;
    private Tensor lastLogits;

    /** @param model not closed with this */
    public LanguageModelForward(LanguageModel model, Kernels kernels, int b, int t) {
        if (t > model.contextLength()) {
            throw new IllegalArgumentException("windows of " + t + " exceed the model's context " + model.contextLength());
        }
        this.model = model;
        this.kernels = kernels;
        this.graph = new Graph(kernels);
        this.b = b;
        this.t = t;
        this.tokens = new Tensor("tokens", new int[]{b, t}, DType.I32, Device.of(kernels), kernels.allocate(arena, 4L * b * t), false);
    }

    public int vocabSize() {
        return model.vocabSize();
    }

    /** The model's kernels (where a tapped hidden state lives). */
    public Kernels kernels() {
        return kernels;
    }

    /**
     * The logits (b·t, vocab) of the windows {@code ids} (b·t int32, host memory), readable on the
     * host, valid until the next call.
     */
    public MemorySegment logits(MemorySegment ids) {
        return logits(ids, null);
    }

    /** As above, showing {@code tap} (when not null) the hidden states on the way ({@link LanguageModel#hidden}). */
    public MemorySegment logits(MemorySegment ids, LanguageModel.LayerTap tap) {
        kernels.copyFromHost(tokens.data(), ids, 4L * b * t);
        graph.reset(false);
        lastLogits = graph.ops.projection(model.hidden(graph.ops, tokens, b, t, tap), model.lmHeadWeight(), null);
        if (kernels.hostAccessible()) return lastLogits.data();
        if (hostLogits == null) hostLogits = arena.allocate(lastLogits.byteSize(), 64);
        kernels.copyToHost(hostLogits, lastLogits.data(), lastLogits.byteSize());
        return hostLogits;
    }

    /** Per row of the last {@link #logits}: {@code log Σ_j exp(logit_j / temperature)}, computed where the logits live. */
    public float[] logsumexpOfLastLogits(double temperature) {
        if (lastLogits == null) throw new IllegalStateException("call logits() first");
        int n = b * t;
        MemorySegment lse = graph.workspace.tensor("lse", n).data();
        kernels.logsumexpRows(lse, lastLogits.data(), n, model.vocabSize(), (float) (1 / temperature));
        try (Arena host = Arena.ofConfined()) {
            return kernels.hostView(lse, 4L * n, host).toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    /**
     * Σ over the rows of windows {@code ids} (b·t int32, host memory) whose target is not
     * {@link DifferentiableOps#IGNORE_INDEX} of −log softmax(logits)[target]; targets (b·t).
     */
    public double negativeLogLikelihood(MemorySegment ids, int[] targets) {
        MemorySegment logits = logits(ids);
        float[] lse = logsumexpOfLastLogits(1.0);
        int v = model.vocabSize();
        double sum = 0;
        for (int r = 0; r < b * t; r++) {
            if (targets[r] != DifferentiableOps.IGNORE_INDEX) sum += lse[r] - logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) r * v + targets[r]);
        }
        return sum;
    }

    @Override
    public void close() {
        graph.close();
        arena.close();
    }
}
