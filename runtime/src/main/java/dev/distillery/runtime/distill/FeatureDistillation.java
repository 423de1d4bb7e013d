package dev.distillery.runtime.distill;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.FeatureDistance;
import dev.distillery.runtime.ParameterStore;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.Tensor;
import dev.distillery.runtime.autograd.DifferentiableOps;
import dev.distillery.runtime.nn.LanguageModel;

/**
 * Hidden-state (feature) distillation: for each chosen pair of a student hidden state i and a
 * teacher hidden state j (numbered as {@link LanguageModel.LayerTap} numbers them), a learned
 * projection P_k (teacher width, student width) maps the student's state to the teacher's width
 * and a fused distance compares them row by row:
 * <pre>
 *   feature loss = (1/pairs) Σ_k (1/n) Σ_r distance(h_s[i_k][r] · P_kᵀ, h_t[j_k][r])
 * </pre>
 * The training loss adds {@code weight ·} this to the soft-target and hard-label loss. The
 * projections are trained with the student (they get gradients and AdamW moments) but are not
 * part of it: a checkpoint keeps them in its trainer state, never in the student's weights.
 */
public final class FeatureDistillation implements AutoCloseable {

    /** Student hidden state {@code student} against teacher hidden state {@code teacher}. */
    public record Pair(int student, int teacher) {
        public Pair {
            if (student < 0 || teacher < 0) throw new IllegalArgumentException("hidden-state indices must be >= 0, got [" + student + ", " + teacher + "]");
        }
    }

    /** What to compare and how much it weighs. */
    public record Spec(List<Pair> pairs, FeatureDistance distance, double weight) {
        public Spec {
            pairs = List.copyOf(pairs);
            if (pairs.isEmpty()) throw new IllegalArgumentException("feature distillation needs at least one layer pair");
            if (!(weight >= 0) || Double.isInfinite(weight)) throw new IllegalArgumentException("feature weight must be finite and >= 0, got " + weight);
        }

        /** The teacher's hidden states the pairs read, in order, each once. */
        public int[] teacherLayers() {
            return pairs.stream().mapToInt(Pair::teacher).distinct().sorted().toArray();
        }
    }

    /** Where the teacher's hidden states of the current batch are: (rows, teacher width) each, where the kernels read. */
    public interface TeacherStates {
        MemorySegment layer(int index);

        DType type();

        /** The states in {@code layers} (by number), all of {@code type}; asking for another is an error that names it. */
        static TeacherStates of(Map<Integer, MemorySegment> layers, DType type) {
            Map<Integer, MemorySegment> held = Map.copyOf(layers);
            return new TeacherStates() {
                @Override
                public MemorySegment layer(int index) {
                    MemorySegment s = held.get(index);
                    if (s == null) throw new IllegalArgumentException("the teacher's hidden state " + index + " is not among those kept " + held.keySet());
                    return s;
                }

                @Override
                public DType type() {
                    return type;
                }
            };
        }
    }

    private final Spec spec;
    private final int studentWidth, teacherWidth;
    private final ParameterStore projections;

    public FeatureDistillation(Spec spec, int studentLayers, int studentWidth, int teacherLayers, int teacherWidth, Kernels kernels) {
        for (Pair p : spec.pairs()) {
            if (p.student() > studentLayers) {
                throw new IllegalArgumentException("student hidden state " + p.student() + " does not exist: the student has " + studentLayers
                        + " blocks, so states 0.." + studentLayers);
            }
            if (p.teacher() > teacherLayers) {
                throw new IllegalArgumentException("teacher hidden state " + p.teacher() + " does not exist: the teacher has " + teacherLayers
                        + " blocks, so states 0.." + teacherLayers);
            }
        }
        this.spec = spec;
        this.studentWidth = studentWidth;
        this.teacherWidth = teacherWidth;
        ParameterStore.Builder b = ParameterStore.builder();
        for (int k = 0; k < spec.pairs().size(); k++) b.add(projectionName(k), teacherWidth, studentWidth);
        this.projections = b.build(kernels);
    }

    /** The name of pair k's projection in the trainer state. */
    public static String projectionName(int k) {
        return "feature_projections." + k + ".weight";
    }

    public Spec spec() {
        return spec;
    }

    /** The width of the teacher's hidden states (the projections' output). */
    public int teacherWidth() {
        return teacherWidth;
    }

    /** The projections, trained with the student, saved beside its optimizer state. */
    public ParameterStore projections() {
        return projections;
    }

    /**
     * The identity where the widths agree (the loss starts from the student's own states); else
     * N(0, 1/student width), which keeps a projected state at the scale of its input.
     */
    public void initialize(long seed) {
        Rng rng = new Rng(seed);
        for (Tensor p : projections.parameters()) {
            float[] w = new float[teacherWidth * studentWidth];
            if (teacherWidth == studentWidth) {
                for (int i = 0; i < studentWidth; i++) w[i * studentWidth + i] = 1f;
            } else {
                double std = 1 / Math.sqrt(studentWidth);
                for (int i = 0; i < w.length; i++) w[i] = (float) (std * rng.nextGaussian());
            }
            projections.write(p, w);
        }
    }

    /**
     * A tap that keeps the student's hidden states the pairs read. Recording, the tensors stay
     * valid through the step; not recording (evaluation), each is copied into {@code ops}'
     * workspace before the next block overwrites it.
     */
    public StudentStates studentTap(DifferentiableOps ops) {
        return new StudentStates(ops);
    }

    /** The student's tapped hidden states of one forward pass. */
    public final class StudentStates implements LanguageModel.LayerTap {
        private final DifferentiableOps ops;
        private final Map<Integer, Tensor> states = new HashMap<>();

        private StudentStates(DifferentiableOps ops) {
            this.ops = ops;
        }

        @Override
        public void observe(int index, Tensor hidden) {
            if (spec.pairs().stream().noneMatch(p -> p.student() == index)) return;
            if (ops.tape().enabled()) {
                states.put(index, hidden);
                return;
            }
            Tensor copy = ops.workspace().tensor("feature.student." + index, hidden.shape());
            ops.kernels().copy(copy.data(), hidden.data(), hidden.byteSize());
            states.put(index, copy);
        }
    }

    /**
     * The feature loss (unweighted; see the class comment) of the tapped student states against
     * the teacher's; with the tape enabled its gradient, times {@code weight · gradScale}, flows
     * into the student's states and the projections when the tape runs backward.
     */
    public double loss(DifferentiableOps ops, StudentStates student, TeacherStates teacher, float gradScale) {
        List<Double> parts = new ArrayList<>();
        float scale = (float) (spec.weight() * gradScale / spec.pairs().size());
        for (int k = 0; k < spec.pairs().size(); k++) {
            Pair p = spec.pairs().get(k);
            Tensor x = student.states.get(p.student());
            if (x == null) throw new IllegalStateException("the student's hidden state " + p.student() + " was not tapped");
            Tensor projected = ops.projection(x, projections.get(projectionName(k)), null);
            parts.add(ops.featureDistance(projected, teacher.layer(p.teacher()), teacher.type(), spec.distance(), scale));
        }
        return parts.stream().mapToDouble(Double::doubleValue).average().orElse(0);
    }

    @Override
    public void close() {
        projections.close();
    }
}
