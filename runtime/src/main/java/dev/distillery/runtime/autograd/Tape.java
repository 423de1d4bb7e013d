package dev.distillery.runtime.autograd;

import java.util.ArrayList;
import java.util.List;

/**
 * The reverse-mode record of one forward pass: each differentiable op appends the closure that
 * computes its backward. {@link #backward()} runs them newest first. While disabled (evaluation)
 * ops record nothing and the fused loss writes no gradient.
 */
public final class Tape {

    private final List<Runnable> steps = new ArrayList<>();
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

    /** Runs every recorded backward step in reverse order, then forgets them. */
    public void backward() {
        for (int i = steps.size() - 1; i >= 0; i--) {
            steps.get(i).run();
        }
        steps.clear();
    }

    public void clear() {
        steps.clear();
    }
}
