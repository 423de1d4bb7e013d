package dev.distillery.runtime.distill;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HashMap;
import java.util.Map;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.nn.LanguageModel;

/**
 * A teacher model run inside the training process, on the student's backend, forward only: its
 * parameters are frozen (no gradients, no moments) and nothing is recorded for a backward. For a
 * batch of (b, t) tokens it computes its final hidden states (b·t, d) once, freeing each block's
 * activations as it goes; its logits exist one chunk of rows at a time, (chunk, V), when the
 * fused loss asks for that chunk, so the (b·t, V) matrix never exists. Memory beyond the weights
 * (fp32): one block's activations, the hidden states, and one chunk of logits; since the teacher
 * holds its parameters constant ({@link Kernels#holdConstant}) while it is open, under the CPU's
 * bf16 GEMM also the weights packed in bf16 (half their size), and under its fp32 GEMM those
 * that products of at most 512 rows read, packed at their size (the LM head's, read a chunk of
 * logits at a time; every weight where a micro-batch has that few tokens).
 */
public final class InProcessTeacher implements AutoCloseable {

    private final LanguageModel model;
    private final Kernels kernels;
    private final Workspace workspace;
    private final DifferentiableOps ops;
    private final Arena arena = Arena.ofShared();
    private final int chunkRows;
    private final MemorySegment logits, top1;
    private int[] keptLayers = new int[0];
    private final Map<Integer, MemorySegment> kept = new HashMap<>();
    private long keptRows;
    private final Kernels.ConstantHold frozen;

    /**
     * @param model     the teacher, frozen ({@code ModelFiles.readTeacher}), its weights unchanged
     *                  while this is open; not closed with this
     * @param chunkRows the most rows of logits asked for at once
     */
    public InProcessTeacher(LanguageModel model, Kernels kernels, int chunkRows) {
        if (model.parameters().kernels() != kernels) {
            throw new IllegalArgumentException("the teacher's parameters live in the memory of " + model.parameters().kernels().describe()
                    + ", not of " + kernels.describe());
        }
        this.model = model;
        this.kernels = kernels;
        this.chunkRows = chunkRows;
        this.workspace = new Workspace(kernels, 1 << 20);
        Tape tape = new Tape();
        tape.setEnabled(false);
        this.ops = new DifferentiableOps(kernels, workspace, tape);
        this.logits = kernels.allocate(arena, 4L * chunkRows * model.vocabSize());
        this.top1 = kernels.allocate(arena, 4L * chunkRows);
        this.frozen = kernels.holdConstant(model.parameters().paramBlock());
    }

    public LanguageModel model() {
        return model;
    }

    /** Bytes of the one chunk of logits: the extra memory of the teacher's head. */
    public long chunkBytes() {
        return 4L * chunkRows * model.vocabSize();
    }

    /** The most bytes the teacher's forward has needed (activations of one block and the hidden states). */
    public long workspaceHighWater() {
        return workspace.highWater();
    }

    /**
     * From the next {@link #forward} on, also keeps a copy of these hidden states (numbered as
     * {@link LanguageModel.LayerTap} numbers them) for feature distillation: {@link #hiddenStates()}.
     */
    public void keepHiddenStates(int... layers) {
        for (int l : layers) {
            if (l < 0 || l > model.layers()) {
                throw new IllegalArgumentException("teacher hidden state " + l + " does not exist: the teacher has " + model.layers()
                        + " blocks, so states 0.." + model.layers());
            }
        }
        keptLayers = layers.clone();
    }

    /** The kept hidden states of the last {@link #forward}, (b·t, width) fp32 each. */
    public FeatureDistillation.TeacherStates hiddenStates() {
        return FeatureDistillation.TeacherStates.of(kept, DType.F32);
    }

    /**
     * The teacher on {@code tokens} (int32 (b, t), where the kernels read them): its hidden states
     * now, its logits chunk by chunk through the returned rows, valid until the next call.
     */
    public TeacherRows forward(Tensor tokens, int b, int t) {
        workspace.reset();
        long bytes = 4L * b * t * model.width();
        if (keptLayers.length > 0 && keptRows < (long) b * t) {
            for (int l : keptLayers) kept.put(l, kernels.allocate(arena, bytes));
            keptRows = (long) b * t;
        }
        Tensor hidden = model.hidden(ops, tokens, b, t, keptLayers.length == 0 ? null : (index, state) -> {
            MemorySegment copy = kept.get(index);
            if (copy != null) kernels.copy(copy, state.data(), bytes);
        });
        int d = model.width(), v = model.vocabSize();
        MemorySegment head = model.lmHeadWeight().data();
        return new ChunkLogits(kernels, logits, top1) {
            @Override
            int fill(int r0, int r1, MemorySegment out) {
                int n = r1 - r0;
                if (n < 1 || n > chunkRows || r1 > b * t) throw new IllegalArgumentException("rows [" + r0 + ", " + r1 + ") of " + b * t + " in chunks of " + chunkRows);
                kernels.projectionForward(out, hidden.data().asSlice(4L * r0 * d), DType.F32, head, null, n, d, v);
                return v;
            }
        };
    }

    @Override
    public void close() {
        frozen.close();
        workspace.close();
        arena.close();
    }
}
