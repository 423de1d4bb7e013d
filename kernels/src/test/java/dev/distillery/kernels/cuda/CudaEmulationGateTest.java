package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.conformance.Buffers;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The CUDA gate without a GPU: compiles the registry's kernels ({@code kernel_gate.cpp}, which
 * includes {@code cuda/src/main/cuda/distill_loss.cu}) with g++ against the CPU emulation in
 * {@code cuda/src/test/emulation} (each CUDA thread an OS thread,
 * block barriers with a deadlock watchdog, warp shuffles), runs it on fresh random inputs and
 * holds its outputs to the Java CPU kernel's (which the float64 reference holds in turn). The
 * harness also fails when a kernel writes into the 0x7F red zones around any buffer.
 */
class CudaEmulationGateTest {

    private static Path work;
    private static Path binary;
    private static CpuKernels kernels;
    private final SplittableRandom rng = new SplittableRandom();

    private static EmulationBuild gcc;

    @BeforeAll
    static void compile() throws Exception {
        gcc = new EmulationBuild("distillery-cuda-gate");
        work = gcc.work();
        binary = build("kernel_gate", "-O1");
        kernels = new CpuKernels(2, "auto");
    }

    /** Compiles the gate harness (with the .cu it includes) with the given extra flags. */
    private static Path build(String name, String... flags) throws Exception {
        return gcc.build("kernel_gate.cpp", name, flags);
    }

    @AfterAll
    static void cleanUp() throws IOException {
        if (kernels != null) kernels.close();
        if (gcc != null) gcc.close();
    }

    /** shardTemperature ≠ temperature on a top-k case runs the rescaled tail (CUDA mode 2, RESCALE_TOPK). */
    private record Case(String name, int kind, DType type, Divergence divergence, int n, int v, int vt,
                        boolean inPlace, boolean labels, float temperature, float alpha, DistillOptions.TopKMode mode,
                        float shardTemperature) {
        Case(String name, int kind, DType type, Divergence divergence, int n, int v, int vt,
             boolean inPlace, boolean labels, float temperature, float alpha) {
            this(name, kind, type, divergence, n, v, vt, inPlace, labels, temperature, alpha, DistillOptions.TopKMode.TAIL_BUCKET,
                    temperature);
        }

        Case(String name, int kind, DType type, Divergence divergence, int n, int v, int vt,
             boolean inPlace, boolean labels, float temperature, float alpha, DistillOptions.TopKMode mode) {
            this(name, kind, type, divergence, n, v, vt, inPlace, labels, temperature, alpha, mode, temperature);
        }
    }

    private static List<Case> cases(int[][] shapes) {
        List<Case> cases = new ArrayList<>();
        Divergence[] divs = {Divergence.forwardKl(), Divergence.reverseKl(), Divergence.jsd(0.4)};
        for (int[] shape : shapes) {
            for (Divergence d : divs) {
                for (DType t : DType.logitTypes()) {
                    boolean inPlace = t != DType.F16;
                    cases.add(new Case("dense " + t + " " + d + " V=" + shape[0] + "/" + shape[1], 0, t, d, 3,
                            shape[0], shape[1], inPlace, true, 2f, 0.3f));
                }
            }
            for (Divergence d : divs) {
                cases.add(new Case("mixture of F32, BF16, F16 " + d + " V=" + shape[0] + "/" + shape[1], 3, DType.F32, d, 3,
                        shape[0], shape[1], d != divs[1], true, 1.5f, 0.3f));
            }
            cases.add(new Case("sampled V=" + shape[0], 1, DType.F32, divs[0], 3, shape[0], shape[1], true, true, 1.5f, 0.2f));
            for (Divergence d : divs) {
                for (DistillOptions.TopKMode mode : DistillOptions.TopKMode.values()) {
                    DType t = mode == DistillOptions.TopKMode.TAIL_BUCKET ? DType.BF16 : DType.F32;
                    cases.add(new Case("top-k " + t + " " + mode + " " + d + " V=" + shape[0] + "/" + shape[1], 2, t, d, 3,
                            shape[0], shape[1], mode == DistillOptions.TopKMode.TAIL_BUCKET, true, 2f, 0.3f, mode));
                }
                // a shard dumped at T = 1.5 trained at T = 2: the tail mass rescaled (RESCALE_TOPK)
                cases.add(new Case("top-k F16 rescaled tail " + d + " V=" + shape[0] + "/" + shape[1], 2, DType.F16, d, 3,
                        shape[0], shape[1], true, true, 2f, 0.3f, DistillOptions.TopKMode.TAIL_BUCKET, 1.5f));
            }
        }
        cases.add(new Case("dense no labels", 0, DType.F32, divs[0], 2, 211, 211, false, false, 1f, 0f));
        return cases;
    }

    private void runAll(Path gate, List<Case> cases, boolean isolation) throws Exception {
        List<String> failures = new ArrayList<>();
        for (Case c : cases) {
            String problem = run(gate, c, isolation);
            if (problem != null) failures.add(c.name() + ": " + problem);
        }
        assertTrue(failures.isEmpty(), failures.size() + " of " + cases.size() + " cases failed:\n" + String.join("\n", failures));
    }

    @Test
    void cudaLossKernelsMatchTheJavaKernelUnderEmulation() throws Exception {
        runAll(binary, cases(new int[][]{{1, 1}, {37, 37}, {1009, 1005}, {1024, 1024}}), true);
    }

    @Test
    void cudaLossKernelsAreCleanUnderAddressAndUndefinedBehaviourSanitizers() throws Exception {
        Path asan = build("kernel_gate_asan", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined");
        runAll(asan, cases(new int[][]{{1, 1}, {37, 33}, {1009, 1005}}), false);
    }

    @Test
    void cudaLossKernelsAreCleanUnderThreadSanitizerOnSmallSizes() throws Exception {
        Path tsan = build("kernel_gate_tsan", "-O1", "-fsanitize=thread");
        runAll(tsan, cases(new int[][]{{1, 1}, {37, 33}}), false);
    }

    private static float[] nan(int n) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, Float.NaN);
        return a;
    }

    private static float[] floats(double[] x) {
        float[] a = new float[x.length];
        for (int i = 0; i < x.length; i++) a[i] = (float) x[i];
        return a;
    }

    /** Runs one case on both sides; null when they agree, else what differs. */
    private String run(Path gate, Case c, boolean isolation) throws Exception {
        // top-k: k = 8, and 70 on the wide rows, so that warp 0's lanes take 0, 1, 2 and 3 listed entries each
        int n = c.n(), v = c.v(), vt = c.vt(), samples = c.kind() == 2 ? Math.min(vt >= 1000 ? 70 : 8, vt) : 12;
        double[] s = new double[n * v];
        for (int i = 0; i < s.length; i++) s[i] = (float) (2 * rng.nextGaussian());
        double[] t = new double[n * vt];
        for (int i = 0; i < t.length; i++) t[i] = 3 * rng.nextGaussian();
        int[] labels = new int[n];
        for (int r = 0; r < n; r++) labels[r] = rng.nextInt(v);
        if (n > 2) labels[1] = -100;
        int[] ids = new int[n * samples];
        double[] weights = new double[n * samples], lse = new double[n];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = rng.nextInt(vt);
            weights[i] = (float) (rng.nextDouble() / samples);
        }
        if (c.kind() == 2) {
            // top-k: the k largest teacher logits of each row (distinct ids) and the row's logsumexp at T
            for (int r = 0; r < n; r++) {
                int row = r;
                int[] order = java.util.stream.IntStream.range(0, vt).boxed()
                        .sorted((x, y) -> Double.compare(t[row * vt + y], t[row * vt + x])).mapToInt(Integer::intValue).toArray();
                double mx = Double.NEGATIVE_INFINITY, sum = 0;
                for (int j = 0; j < vt; j++) mx = Math.max(mx, t[r * vt + j] / c.shardTemperature());
                for (int j = 0; j < vt; j++) sum += Math.exp(t[r * vt + j] / c.shardTemperature() - mx);
                lse[r] = (float) (mx + Math.log(sum));
                for (int i = 0; i < samples; i++) ids[r * samples + i] = order[i];
            }
        }
        DistillOptions o = DistillOptions.of(c.temperature(), c.alpha()).withDivergence(c.divergence()).withTopKMode(c.mode());
        if (c.shardTemperature() != c.temperature()) o = o.withSparseTemperature(DistillOptions.SparseTemperature.RESCALE_TOPK);
        float gradScale = 1f / n;

        try (Arena arena = Arena.ofShared()) {
            MemorySegment teacherSeg = arena.allocate((long) c.type().bytes() * Math.max(1, t.length), 64);
            for (int i = 0; i < t.length; i++) c.type().write(teacherSeg, i, (float) t[i]);
            // Java side
            MemorySegment student = Buffers.floats(arena, s), grad = Buffers.poisoned(arena, (long) n * v);
            MemorySegment ce = Buffers.poisoned(arena, n), div = Buffers.poisoned(arena, n);
            MemorySegment topLogits = arena.allocate((long) c.type().bytes() * ids.length, 64);
            for (int i = 0; i < ids.length; i++) c.type().write(topLogits, i, (float) t[(i / samples) * vt + ids[i]]);
            // a mixture: this teacher (fp32) with a bf16 and an fp16 one
            List<MemorySegment> members = new ArrayList<>(List.of(teacherSeg));
            for (DType type : new DType[]{DType.BF16, DType.F16}) {
                MemorySegment m = arena.allocate((long) type.bytes() * Math.max(1, t.length), 64);
                for (int i = 0; i < t.length; i++) type.write(m, i, (float) (3 * rng.nextGaussian()));
                members.add(m);
            }
            TeacherTargets teacher = switch (c.kind()) {
                case 0 -> new TeacherTargets.Dense(teacherSeg, c.type(), vt);
                case 3 -> new TeacherTargets.Mixture(List.of(new TeacherTargets.Dense(members.get(0), DType.F32, vt),
                        new TeacherTargets.Dense(members.get(1), DType.BF16, vt), new TeacherTargets.Dense(members.get(2), DType.F16, vt)),
                        new float[]{0.2f, 0.5f, 0.3f});
                case 1 -> new TeacherTargets.Sampled(Buffers.ints(arena, ids), Buffers.floats(arena, weights), samples, vt, c.temperature());
                default -> new TeacherTargets.TopK(Buffers.ints(arena, ids), topLogits, c.type(), Buffers.floats(arena, lse),
                        samples, vt, c.shardTemperature());
            };
            kernels.distillLoss(student, grad, teacher, c.labels() ? Buffers.ints(arena, labels) : null, ce, div, n, v, o, gradScale);

            // CUDA side under emulation: the kernel CudaKernels would launch, with its arguments
            float[] sf = new float[n * v];
            for (int i = 0; i < sf.length; i++) sf[i] = (float) s[i];
            CudaKernel kernel = CudaKernels.lossKernel(teacher);
            GateCall call = new GateCall(kernel, n, 64).floats(sf);
            if (c.inPlace()) call.alias(0);
            else call.floats(nan(n * v));
            int ceArg;
            switch (c.kind()) {
                case 0 -> call.bytes(teacherSeg);
                case 3 -> {
                    for (MemorySegment m : members) call.bytes(m);
                    for (int i = members.size(); i < TeacherTargets.Mixture.MAX_TEACHERS; i++) call.nullPointer();
                }
                case 1 -> call.ints(ids).floats(floats(weights));
                default -> call.ints(ids).bytes(topLogits).floats(floats(lse));
            }
            if (c.labels()) call.ints(labels);
            else call.nullPointer();
            ceArg = c.kind() == 0 ? 4 : c.kind() == 1 ? 5 : c.kind() == 3 ? 3 + TeacherTargets.Mixture.MAX_TEACHERS : 6;
            call.floats(nan(n)).floats(nan(n)).i32(n).i32(v);
            switch (c.kind()) {
                case 0 -> call.i32(vt);
                case 3 -> call.i32(vt).struct(CudaKernels.mixtureSpec(arena, (TeacherTargets.Mixture) teacher));
                case 1 -> call.i32(samples);
                // the kernel's top-k mode, chosen as CudaKernels chooses it: 0 tail bucket, 1 renormalize, 2 rescaled tail
                default -> call.i32(vt).i32(samples).f32(c.shardTemperature())
                        .i32(c.mode() == DistillOptions.TopKMode.RENORMALIZE ? 1 : c.shardTemperature() != c.temperature() ? 2 : 0);
            }
            call.struct(CudaKernels.distillParams(arena, o, gradScale));
            GateCall.Outcome out = call.run(gate, work);
            if (out.problem() != null) return out.problem();
            float[] gOut = out.floats(c.inPlace() ? 0 : 1), ceOut = out.floats(ceArg), divOut = out.floats(ceArg + 1);
            double[] gCuda = new double[n * v], ceCuda = new double[n], divCuda = new double[n];
            for (int i = 0; i < gCuda.length; i++) gCuda[i] = gOut[i];
            for (int i = 0; i < n; i++) ceCuda[i] = ceOut[i];
            for (int i = 0; i < n; i++) divCuda[i] = divOut[i];
            if (isolation) {
                // Row isolation: perturb row 0 of the student; rows 1.. must come out bit for bit the same.
                float[] changed = sf.clone();
                for (int j = 0; j < v; j++) changed[j] += 1.5f;
                GateCall.Outcome out2 = call.withFloats(0, changed).run(gate, work);
                if (out2.problem() != null) return "row isolation run: " + out2.problem();
                float[] g2 = out2.floats(c.inPlace() ? 0 : 1), ce2 = out2.floats(ceArg), div2 = out2.floats(ceArg + 1);
                for (int r = 1; r < n; r++) {
                    for (int j = 0; j < v; j++) {
                        if (Float.floatToRawIntBits(gOut[r * v + j]) != Float.floatToRawIntBits(g2[r * v + j])) {
                            return "changing row 0 changed the gradient of row " + r + " at column " + j;
                        }
                    }
                    if (ceOut[r] != ce2[r] || divOut[r] != div2[r]) {
                        return "changing row 0 changed the losses of row " + r;
                    }
                }
            }
            double err = Math.max(Buffers.relativeError(gCuda, grad, 1e-3),
                    Math.max(Buffers.relativeError(ceCuda, ce, 1e-3), Buffers.relativeError(divCuda, div, 1e-3)));
            return err < 5e-4 ? null : "max relative difference " + err; // libm expf vs our polynomial, float vs double sums
        }
    }
}
