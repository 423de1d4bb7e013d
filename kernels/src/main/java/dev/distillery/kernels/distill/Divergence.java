package dev.distillery.kernels.distill;

/**
 * Which divergence between teacher p = softmax(t/T) and student q = softmax(s/T) the loss uses.
 * The math and gradients are in docs/KERNELS.md#distillation-losses.
 */
public sealed interface Divergence {

    /** Hinton's KL(p‖q) = Σ p (log p − log q). */
    record ForwardKl() implements Divergence {
    }

    /** KL(q‖p) = Σ q (log q − log p), mode-seeking. */
    record ReverseKl() implements Divergence {
    }

    /**
     * Generalized Jensen–Shannon: β KL(p‖m) + (1−β) KL(q‖m), m = β p + (1−β) q, 0 &lt; β &lt; 1
     * (at β = 0 or 1 it is identically 0; use the KLs for those ends).
     */
    record Jsd(double beta) implements Divergence {
        public Jsd {
            if (!(beta > 0 && beta < 1)) {
                throw new IllegalArgumentException("JSD beta must be in (0, 1), got " + beta
                        + " (use forward or reverse KL for the ends)");
            }
        }
    }

    static Divergence forwardKl() {
        return new ForwardKl();
    }

    static Divergence reverseKl() {
        return new ReverseKl();
    }

    static Divergence jsd(double beta) {
        return new Jsd(beta);
    }
}
