package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.ParameterSpans;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.conformance.KernelConformance;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.DistillSums;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * {@link CudaKernels}, its real launch path (argument marshalling, row-major GEMMs through
 * column-major calls, attention as strided GEMMs + causal softmax kernels, the host-side checks
 * and sums), on the CPU emulation of the device, held to the same float64 conformance suite as
 * {@code CpuKernels}.
 */
class CudaKernelsEmulationTest {

    private static EmulationBuild gcc;
    private static Path library;

    @BeforeAll
    static void compile() throws Exception {
        gcc = new EmulationBuild("distillery-emu-device");
        library = gcc.build("emu_device.cpp", "libdistillery_emu.so", "-O2", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE", "-shared", "-fPIC");
    }

    @AfterAll
    static void cleanUp() throws Exception {
        if (gcc != null) gcc.close();
    }

    @Test
    void cudaKernelsPassTheConformanceSuiteUnderEmulation() {
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device)) {
            List<KernelConformance.Result> results = KernelConformance.run(kernels, 23, KernelConformance.Sizes.quick());
            StringBuilder failed = new StringBuilder();
            for (KernelConformance.Result r : results) if (!r.passed()) failed.append(r).append('\n');
            assertTrue(failed.isEmpty(), failed.toString());
            assertTrue(results.size() >= 20 && device.launches() >= 20, results.size() + " checks, " + device.launches() + " launches");
        }
    }

    /**
     * With the token ids' host copy the embedding reads nothing back: the forward checks the ids
     * there (an id out of range is named by its position without a wait) and the backward groups
     * them there, its one wait the groups going up; the gradients are those of the ids read back.
     */
    @Test
    void theEmbeddingReadsItsIdsFromTheirHostCopyWithoutWaiting() {
        int b = 3, t = 5, c = 7, vocab = 11;
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device);
             Arena arena = Arena.ofShared()) {
            SplittableRandom rng = new SplittableRandom(5);
            int[] ids = new int[b * t];
            for (int i = 0; i < ids.length; i++) ids[i] = rng.nextInt(vocab);
            ids[4] = ids[9];   // a repeated id
            MemorySegment host = arena.allocateFrom(ValueLayout.JAVA_INT, ids);
            MemorySegment tokens = kernels.allocate(arena, host.byteSize()), out = kernels.allocate(arena, 4L * b * t * c);
            kernels.copyFromHost(tokens, host, host.byteSize());
            MemorySegment wte = upload(kernels, arena, gaussians(rng, vocab * c)), wpe = upload(kernels, arena, gaussians(rng, t * c));
            MemorySegment dout = upload(kernels, arena, gaussians(rng, b * t * c));
            int before = device.waits();
            kernels.embeddingForward(out, tokens, host, wte, wpe, b, t, c, vocab);
            assertEquals(before, device.waits(), "waits of the forward with host ids");
            float[][] grads = new float[2][];
            for (int withHost = 0; withHost < 2; withHost++) {
                MemorySegment dwte = kernels.allocate(arena, 4L * vocab * c), dwpe = kernels.allocate(arena, 4L * t * c);
                kernels.fill(dwte, 0f, (long) vocab * c);
                kernels.fill(dwpe, 0f, (long) t * c);
                before = device.waits();
                kernels.embeddingBackward(dwte, dwpe, dout, tokens, withHost == 1 ? host : null, b, t, c);
                assertEquals(withHost == 1 ? 1 : 2, device.waits() - before, "waits of the backward, host ids " + (withHost == 1));
                grads[withHost] = download(kernels, arena, dwte, vocab * c);
            }
            assertArrayEquals(grads[0], grads[1], "dwte from the ids read back and from their host copy");
            host.setAtIndex(ValueLayout.JAVA_INT, 7, vocab);
            var e = assertThrows(IllegalArgumentException.class,
                    () -> kernels.embeddingForward(out, tokens, host, wte, wpe, b, t, c, vocab));
            assertTrue(e.getMessage().contains("token id " + vocab + " at position 7"), e.getMessage());
        }
    }

    /**
     * What {@code selftest --device cuda} runs first on a GPU ({@link CudaConformance}: every kernel
     * launched raw against the CPU kernels) passes on the emulated device at its quick sizes, so the
     * checks themselves are known to be right before a GPU runs them.
     */
    @Test
    void theGpuSelftestsKernelChecksPassUnderEmulation() {
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CpuKernels cpu = new CpuKernels(2, "auto")) {
            List<KernelConformance.Result> results = CudaConformance.run(device, cpu, 29, true);
            StringBuilder failed = new StringBuilder();
            for (KernelConformance.Result r : results) if (!r.passed()) failed.append(r).append('\n');
            assertTrue(failed.isEmpty(), failed.toString());
            assertTrue(results.stream().anyMatch(r -> r.kernel().equals("headsSplit.bf16"))
                    && results.stream().anyMatch(r -> r.kernel().equals("adamWChunks")) && results.size() >= 40, results.toString());
            // the bf16 twins of the kernels that write activations, each held to its own fp32 values rounded
            for (String kernel : List.of("layerNormForward.bf16", "rmsNormForward.bf16", "geluForward.bf16", "swiGluForward.bf16", "headsMerge.bf16")) {
                assertTrue(results.stream().anyMatch(r -> r.kernel().equals(kernel)), kernel + " in " + results);
            }
        }
    }

    /** bf16 mixed precision: operands rounded by ops_round_to_bf16, multiplied with cublasGemmStridedBatchedEx's contract. */
    @Test
    void bf16GemmsMatchFloat64ReferenceOnBf16RoundedOperandsUnderEmulation() {
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, Precision.BF16)) {
            List<KernelConformance.Result> results = KernelConformance.run(kernels, System.nanoTime(), KernelConformance.Sizes.standard());
            StringBuilder failed = new StringBuilder();
            for (KernelConformance.Result r : results) if (!r.passed()) failed.append(r).append('\n');
            assertTrue(failed.isEmpty(), failed.toString());
            assertTrue(results.size() >= 4 * 7 + 3 * 4 && results.stream().allMatch(r -> r.kernel().endsWith(".bf16")), results.toString());
        }
    }

    /**
     * Attention without kept probabilities in bands of 32 query rows (the fewest a band holds) over
     * t = 70, so three bands, the last ragged, against float64, in both precisions; with the
     * default budget these shapes are one band.
     */
    @Test
    void attentionInSeveralBandsMatchesFloat64ReferenceUnderEmulation() {
        KernelConformance.Sizes attentionOnly = new KernelConformance.Sizes(new int[0][], new int[0][], new int[][]{{2, 70, 24, 3}, {1, 33, 8, 2}},
                new int[0], new int[0][]);
        CudaKernels.attentionBandBytes(1);
        try {
            for (Precision precision : Precision.values()) {
                try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, precision)) {
                    List<KernelConformance.Result> results = KernelConformance.run(kernels, 31, attentionOnly);
                    StringBuilder failed = new StringBuilder();
                    for (KernelConformance.Result r : results) if (!r.passed()) failed.append(r).append('\n');
                    assertTrue(failed.isEmpty(), failed.toString());
                    assertTrue(results.stream().filter(r -> r.kernel().startsWith("attentionBackwardInBands")).count() == 4, results.toString());
                }
            }
        } finally {
            CudaKernels.attentionBandBytes(0);
        }
    }

    /**
     * Attention is a fixed handful of launches whatever the batch (its products batched over every
     * batch element and head), not a loop of GEMMs per batch element: forward and backward at
     * batch 1 and 6 launch the same kernels and cuBLAS calls, in both precisions.
     */
    @Test
    void attentionLaunchesAsManyKernelsForAnyBatch() {
        for (Precision precision : Precision.values()) {
            int[] counts = new int[2];
            for (int i = 0; i < 2; i++) {
                int b = i == 0 ? 1 : 6, t = 5, c = 12, nh = 3;
                try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, precision);
                     Arena arena = Arena.ofConfined()) {
                    long n = (long) b * t * c, na = (long) b * nh * t * t;
                    MemorySegment qkv = kernels.allocate(arena, 12 * n), out = kernels.allocate(arena, 4 * n), att = kernels.allocate(arena, 4 * na);
                    MemorySegment dout = kernels.allocate(arena, 4 * n), dqkv = kernels.allocate(arena, 12 * n), datt = kernels.allocate(arena, 4 * na);
                    for (MemorySegment s : List.of(qkv, out, att, dout, dqkv, datt)) kernels.fill(s, 0.5f, s.byteSize() / 4);
                    int launches = device.launches(), gemms = device.gemms();
                    kernels.attentionForward(out, DType.F32, att, qkv, b, t, c, nh);
                    kernels.attentionBackward(dqkv, 1f, datt, dout, qkv, att, b, t, c, nh);
                    counts[i] = device.launches() - launches + device.gemms() - gemms;
                }
            }
            assertEquals(counts[0], counts[1], precision + ": launches at batch 1 and 6");
            assertTrue(counts[0] <= (precision == Precision.FP32 ? 13 : 16), precision + ": " + counts[0] + " launches");
        }
    }

    /**
     * A held segment under bf16 is rounded once: a GEMM whose B lies inside it gives the bits of the
     * plain GEMM, launches one rounding fewer, and reads the copy (the segment overwritten during
     * the hold does not change the result); after the hold, the GEMM reads the segment again, and
     * the next hold of that size reuses the copy rather than allocating (a step holds every step).
     */
    @Test
    void aHeldOperandIsRoundedOnceAndReadFromItsCopy() {
        int m = 9, n = 37, k = 70;
        float[] a = new float[m * k], b = new float[k * n + 5];
        SplittableRandom rng = new SplittableRandom(3);
        for (int i = 0; i < a.length; i++) a[i] = (float) rng.nextGaussian();
        for (int i = 0; i < b.length; i++) b[i] = (float) rng.nextGaussian();
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, Precision.BF16);
             Arena arena = Arena.ofConfined()) {
            MemorySegment da = upload(kernels, arena, a), block = upload(kernels, arena, b), c = kernels.allocate(arena, 4L * m * n);
            MemorySegment operand = block.asSlice(20, 4L * k * n);   // B starts 5 floats into the held block
            kernels.gemm(false, false, m, n, k, 1f, da, k, operand, n, 0f, c, n);
            float[] plain = download(kernels, arena, c, m * n);
            try (Kernels.ConstantHold hold = kernels.holdConstant(block)) {
                int launches = device.launches();
                kernels.gemm(false, false, m, n, k, 1f, da, k, operand, n, 0f, c, n);
                assertEquals(1, device.launches() - launches, "one rounding launch (A's) for a GEMM with a held B");
                assertArrayEquals(plain, download(kernels, arena, c, m * n), "held B");
                kernels.fill(block, 0f, b.length);
                kernels.gemm(false, false, m, n, k, 1f, da, k, operand, n, 0f, c, n);
                assertArrayEquals(plain, download(kernels, arena, c, m * n), "the held copy, not the overwritten segment");
            }
            kernels.gemm(false, false, m, n, k, 1f, da, k, operand, n, 0f, c, n);
            for (float x : download(kernels, arena, c, m * n)) assertEquals(0f, x, "the segment itself once the hold is closed");
            int allocations = device.allocations();
            kernels.holdConstant(block).close();
            assertEquals(allocations, device.allocations(), "a second hold of the same size reuses the first one's copy");
        }
    }

    /**
     * A hold saves time, not memory: where the device has no room for the bf16 copy, the hold does
     * nothing and the GEMMs round their operands as without it, the same bits; and a closed hold's
     * copy, kept for the next hold, is freed for an allocation that finds the device full.
     */
    @Test
    void aHoldWithNoRoomForItsCopyHoldsNothing() {
        int m = 5, n = 33, k = 40;
        SplittableRandom rng = new SplittableRandom(4);
        float[] a = gaussians(rng, m * k), b = gaussians(rng, k * n);
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, Precision.BF16);
             Arena arena = Arena.ofConfined()) {
            MemorySegment da = upload(kernels, arena, a), db = upload(kernels, arena, b), c = kernels.allocate(arena, 4L * m * n);
            kernels.gemm(false, false, m, n, k, 1f, da, k, db, n, 0f, c, n);   // its scratch allocated before the limit
            float[] plain = download(kernels, arena, c, m * n);
            device.limitMemory(device.liveBytes() + 2L * k * n - 64);   // 64 bytes short of B's bf16 copy
            try (Kernels.ConstantHold hold = kernels.holdConstant(db)) {
                int launches = device.launches();
                kernels.gemm(false, false, m, n, k, 1f, da, k, db, n, 0f, c, n);
                assertEquals(2, device.launches() - launches, "both operands rounded at the call: nothing was held");
                assertArrayEquals(plain, download(kernels, arena, c, m * n));
            }
            // a closed hold's copy, kept for the next hold, gives way to an allocation that needs its room
            device.limitMemory(Long.MAX_VALUE);
            kernels.holdConstant(db).close();
            long kept = device.liveBytes();
            device.limitMemory(kept + 64);
            MemorySegment room = kernels.allocate(arena, 2L * k * n);
            assertTrue(room.byteSize() == 2L * k * n && device.liveBytes() == kept, "the kept copy freed for an allocation of its size");
            int allocations = device.allocations();
            device.limitMemory(Long.MAX_VALUE);
            kernels.holdConstant(db).close();
            assertEquals(allocations + 1, device.allocations(), "the next hold allocates its copy again");
        }
    }

    /**
     * An operand stored as bf16 goes to cuBLAS as it is: the typed GEMM gives the bits of the GEMM
     * on the fp32 values (A, B or both stored so, all four transposes), with one rounding launch
     * fewer per bf16 operand, and a linear whose input is bf16 (its forward and both products of
     * its backward) gives the bits of one whose input is fp32, launching one rounding fewer.
     */
    @Test
    void operandsStoredAsBf16GiveTheBitsOfRoundingThemWithFewerLaunches() {
        int m = 9, n = 37, k = 70;
        SplittableRandom rng = new SplittableRandom(11);
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, Precision.BF16);
             Arena arena = Arena.ofConfined()) {
            assertTrue(kernels.storesBf16Activations());
            for (boolean transA : new boolean[]{false, true}) {
                for (boolean transB : new boolean[]{false, true}) {
                    float[] a = gaussians(rng, m * k), b = gaussians(rng, k * n);
                    MemorySegment da = upload(kernels, arena, a), db = upload(kernels, arena, b);
                    MemorySegment da16 = uploadBf16(kernels, arena, a), db16 = uploadBf16(kernels, arena, b);
                    int lda = transA ? m : k, ldb = transB ? k : n;
                    MemorySegment c = kernels.allocate(arena, 4L * m * n);
                    kernels.gemm(transA, transB, m, n, k, 1f, da, lda, db, ldb, 0f, c, n);
                    float[] want = download(kernels, arena, c, m * n);
                    for (DType[] types : new DType[][]{{DType.BF16, DType.F32}, {DType.F32, DType.BF16}, {DType.BF16, DType.BF16}}) {
                        kernels.fill(c, Float.NaN, (long) m * n);
                        int launches = device.launches();
                        kernels.gemm(transA, transB, m, n, k, 1f, types[0] == DType.BF16 ? da16 : da, types[0], lda,
                                types[1] == DType.BF16 ? db16 : db, types[1], ldb, 0f, c, n);
                        String what = "transA " + transA + ", transB " + transB + ", A " + types[0] + ", B " + types[1];
                        int rounded = (types[0] == DType.F32 ? 1 : 0) + (types[1] == DType.F32 ? 1 : 0);
                        assertEquals(rounded, device.launches() - launches, what + ": rounding launches");
                        assertArrayEquals(want, download(kernels, arena, c, m * n), what);
                    }
                }
            }
            // a linear (rows n, c in, oc out) on an fp32 input and on the same input stored as bf16
            int rows = 13, c = 20, oc = 24;
            float[] x = gaussians(rng, rows * c), w = gaussians(rng, c * oc), bias = gaussians(rng, oc), dout = gaussians(rng, rows * oc);
            MemorySegment dx = upload(kernels, arena, x), dx16 = uploadBf16(kernels, arena, x), dw = upload(kernels, arena, w);
            MemorySegment dbias = upload(kernels, arena, bias), ddout = upload(kernels, arena, dout);
            float[][] results = new float[2][];
            int[] launches = new int[2];
            for (int i = 0; i < 2; i++) {
                DType type = i == 0 ? DType.F32 : DType.BF16;
                MemorySegment out = kernels.allocate(arena, 4L * rows * oc), dinp = kernels.allocate(arena, 4L * rows * c);
                MemorySegment gw = upload(kernels, arena, new float[c * oc]), gb = upload(kernels, arena, new float[oc]);
                int before = device.launches();
                kernels.linearForward(out, i == 0 ? dx : dx16, type, dw, dbias, rows, c, oc);
                kernels.linearBackward(dinp, 0f, gw, gb, ddout, i == 0 ? dx : dx16, type, dw, rows, c, oc);
                launches[i] = device.launches() - before;
                float[] all = new float[rows * oc + rows * c + c * oc + oc];
                System.arraycopy(download(kernels, arena, out, rows * oc), 0, all, 0, rows * oc);
                System.arraycopy(download(kernels, arena, dinp, rows * c), 0, all, rows * oc, rows * c);
                System.arraycopy(download(kernels, arena, gw, c * oc), 0, all, rows * oc + rows * c, c * oc);
                System.arraycopy(download(kernels, arena, gb, oc), 0, all, rows * oc + rows * c + c * oc, oc);
                results[i] = all;
            }
            assertArrayEquals(results[0], results[1], "a linear's output and gradients on an fp32 and a bf16 input");
            assertEquals(launches[0] - 2, launches[1], "the input rounded for neither the forward nor the weight gradient");
        }
    }

    private static float[] gaussians(SplittableRandom rng, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) rng.nextGaussian();
        return x;
    }

    /** x rounded to bf16 by the GEMMs' rule, on the device. */
    private static MemorySegment uploadBf16(CudaKernels kernels, Arena arena, float[] x) {
        MemorySegment host = arena.allocate(2L * x.length, 64), device = kernels.allocate(arena, 2L * x.length);
        for (int i = 0; i < x.length; i++) host.setAtIndex(ValueLayout.JAVA_SHORT, i, dev.distillery.kernels.cpu.VectorOps.bf16Bits(x[i]));
        kernels.copyFromHost(device, host, 2L * x.length);
        return device;
    }

    /**
     * AdamW over a block in one launch, with a span longer than two of its chunks, a short one and
     * an empty one, and a clipping factor: the bits of scaling the gradients and then one adamW
     * per span, the launch counted once, the gradients left as they were.
     */
    @Test
    void adamWOverABlockIsOneLaunchWithTheBitsOfOnePerSpan() {
        long chunk = CudaKernels.ADAMW_CHUNK;
        long[] offsets = {0, 2 * chunk + 7, 2 * chunk + 20}, lengths = {2 * chunk + 5, 13, 0};
        int n = (int) (2 * chunk + 20);
        float[] p = new float[n], g = new float[n], m = new float[n], v = new float[n];
        SplittableRandom rng = new SplittableRandom(5);
        for (int i = 0; i < n; i++) {
            p[i] = (float) rng.nextGaussian();
            g[i] = (float) rng.nextGaussian();
            m[i] = (float) (0.1 * rng.nextGaussian());
            v[i] = (float) Math.abs(0.01 * rng.nextGaussian());
        }
        ParameterSpans spans = new ParameterSpans(offsets, lengths, new float[]{0.1f, 0f, 0.1f});
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device);
             Arena arena = Arena.ofConfined()) {
            MemorySegment bp = upload(kernels, arena, p), bg = upload(kernels, arena, g), bm = upload(kernels, arena, m), bv = upload(kernels, arena, v);
            MemorySegment ep = upload(kernels, arena, p), em = upload(kernels, arena, m), ev = upload(kernels, arena, v);
            MemorySegment eg = upload(kernels, arena, g);
            int launches = device.launches();
            kernels.adamWSpans(bp, bg, bm, bv, spans, 0.37f, 3e-3f, 0.9f, 0.999f, 1e-8f, 4);
            assertEquals(1, device.launches() - launches, "one launch for the block");
            assertArrayEquals(g, download(kernels, arena, bg, n), "the gradients left as they were");
            kernels.scale(eg, 0.37f, n);
            for (int i = 0; i < spans.count(); i++) {
                long at = 4 * offsets[i], len = 4 * lengths[i];
                kernels.adamW(ep.asSlice(at, len), eg.asSlice(at, len), em.asSlice(at, len), ev.asSlice(at, len), lengths[i], 3e-3f, 0.9f,
                        0.999f, 1e-8f, spans.weightDecay(i), 4);
            }
            assertArrayEquals(download(kernels, arena, ep, n), download(kernels, arena, bp, n), "params");
            assertArrayEquals(download(kernels, arena, em, n), download(kernels, arena, bm, n), "first moments");
            assertArrayEquals(download(kernels, arena, ev, n), download(kernels, arena, bv, n), "second moments");
            int gap = (int) (2 * chunk + 5);
            assertEquals(p[gap], download(kernels, arena, bp, n)[gap], "an element between spans is left alone");
        }
    }

    /**
     * distillLossRows, the chunked LM head's call, launches the loss and waits for nothing (no
     * labels down, no rows back, as distillLoss waits for), and its rows and gradient are
     * distillLoss's to the bit; a label outside the vocabulary that reaches the device (the caller
     * checks them) leaves its row NaN and reads nothing past it.
     */
    @Test
    void distillLossRowsWritesDistillLossRowsWithoutWaiting() {
        int n = 6, v = 203;
        SplittableRandom rng = new SplittableRandom(41);
        float[] s = new float[n * v], t = new float[n * v];
        for (int i = 0; i < s.length; i++) {
            s[i] = (float) (2 * rng.nextGaussian());
            t[i] = (float) (3 * rng.nextGaussian());
        }
        int[] labels = {4, -100, 202, 0, 77, 150};
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device);
             Arena arena = Arena.ofShared()) {
            TeacherTargets teacher = new TeacherTargets.Dense(upload(kernels, arena, t), DType.F32, v);
            MemorySegment lab = kernels.allocate(arena, 4L * n);
            kernels.copyFromHost(lab, arena.allocateFrom(ValueLayout.JAVA_INT, labels), 4L * n);
            DistillOptions o = DistillOptions.of(2f, 0.5f);
            MemorySegment g1 = upload(kernels, arena, s), ce1 = upload(kernels, arena, new float[n]), div1 = upload(kernels, arena, new float[n]);
            int before = device.waits();
            DistillSums sums = kernels.distillLoss(g1, g1, teacher, lab, ce1, div1, n, v, o, 1f / n);
            assertTrue(device.waits() - before >= 2, "distillLoss: the labels down, the rows back");
            MemorySegment g2 = upload(kernels, arena, s), ce2 = upload(kernels, arena, new float[n]), div2 = upload(kernels, arena, new float[n]);
            before = device.waits();
            kernels.distillLossRows(g2, g2, teacher, lab, ce2, div2, n, v, o, 1f / n);
            assertEquals(0, device.waits() - before, "distillLossRows waits for nothing");
            float[] c2 = download(kernels, arena, ce2, n), d2 = download(kernels, arena, div2, n);
            assertArrayEquals(download(kernels, arena, g1, n * v), download(kernels, arena, g2, n * v));
            assertArrayEquals(download(kernels, arena, ce1, n), c2);
            assertArrayEquals(download(kernels, arena, div1, n), d2);
            assertEquals(sums, DistillSums.ofRows(c2, d2, labels, n, o));

            labels[3] = v;   // one past the vocabulary
            kernels.copyFromHost(lab, arena.allocateFrom(ValueLayout.JAVA_INT, labels), 4L * n);
            MemorySegment g3 = upload(kernels, arena, s);
            kernels.distillLossRows(g3, g3, teacher, lab, ce2, div2, n, v, o, 1f / n);
            float[] c3 = download(kernels, arena, ce2, n), d3 = download(kernels, arena, div2, n);
            for (int r = 0; r < n; r++) {
                assertEquals(r == 3, Float.isNaN(c3[r]) && Float.isNaN(d3[r]), "row " + r + ": " + c3[r] + ", " + d3[r]);
            }
        }
    }

    /**
     * softmaxCrossEntropyRows, the chunked LM head's hard-label call, waits for nothing (no targets
     * down, as softmaxCrossEntropy reads them to check and count), and writes softmaxCrossEntropy's
     * losses and gradient to the bit; a target outside the vocabulary that reaches the device leaves
     * its row NaN, loss and gradient, and reads nothing past it.
     */
    @Test
    void softmaxCrossEntropyRowsWritesTheCheckedCallsRowsWithoutWaiting() {
        int n = 5, v = 211;
        SplittableRandom rng = new SplittableRandom(43);
        float[] x = new float[n * v];
        for (int i = 0; i < x.length; i++) x[i] = (float) (3 * rng.nextGaussian());
        int[] targets = {7, -100, 210, 0, 99};
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device);
             Arena arena = Arena.ofShared()) {
            MemorySegment tgt = kernels.allocate(arena, 4L * n);
            kernels.copyFromHost(tgt, arena.allocateFrom(ValueLayout.JAVA_INT, targets), 4L * n);
            MemorySegment g1 = upload(kernels, arena, x), l1 = upload(kernels, arena, new float[n]);
            int before = device.waits();
            assertEquals(4, kernels.softmaxCrossEntropy(l1, g1, tgt, n, v, -100, true, 0.25f));
            assertTrue(device.waits() - before >= 1, "softmaxCrossEntropy: the targets down");
            MemorySegment g2 = upload(kernels, arena, x), l2 = upload(kernels, arena, new float[n]);
            before = device.waits();
            kernels.softmaxCrossEntropyRows(l2, g2, tgt, n, v, -100, true, 0.25f);
            assertEquals(0, device.waits() - before, "softmaxCrossEntropyRows waits for nothing");
            assertArrayEquals(download(kernels, arena, g1, n * v), download(kernels, arena, g2, n * v));
            assertArrayEquals(download(kernels, arena, l1, n), download(kernels, arena, l2, n));

            targets[3] = v;   // one past the vocabulary
            kernels.copyFromHost(tgt, arena.allocateFrom(ValueLayout.JAVA_INT, targets), 4L * n);
            MemorySegment g3 = upload(kernels, arena, x);
            kernels.softmaxCrossEntropyRows(l2, g3, tgt, n, v, -100, true, 0.25f);
            float[] losses = download(kernels, arena, l2, n), grad = download(kernels, arena, g3, n * v);
            for (int r = 0; r < n; r++) {
                boolean nan = Float.isNaN(losses[r]);
                for (int j = 0; j < v; j++) nan &= Float.isNaN(grad[r * v + j]);
                assertEquals(r == 3, nan, "row " + r + ": loss " + losses[r]);
                assertEquals(r == 1, losses[r] == 0f, "row " + r + ": loss " + losses[r]);
            }
        }
    }

    private static MemorySegment upload(CudaKernels kernels, Arena arena, float[] x) {
        MemorySegment host = arena.allocate(4L * x.length, 64), device = kernels.allocate(arena, 4L * x.length);
        MemorySegment.copy(x, 0, host, ValueLayout.JAVA_FLOAT, 0, x.length);
        kernels.copyFromHost(device, host, 4L * x.length);
        return device;
    }

    private static float[] download(CudaKernels kernels, Arena arena, MemorySegment device, int n) {
        MemorySegment host = arena.allocate(4L * n, 64);
        kernels.copyToHost(host, device, 4L * n);
        return host.toArray(ValueLayout.JAVA_FLOAT);
    }
}
