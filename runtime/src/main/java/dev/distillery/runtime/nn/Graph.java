package dev.distillery.runtime.nn;

import dev.distillery.kernels.Kernels;
import dev.distillery.runtime.Workspace;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.autograd.Tape;

/**
 * One workspace and one tape, shared by a session's training step and its evaluation: every
 * forward pass starts by {@link #reset}, so activations of one pass never outlive the next.
 */
final class Graph implements AutoCloseable {

    final Workspace workspace;
    final Tape tape = new Tape();
    final DifferentiableOps ops;

    Graph(Kernels kernels) {
        this.workspace = new Workspace(kernels, 1 << 20);
        this.ops = new DifferentiableOps(kernels, workspace, tape);
    }

    /** Frees the last pass's activations and tape; {@code record}: whether the next pass records for a backward. */
    void reset(boolean record) {
        tape.clear();
        workspace.reset();
        tape.setEnabled(record);
    }

    /** Recording on again, after a pass that did not record. */
    void recordAgain() {
        tape.setEnabled(true);
    }

    @Override
    public void close() {
        tape.clear();
        workspace.close();
    }
}
