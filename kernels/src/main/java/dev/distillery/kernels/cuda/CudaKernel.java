package dev.distillery.kernels.cuda;

import java.lang.foreign.MemorySegment;
import java.util.Locale;

/**
 * The kernels of the fatbin, as cuda/src/main/cuda/kernels.def lists them, each with its argument
 * kinds: p a device pointer ({@link CudaBackend.Ptr}), i an int, l a long, f a float, s a struct by
 * value (a {@link MemorySegment} of its bytes). {@link CudaBackend#launch} checks every launch's
 * arguments against these; CudaKernelRegistryTest holds this list to kernels.def, to each kernel's
 * C++ signature under the emulation, and to the ptxas log.
 */
public enum CudaKernel {
    OPS_EMBEDDING_FORWARD("ppppiii"),
    OPS_EMBEDDING_BACKWARD_POSITIONS("ppiii"),
    OPS_EMBEDDING_BACKWARD_TOKENS("pppii"),
    OPS_LAYERNORM_FORWARD("ppppppii"),
    OPS_LAYERNORM_FORWARD_BF16("ppppppii"),
    OPS_LAYERNORM_BACKWARD_INPUT("ppppppii"),
    OPS_LAYERNORM_PARAMS_PARTIAL("ppppppiiii"),
    OPS_GELU_FORWARD("ppl"),
    OPS_GELU_FORWARD_BF16("ppl"),
    OPS_GELU_BACKWARD("pppl"),
    OPS_RMSNORM_FORWARD("ppppiif"),
    OPS_RMSNORM_FORWARD_BF16("ppppiif"),
    OPS_RMSNORM_BACKWARD_INPUT("pppppii"),
    OPS_RMSNORM_WEIGHT_PARTIAL("ppppiiii"),
    OPS_SWIGLU_FORWARD("pppl"),
    OPS_SWIGLU_FORWARD_BF16("pppl"),
    OPS_SWIGLU_BACKWARD("pppppl"),
    OPS_ROPE_ROTATE("pppiiiiiifi"),
    OPS_REPEAT_HEADS_FORWARD("piipiiiiii"),
    OPS_REPEAT_HEADS_BACKWARD("piipiiiiii"),
    OPS_RESIDUAL_FORWARD("pppl"),
    OPS_ACCUMULATE("ppl"),
    OPS_SCALE("pfl"),
    OPS_FILL("pfl"),
    OPS_ROUND_TO_BF16("ppl"),
    OPS_BROADCAST_ROWS("ppii"),
    OPS_SUM_ROWS_PARTIAL("ppiiii"),
    OPS_SUM_PARTIALS("ppppii"),
    OPS_SOFTMAX_CROSS_ENTROPY("pppiiiif"),
    OPS_LOGSUMEXP_ROWS("ppiif"),
    OPS_ARGMAX_ROWS("ppii"),
    OPS_SAMPLE_ROWS("pppiis"),
    OPS_ADAMW("pppplfffffi"),
    OPS_ADAMW_CHUNKS("pppppppifffffi"),
    OPS_SUM_OF_SQUARES("ppl"),
    OPS_ATTENTION_SOFTMAX_FORWARD("ppiiiif"),
    OPS_ATTENTION_SOFTMAX_BACKWARD("pppiiiif"),
    OPS_ATTENTION_DECODE("pppppiiiii"),
    OPS_HEADS_SPLIT("ppiiiii"),
    OPS_HEADS_SPLIT_BF16("ppiiiii"),
    OPS_HEADS_MERGE("ppiiiiii"),
    OPS_HEADS_MERGE_BF16("ppiiiii"),
    DISTILL_DENSE_F32("ppppppiiis"),
    DISTILL_DENSE_F16("ppppppiiis"),
    DISTILL_DENSE_BF16("ppppppiiis"),
    DISTILL_TOPK_F32("ppppppppiiiifis"),
    DISTILL_TOPK_F16("ppppppppiiiifis"),
    DISTILL_TOPK_BF16("ppppppppiiiifis"),
    DISTILL_SAMPLED("pppppppiiis"),
    DISTILL_MIXTURE("pppppppppppppiiiss"),
    FEATURE_DISTANCE_F32("ppppiiif"),
    FEATURE_DISTANCE_F16("ppppiiif"),
    FEATURE_DISTANCE_BF16("ppppiiif");

    private final String signature;

    CudaKernel(String signature) {
        this.signature = signature;
    }

    /** The entry point's name in the fatbin (and in kernels.def). */
    public String symbol() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The argument kinds, one character each: p, i, l, f, s. */
    public String signature() {
        return signature;
    }

    /** Checks a launch's arguments against {@link #signature()}, naming the kernel and the argument that does not fit. */
    public void check(Object... args) {
        if (args.length != signature.length()) {
            throw new IllegalArgumentException(symbol() + " takes " + signature.length() + " arguments (" + signature + "), got "
                    + args.length);
        }
        for (int i = 0; i < args.length; i++) {
            char kind = signature.charAt(i);
            boolean fits = switch (kind) {
                case 'p' -> args[i] instanceof CudaBackend.Ptr;
                case 'i' -> args[i] instanceof Integer;
                case 'l' -> args[i] instanceof Long;
                case 'f' -> args[i] instanceof Float;
                default -> args[i] instanceof MemorySegment;
            };
            if (!fits) {
                throw new IllegalArgumentException(symbol() + ": argument " + i + " must be '" + kind + "' (" + signature + "), got "
                        + (args[i] == null ? "null" : args[i].getClass().getSimpleName()));
            }
        }
    }
}
