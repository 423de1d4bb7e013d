package dev.distillery.kernels.distill;

/**
 * How a student's hidden state is compared with a teacher's in feature (hidden-state)
 * distillation. The math and gradients are in docs/KERNELS.md#feature-distances.
 */
public enum FeatureDistance {
    /** (1/d) Σ_k (s_k − t_k)²: the mean squared error over the width. */
    MSE,
    /** 1 − s·t / (max(‖s‖, ε) · max(‖t‖, ε)), ε = 1e-8 (PyTorch's cosine_similarity). */
    COSINE;

    /** The norms' floor in the cosine distance. */
    public static final float EPS = 1e-8f;
}
