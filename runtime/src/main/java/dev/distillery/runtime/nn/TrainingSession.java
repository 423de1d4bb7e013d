package dev.distillery.runtime.nn;

import java.lang.foreign.MemorySegment;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.DType;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * One model, its optimizer, a workspace and a tape: the training step (forward, fused loss,
 * backward, clipping, AdamW) and evaluation on a fixed (batch, time) shape. Token and target
 * batches live in persistent buffers, so a steady loop allocates no native memory.
 */
public final class TrainingSession implements AutoCloseable {

    /** What one step did. */
    public record StepResult(int step, double loss, double gradNorm, double lr) {
    }

    private final Transformer model;
    private final Kernels kernels;
    private final AdamW optimizer;
    private final LearningRateSchedule schedule;
    private final double maxGradNorm;
    private final int batch;
    private final int time;
    private final Workspace workspace = new Workspace(1 << 20);
    private final Tape tape = new Tape();
    private final DifferentiableOps ops;
    private final java.lang.foreign.Arena ioArena = java.lang.foreign.Arena.ofShared();
    private final Tensor tokens;
    private final Tensor targets;

    public TrainingSession(Transformer model, Kernels kernels, AdamW.Config adam, LearningRateSchedule schedule,
                           double maxGradNorm, int batch, int time) {
        if (time > model.config().contextLength()) {
            throw new IllegalArgumentException("sequence length " + time + " exceeds the model's context " + model.config().contextLength());
        }
        this.model = model;
        this.kernels = kernels;
        this.optimizer = new AdamW(model.parameters(), kernels, adam);
        this.schedule = schedule;
        this.maxGradNorm = maxGradNorm;
        this.batch = batch;
        this.time = time;
        this.ops = new DifferentiableOps(kernels, workspace, tape);
        this.tokens = new Tensor("tokens", new int[]{batch, time}, DType.I32, Device.CPU, ioArena.allocate(4L * batch * time, 64), false);
        this.targets = new Tensor("targets", new int[]{batch * time}, DType.I32, Device.CPU, ioArena.allocate(4L * batch * time, 64), false);
    }

    public Transformer model() {
        return model;
    }

    public AdamW optimizer() {
        return optimizer;
    }

    public Workspace workspace() {
        return workspace;
    }

    /** The (batch, time) int32 input buffer; fill it before {@link #step()} or {@link #evaluate()}. */
    public MemorySegment tokens() {
        return tokens.data();
    }

    /** The (batch · time) int32 target buffer; -100 masks a position. */
    public MemorySegment targets() {
        return targets.data();
    }

    /** Forward, loss, backward, clip, AdamW on the current token and target buffers. */
    public StepResult step() {
        workspace.reset();
        tape.clear();
        tape.setEnabled(true);
        model.parameters().zeroGrad(kernels);
        Tensor logits = model.forward(ops, tokens, batch, time);
        DifferentiableOps.Loss loss = ops.crossEntropy(logits, targets, 1f);
        tape.backward();
        double norm = optimizer.clipGradNorm(maxGradNorm);
        double lr = schedule.at(optimizer.step() + 1);
        optimizer.update(lr);
        return new StepResult(optimizer.step(), loss.mean(), norm, lr);
    }

    /** Mean cross-entropy of the current buffers without touching gradients or parameters. */
    public double evaluate() {
        workspace.reset();
        tape.clear();
        tape.setEnabled(false);
        try {
            Tensor logits = model.forward(ops, tokens, batch, time);
            return ops.crossEntropy(logits, targets, 1f).mean();
        } finally {
            tape.setEnabled(true);
        }
    }

    @Override
    public void close() {
        workspace.close();
        ioArena.close();
    }
}
