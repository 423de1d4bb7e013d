package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class EmbeddingGradsTest {

    @Test
    void positionsAreGroupedByTokenInTheOrderTimeThenBatch() {
        // (B, T) = (2, 3): rows b·T + t; token 5 at (0,0), (1,0) and (1,2); token 2 at (0,1); token 9 at (0,2), (1,1)
        int[] tokens = {5, 2, 9, 5, 9, 5};
        int[] g = EmbeddingGrads.grouping(tokens, 2, 3);
        assertEquals(3, EmbeddingGrads.groups(g, 6));
        assertArrayEquals(new int[]{
                0, 1, 4, 6,        // starts
                2, 5, 9,           // tokens, ascending
                1,                 // token 2: (0,1)
                0, 3, 5,           // token 5: (t0,b0), (t0,b1), (t2,b1)
                4, 2}, g);         // token 9: (t1,b1) before (t2,b0)
    }
}
