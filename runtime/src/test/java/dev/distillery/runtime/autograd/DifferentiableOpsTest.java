package dev.distillery.runtime.autograd;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.runtime.Device;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.Workspace;

/**
 * How gradients are written when they are new: the first contribution to an activation's gradient
 * is written over undefined memory (a GEMM with beta 0, a copy, or the upstream buffer itself), the
 * later ones added. Every workspace here fills what it hands out with NaN, so a gradient that was
 * read before anything wrote it shows as NaN; the sums are held to float64 references.
 */
class DifferentiableOpsTest {

    private static final int N = 5, C = 7, OC = 3;

    private CpuKernels kernels;
    private Workspace ws;
    private Tape tape;
    private DifferentiableOps ops;

    @BeforeEach
    void open() {
        kernels = new CpuKernels(2, "blas");
        ws = new Workspace(kernels, 1 << 12).poisonAllocations();
        tape = new Tape();
        ops = new DifferentiableOps(kernels, ws, tape);
    }

    @AfterEach
    void close() {
        ws.close();
        kernels.close();
    }

    @Test
    void aTensorAddedToItselfGetsTwiceTheUpstreamGradient() {
        Tensor x = leaf("x", new Rng(1), N, C);
        Tensor y = ops.add(x, x);
        double[] dy = seedGradient(y, new Rng(2));
        tape.backward();
        double[] dx = values(x.grad());
        for (int i = 0; i < dx.length; i++) assertEquals(2 * dy[i], dx[i], 0, "element " + i);
    }

    @Test
    void aResidualBranchesGradientsAddUpWhicheverWritesFirst() {
        // y = (x + (x · w1) · w2) + x · w3. Backwards: the outer add hands dy's own buffer to the inner
        // sum and a copy to x · w3; x's gradient is first written by x · w3's GEMM (beta 0), then added
        // to by the inner add and by x · w1's GEMM (beta 1); h's is written by (h · w2)'s GEMM.
        Rng rng = new Rng(3);
        Tensor x = leaf("x", rng, N, C);
        Tensor w1 = leaf("w1", rng, C, OC), w2 = leaf("w2", rng, OC, C), w3 = leaf("w3", rng, C, C);
        Tensor h = ops.linear(x, w1, null);
        Tensor y = ops.add(ops.add(x, ops.linear(h, w2, null)), ops.linear(x, w3, null));
        double[] dy = seedGradient(y, new Rng(4));
        tape.backward();

        double[] a1 = values(w1), a2 = values(w2), a3 = values(w3);
        double[] dh = new double[N * OC], expected = dy.clone();
        for (int r = 0; r < N; r++) {
            for (int j = 0; j < OC; j++) for (int i = 0; i < C; i++) dh[r * OC + j] += dy[r * C + i] * a2[j * C + i];
            for (int i = 0; i < C; i++) {
                for (int j = 0; j < OC; j++) expected[r * C + i] += dh[r * OC + j] * a1[i * OC + j];
                for (int j = 0; j < C; j++) expected[r * C + i] += dy[r * C + j] * a3[i * C + j];
            }
        }
        double[] dx = values(x.grad());
        for (int i = 0; i < dx.length; i++) assertEquals(expected[i], dx[i], 1e-5 * (1 + Math.abs(expected[i])), "element " + i);
    }

    private Tensor leaf(String name, Rng rng, int... shape) {
        Tensor t = ws.tensor(name, shape);
        fill(t, rng);
        return new Tensor(name, shape, DType.F32, Device.CPU, t.data(), true);
    }

    private static void fill(Tensor t, Rng rng) {
        for (long i = 0; i < t.numel(); i++) t.setFloat(i, (float) rng.nextGaussian());
    }

    private double[] seedGradient(Tensor y, Rng rng) {
        Tensor g = ws.tensor("dy", y.shape());
        fill(g, rng);
        y.setGrad(g);
        return values(g);
    }

    private static double[] values(Tensor t) {
        double[] v = new double[Math.toIntExact(t.numel())];
        for (int i = 0; i < v.length; i++) v[i] = t.getFloat(i);
        return v;
    }
}
