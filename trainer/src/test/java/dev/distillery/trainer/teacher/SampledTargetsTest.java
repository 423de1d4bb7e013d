package dev.distillery.trainer.teacher;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;

/**
 * Sampled teacher targets are the definition's draws: with the same uniform u, the first id whose
 * running sum of exp((logit - max)/T), walked id by id, passes u times the row's sum (the last id
 * where none does), each with weight 1/k.
 */
class SampledTargetsTest {

    @Test
    void drawsAreTheFirstIdsWhoseRunningSumPassesTheTarget() {
        SplittableRandom rng = new SplittableRandom(17);
        try (Arena arena = Arena.ofConfined()) {
            for (int trial = 0; trial < 200; trial++) {
                int v = 1 + rng.nextInt(trial % 4 == 0 ? 3000 : 40), k = 1 + rng.nextInt(9);
                double temperature = 0.3 + rng.nextDouble() * 2;
                float[] x = new float[v];
                for (int j = 0; j < v; j++) x[j] = (float) (rng.nextGaussian() * 4);
                if (trial % 5 == 1) for (int j = 0; j < v; j++) if (rng.nextInt(3) > 0) x[j] = Float.NEGATIVE_INFINITY;   // masked ids
                if (trial % 7 == 3) x[rng.nextInt(v)] = Float.NaN;                                                          // a NaN row
                x[rng.nextInt(v)] = 20f;   // a finite maximum on every row
                double[] u = new double[k + 3];
                for (int i = 0; i < u.length; i++) u[i] = i == 0 ? 0.0 : i == 1 ? Math.nextDown(1.0) : rng.nextDouble();
                MemorySegment logits = arena.allocateFrom(ValueLayout.JAVA_FLOAT, x);
                MemorySegment ids = arena.allocate(4L * 2 * k), weights = arena.allocate(4L * 2 * k);
                LogitDump.sample(logits, 0, v, k, temperature, ids, weights, 1, u, 3, new double[v]);
                for (int i = 0; i < k; i++) {
                    int expected = walk(x, temperature, u[3 + i]);
                    assertEquals(expected, ids.getAtIndex(ValueLayout.JAVA_INT, k + i), "trial " + trial + ", draw " + i);
                    assertEquals(1f / k, weights.getAtIndex(ValueLayout.JAVA_FLOAT, k + i));
                }
                // the ends of the uniform's range: 0 takes the first id with mass, just under 1 the last
                LogitDump.sample(logits, 0, v, 2, temperature, ids, weights, 0, u, 0, new double[v]);
                assertEquals(walk(x, temperature, 0.0), ids.getAtIndex(ValueLayout.JAVA_INT, 0), "trial " + trial + ", u 0");
                assertEquals(walk(x, temperature, Math.nextDown(1.0)), ids.getAtIndex(ValueLayout.JAVA_INT, 1), "trial " + trial + ", u 1-");
            }
        }
    }

    /** The definition: the running sum walked id by id, in the row's order of additions. */
    private static int walk(float[] x, double temperature, double u) {
        double max = Double.NEGATIVE_INFINITY;
        for (float xi : x) max = Math.max(max, xi);
        double sum = 0;
        for (float xi : x) sum += Math.exp((xi - max) / temperature);
        double target = u * sum, c = 0;
        for (int j = 0; j < x.length; j++) {
            c += Math.exp((x[j] - max) / temperature);
            if (target < c) return j;
        }
        return x.length - 1;
    }
}
