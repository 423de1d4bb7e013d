package dev.distillery.trainer.data;

import java.util.List;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * The strings of the teacher shard format (docs/FORMATS.md#teacher-shards), parsed here and nowhere
 * else: the manifest's {@code targets} and {@code dtype} names, and the safetensors tensor that
 * holds each buffer of a {@link TeacherLayout}.
 */
public final class TeacherShardFormat {

    /** One buffer's tensor: its name, and whether it holds one value per token (shape (s, t)) or a row (s, t, n). */
    public record Tensor(String name, boolean onePerToken) {
    }

    private TeacherShardFormat() {
    }

    /** The manifest's name of a kind: dense, topk, sampled. */
    public static String name(TeacherTargets.Kind kind) {
        return switch (kind) {
            case DENSE -> "dense";
            case TOP_K -> "topk";
            case SAMPLED -> "sampled";
        };
    }

    /** @throws IllegalArgumentException naming the accepted names */
    public static TeacherTargets.Kind kind(String name) {
        for (TeacherTargets.Kind k : TeacherTargets.Kind.values()) {
            if (name(k).equals(name)) return k;
        }
        throw new IllegalArgumentException("must be dense, topk or sampled, got " + name);
    }

    /** The manifest's name of a logit type: f32, f16, bf16. */
    public static String name(DType type) {
        return switch (type) {
            case F32 -> "f32";
            case F16 -> "f16";
            case BF16 -> "bf16";
            default -> throw new IllegalArgumentException("teacher logits are f32, f16 or bf16, not " + type);
        };
    }

    /**
     * f32, f16 or bf16, or the names torch gives them (float32, float16, bfloat16), which a Python
     * writer is likely to pass through.
     *
     * @throws IllegalArgumentException naming the accepted names
     */
    public static DType logitType(String name) {
        String shortName = switch (name == null ? "" : name) {
            case "float32" -> "f32";
            case "float16" -> "f16";
            case "bfloat16" -> "bf16";
            default -> name;
        };
        for (DType d : DType.logitTypes()) {
            if (name(d).equals(shortName)) return d;
        }
        throw new IllegalArgumentException("must be f32, f16 or bf16, got " + name);
    }

    /** The tensors of a kind, in the order of {@link TeacherLayout#bufferTypes()}. */
    public static List<Tensor> tensors(TeacherTargets.Kind kind) {
        return switch (kind) {
            case DENSE -> List.of(new Tensor("logits", false));
            case TOP_K -> List.of(new Tensor("topk_ids", false), new Tensor("topk_logits", false), new Tensor("logsumexp", true));
            case SAMPLED -> List.of(new Tensor("sampled_ids", false), new Tensor("sampled_weights", false));
        };
    }

    /** The tensor of hidden state {@code layer}: {@code hidden.<layer>}, bf16 (sequences, seq_len, hidden_size). */
    public static String hiddenTensor(int layer) {
        return "hidden." + layer;
    }

    /** The type hidden states are stored in. */
    public static final DType HIDDEN_TYPE = DType.BF16;

    /** The shape of buffer i of {@code layout} for {@code sequences} sequences of {@code seqLen} tokens. */
    public static int[] shape(TeacherLayout layout, int i, int sequences, int seqLen) {
        return tensors(layout.kind()).get(i).onePerToken() ? new int[]{sequences, seqLen}
                : new int[]{sequences, seqLen, layout.elementsPerRow(i)};
    }

    /** The layout a (checked) manifest describes; a sampled manifest's logits are F32 (it has no dtype). */
    public static TeacherLayout layout(TeacherManifest m) {
        TeacherTargets.Kind kind = kind(m.targets());
        DType type = kind == TeacherTargets.Kind.SAMPLED || m.dtype() == null ? DType.F32 : logitType(m.dtype());
        return kind == TeacherTargets.Kind.DENSE ? TeacherLayout.dense(type, m.vocabSize())
                : new TeacherLayout(kind, type, m.vocabSize(), m.k(), (float) m.temperature());
    }
}
