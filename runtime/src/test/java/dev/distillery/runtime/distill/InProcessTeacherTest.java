package dev.distillery.runtime.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.Divergence;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.nn.Evaluator;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModelForward;
import dev.distillery.runtime.nn.Llama;
import dev.distillery.runtime.nn.LlamaConfig;
import dev.distillery.runtime.nn.TrainingSession;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * The two teacher modes on one batch: a Llama teacher run in the process, its logits made chunk by
 * chunk, against the same teacher's full logits stored as dense f32 targets (what {@code
 * dump-logits --dtype f32} writes). The loss, its parts, every gradient and the evaluation sums
 * (top-1 agreement included) must agree to float32 accuracy; the student (GPT-2) is wider in
 * vocabulary than the teacher, and the chunks do not divide the batch's rows.
 */
class InProcessTeacherTest {

    private static final int TEACHER_VOCAB = 37, STUDENT_VOCAB = 40, B = 2, T = 7, N = B * T, CHUNK = 5;

    /** In bf16 (where the CPU has it) the teacher runs on the weights it holds packed; its stored logits on the plain GEMM. */
    @ParameterizedTest(name = "precision={0}")
    @EnumSource(Precision.class)
    void anInProcessTeacherGivesTheLossAndGradientsOfItsStoredDenseLogits(Precision precision) {
        try (CpuKernels kernels = new CpuKernels(2, "blas", precision);
             Llama teacher = new Llama(new LlamaConfig(LlamaConfig.Family.LLAMA, TEACHER_VOCAB, 16, 2, 16, 4, 2, 4, 24, 1e-5f,
                     LlamaConfig.Rope.plain(10000), false), kernels, false);
             Gpt2 stored = new Gpt2(new Gpt2Config(STUDENT_VOCAB, T, 1, 12, 3), kernels);
             Gpt2 live = new Gpt2(new Gpt2Config(STUDENT_VOCAB, T, 1, 12, 3), kernels);
             Arena host = Arena.ofShared()) {
            Rng rng = new Rng(3);
            for (var p : teacher.parameters().parameters()) {
                float[] x = new float[(int) p.numel()];
                for (int i = 0; i < x.length; i++) x[i] = (float) ((p.name().endsWith("norm.weight") ? 1 : 0) + 0.3 * rng.nextGaussian());
                teacher.parameters().write(p, x);
            }
            stored.initialize(9);
            live.initialize(9);
            MemorySegment ids = host.allocate(4L * N, 64);
            for (int i = 0; i < N; i++) ids.setAtIndex(ValueLayout.JAVA_INT, i, rng.nextInt(TEACHER_VOCAB));
            MemorySegment logits = host.allocate(4L * N * TEACHER_VOCAB, 64);
            int[] top1 = new int[N];
            try (LanguageModelForward forward = new LanguageModelForward(teacher, kernels, B, T)) {
                MemorySegment.copy(forward.logits(ids), 0, logits, 0, logits.byteSize());
            }
            TeacherTargets dense = new TeacherTargets.Dense(logits, DType.F32, TEACHER_VOCAB);
            for (int r = 0; r < N; r++) top1[r] = dense.top1(r);
            DistillOptions options = DistillOptions.of(2f, 0.3f).withDivergence(Divergence.jsd(0.4));
            try (TrainingSession a = session(stored, kernels); TrainingSession b = session(live, kernels);
                 InProcessTeacher inProcess = new InProcessTeacher(teacher, kernels, CHUNK)) {
                a.inputs().setSequences(ids);
                b.inputs().setSequences(ids);
                a.beginStep();
                b.beginStep();
                var la = a.backwardDistill(dense, options, DifferentiableOps.Reduction.MEAN, CHUNK, 1f);
                var lb = b.backwardDistill(inProcess, options, DifferentiableOps.Reduction.MEAN, CHUNK, 1f);
                assertEquals(la.total(), lb.total(), 1e-6 * Math.abs(la.total()), "loss");
                assertEquals(la.ce(), lb.ce(), 1e-6 * Math.abs(la.ce()), "hard-label part");
                assertEquals(la.divergence(), lb.divergence(), 1e-5 * Math.abs(la.divergence()), "divergence");
                for (var p : stored.parameters().parameters()) {
                    float[] ga = stored.parameters().read(p.grad()), gb = live.parameters().read(live.parameters().get(p.name()).grad());
                    double scale = 1e-6, diff = 0;
                    for (int i = 0; i < ga.length; i++) {
                        scale = Math.max(scale, Math.abs(ga[i]));
                        diff = Math.max(diff, Math.abs(ga[i] - gb[i]));
                    }
                    assertTrue(diff <= 1e-5 * scale, p.name() + ": gradients differ by " + diff + " at scale " + scale);
                }
                Evaluator.Sums ea = a.evaluator().distill(dense, top1, options, CHUNK), eb = b.evaluator().distill(inProcess, options, CHUNK);
                assertEquals(ea.rows(), eb.rows());
                assertEquals(ea.agree(), eb.agree(), "top-1 agreements");
                assertTrue(ea.agree() > 0 && ea.agree() < ea.rows(), "a test of agreement needs some of both: " + ea.agree() + " of " + ea.rows());
                assertEquals(ea.ce(), eb.ce(), 1e-6 * Math.abs(ea.ce()), "evaluation CE");
                assertEquals(ea.divergence(), eb.divergence(), 1e-5 * Math.abs(ea.divergence()), "evaluation divergence");
                assertEquals(4L * CHUNK * TEACHER_VOCAB, inProcess.chunkBytes());
            }
        }
    }

    private static TrainingSession session(Gpt2 model, CpuKernels kernels) {
        return new TrainingSession(model, kernels, AdamW.Config.defaults(), LearningRateSchedule.constant(1e-3), 0, B, T);
    }
}
