package dev.distillery.runtime.autograd;

import java.util.ArrayList;
import java.util.List;

import dev.distillery.kernels.Kernels;

/**
 * The reverse-mode record of one forward pass: each differentiable op appends the closure that
 * computes its backward. {@link #backward()} runs them newest first. While disabled (evaluation)
 * ops record nothing and the fused loss writes no gradient.
 */
public final class Tape {

    private final List<Runnable> steps = new ArrayList<>();
    private final List<Kernels.ConstantHold> holds = new ArrayList<>();
    private boolean enabled = true;

    public boolean enabled() {
        return enabled;
    }

    public void setEnabled(boolean enabled) {
        this.enabled = enabled;
    }

    void record(Runnable backwardStep) {
        if (enabled) steps.add(backwardStep);
    }

    public int size() {
        return steps.size();
    }

    /**
     * Keeps {@code hold} open until the backward has run, or until the tape is cleared (the next
     * pass, after one that failed half way): a hold on an activation must close before the
     * workspace hands its addresses to another.
     */
    void keepUntilBackward(Kernels.ConstantHold hold) {
        holds.add(hold);
    }

    /** Runs every recorded backward step in reverse order, then forgets them. */
    public void backward() {
        try {
            for (int i = steps.size() - 1; i >= 0; i--) {
                steps.get(i).run();
            }
        } finally {
            clear();
        }
    }

    /** Forgets the recorded steps and closes the holds kept for them. */
    public void clear() {
        steps.clear();
        for (Kernels.ConstantHold hold : holds) hold.close();
        holds.clear();
    }
}
