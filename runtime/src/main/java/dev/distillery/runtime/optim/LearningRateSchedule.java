package dev.distillery.runtime.optim;

/**
 * Linear warmup from 0 to {@code maxLr} over {@code warmupSteps}, then cosine decay to
 * {@code minLr} at {@code totalSteps}, constant after. Steps count from 1.
 */
public record LearningRateSchedule(double maxLr, double minLr, int warmupSteps, int totalSteps) {

    public LearningRateSchedule {
        if (!(maxLr > 0)) throw new IllegalArgumentException("maxLr must be positive, got " + maxLr);
        if (minLr < 0 || minLr > maxLr) throw new IllegalArgumentException("minLr must be in [0, maxLr], got " + minLr);
        if (warmupSteps < 0) throw new IllegalArgumentException("warmupSteps must be >= 0, got " + warmupSteps);
        if (totalSteps < 1) throw new IllegalArgumentException("totalSteps must be >= 1, got " + totalSteps);
    }

    public static LearningRateSchedule constant(double lr) {
        return new LearningRateSchedule(lr, lr, 0, 1);
    }

    public double at(int step) {
        if (step < 1) throw new IllegalArgumentException("steps count from 1, got " + step);
        if (step <= warmupSteps) return maxLr * step / warmupSteps;
        if (step >= totalSteps) return minLr;
        double progress = (double) (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
        return minLr + 0.5 * (maxLr - minLr) * (1 + Math.cos(Math.PI * progress));
    }
}
