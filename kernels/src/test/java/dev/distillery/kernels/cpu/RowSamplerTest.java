package dev.distillery.kernels.cpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.SplittableRandom;

import org.junit.jupiter.api.Test;

import dev.distillery.bindings.DistilleryCpu;
import dev.distillery.kernels.reference.ReferenceKernels;

class RowSamplerTest {

    /**
     * Every draw of CpuKernels.sampleRows is the definition's (ReferenceKernels.sampleRows: a
     * stable sort for the top k, one Math.exp a candidate, the running sum walked id by id) with
     * the same uniform number: vocabularies from 1 to Llama 3's 128,256 (edges of the 1,024-id
     * blocks, ragged ends, vector tails), temperatures 0 to 1.6, top-k from 1 to the whole row,
     * rows with ties, −inf, NaN, and +inf (which takes all the mass); about twelve thousand draws,
     * each also by a sampler with the Java exps where the kernels' has the native ones.
     */
    @Test
    void drawsAreTheDefinitionsWithEitherExps() {
        SplittableRandom rng = new SplittableRandom(3);
        int draws = 0;
        try (CpuKernels kernels = new CpuKernels(2, "auto"); Arena arena = Arena.ofShared()) {
            for (int v : new int[]{1, 2, 7, 63, 64, 65, 1023, 1024, 1025, 4099, 50257, 128256}) {
                int rows = v > 10000 ? 6 : 60;
                for (double temperature : new double[]{0, 0.7, 1.0, 1.6}) {
                    for (int topK : new int[]{0, 1, 5, 40, v}) {
                        double[] x = new double[rows * v], u = new double[rows];
                        MemorySegment logits = arena.allocate(4L * rows * v, 64), ids = arena.allocate(4L * rows, 64);
                        MemorySegment uniforms = arena.allocate(8L * rows, 64);
                        for (int r = 0; r < rows; r++) {
                            for (int j = 0; j < v; j++) x[r * v + j] = r % 3 == 0 ? rng.nextInt(9) - 4 : (float) (6 * rng.nextDouble() - 3);
                            if (r % 4 == 1) x[r * v + rng.nextInt(v)] = Double.NEGATIVE_INFINITY;
                            if (r % 15 == 7) x[r * v + rng.nextInt(v)] = Double.POSITIVE_INFINITY;
                            if (r % 10 == 2) x[r * v + rng.nextInt(v)] = Double.NaN;
                            u[r] = rng.nextDouble();
                        }
                        for (int i = 0; i < x.length; i++) logits.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) x[i]);
                        MemorySegment.copy(u, 0, uniforms, ValueLayout.JAVA_DOUBLE, 0, rows);
                        kernels.sampleRows(ids, logits, uniforms, rows, v, temperature, topK);
                        int[] expected = ReferenceKernels.sampleRows(x, u, rows, v, temperature, topK);
                        assertArrayEquals(expected, ids.toArray(ValueLayout.JAVA_INT), "v " + v + ", T " + temperature + ", top-k " + topK);
                        if (temperature > 0 && DistilleryCpu.available()) {
                            RowSampler javaExps = new RowSampler(v, temperature, topK, false);
                            for (int r = 0; r < rows; r++) {
                                assertEquals(expected[r], javaExps.draw(logits, r, u[r]), "Java exps, v " + v + ", T " + temperature + ", top-k " + topK + ", row " + r);
                            }
                        }
                        draws += rows;
                    }
                }
            }
        }
        assertTrue(draws > 12000, draws + " draws");
    }

    @Test
    void refusesANegativeTemperatureOrTopK() {
        try (CpuKernels kernels = new CpuKernels(1, "auto"); Arena arena = Arena.ofConfined()) {
            MemorySegment x = arena.allocate(16), ids = arena.allocate(4), u = arena.allocate(8);
            var t = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> kernels.sampleRows(ids, x, u, 1, 4, -1, 0));
            assertEquals("temperature must be a finite number >= 0, got -1.0", t.getMessage());
            var k = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> kernels.sampleRows(ids, x, u, 1, 4, 1, -2));
            assertEquals("top-k must be >= 0, got -2", k.getMessage());
        }
    }
}
