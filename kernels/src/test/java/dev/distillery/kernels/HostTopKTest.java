package dev.distillery.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;

class HostTopKTest {

    /**
     * The top-k ids are the first k of the row sorted by logit, largest first, ties to the lower id
     * (a stable sort), NaN last, on rows with many ties, infinities and NaN, lengths on both sides
     * of a vector, and k from 1 to the whole row.
     */
    @Test
    void idsAreTheFirstKOfAStableSortByLogitAndByLogitIsThatOrder() {
        SplittableRandom rng = new SplittableRandom(11);
        for (int trial = 0; trial < 300; trial++) {
            int v = 1 + rng.nextInt(trial % 3 == 2 ? 5000 : 300), k = 1 + rng.nextInt(trial % 4 == 0 ? v : Math.min(v, 64));
            float[] logits = new float[v];
            for (int j = 0; j < v; j++) logits[j] = trial % 2 == 0 ? rng.nextInt(7) - 3 : (float) (rng.nextDouble() * 6 - 3);
            if (v > 2) logits[rng.nextInt(v)] = Float.NEGATIVE_INFINITY;
            if (trial % 5 == 1) logits[rng.nextInt(v)] = Float.POSITIVE_INFINITY;
            if (trial % 7 == 3) logits[rng.nextInt(v)] = Float.NaN;
            if (trial % 11 == 5) logits[0] = Float.NaN;
            // rows where few blocks hold a number, or hold only -inf: the blocks' maxima bound nothing
            if (trial % 13 == 7) for (int j = 0; j < v; j++) if (rng.nextInt(10) > 0) logits[j] = Float.NaN;
            if (trial % 17 == 8) for (int j = 0; j < v; j++) if (rng.nextInt(50) > 0) logits[j] = Float.NEGATIVE_INFINITY;
            Integer[] order = new Integer[v];
            for (int j = 0; j < v; j++) order[j] = j;
            Arrays.sort(order, (a, b) -> {
                float xa = logits[a], xb = logits[b];
                if (Float.isNaN(xa) || Float.isNaN(xb)) return Boolean.compare(Float.isNaN(xa), Float.isNaN(xb));
                return Float.compare(xb, xa);
            });
            int[] ranked = new int[k];
            for (int i = 0; i < k; i++) ranked[i] = order[i];
            int[] expected = ranked.clone();
            Arrays.sort(expected);
            int[] ids = new int[k];
            MemorySegment row = MemorySegment.ofArray(logits);
            int found = HostTopK.ids(row, 0, v, ids, HostTopK.scratch(k));
            assertArrayEquals(expected, Arrays.copyOf(ids, found), "v " + v + ", k " + k + ", trial " + trial);
            HostTopK.byLogit(row, 0, ids, found);
            assertArrayEquals(Arrays.copyOf(ranked, found), Arrays.copyOf(ids, found), "by logit: v " + v + ", k " + k + ", trial " + trial);
        }
    }
}
