package dev.distillery.kernels.cuda;

import java.util.Arrays;

/**
 * The embedding's backward on the device (transformer_ops.cu, {@code ops_embedding_backward_*}):
 * {@code dwpe} one thread per (position, channel), {@code dwte} one thread per (token, channel)
 * over the positions that hold the token. Both add in the order (t, then b) of the loop they
 * replace, one thread per channel walking every position, so the bits are the same; the device is
 * filled where that loop gave it a few warps of thousands of dependent read-modify-writes.
 */
final class EmbeddingGrads {

    private EmbeddingGrads() {
    }

    /**
     * The positions grouped by token, for {@code ops_embedding_backward_tokens}: the groups' starts
     * (groups + 1 entries), each group's token, then every row {@code b·T + t}, a group's rows in the
     * order (t, b). {@code tokens} is (B, T), ids already checked to be in the vocabulary.
     */
    static int[] grouping(int[] tokens, int b, int t) {
        int n = b * t;
        long[] keys = new long[n];
        for (int ti = 0, o = 0; ti < t; ti++) {
            for (int bi = 0; bi < b; bi++, o++) keys[o] = ((long) tokens[bi * t + ti] << 32) | o;
        }
        Arrays.sort(keys);
        int groups = 0;
        for (int i = 0; i < n; i++) if (i == 0 || keys[i] >>> 32 != keys[i - 1] >>> 32) groups++;
        int[] out = new int[2 * groups + 1 + n];
        for (int i = 0, g = 0; i < n; i++) {
            int token = (int) (keys[i] >>> 32), o = (int) keys[i];
            if (i == 0 || keys[i] >>> 32 != keys[i - 1] >>> 32) {
                out[g] = i;
                out[groups + 1 + g] = token;
                g++;
            }
            out[2 * groups + 1 + i] = (o % b) * t + o / b;
        }
        out[groups] = n;
        return out;
    }

    /** The number of groups in a {@link #grouping}. */
    static int groups(int[] grouping, int n) {
        return (grouping.length - 1 - n) / 2;
    }

    /** dwpe and dwte, the grouping already on the device at {@code grouping}. */
    static void backward(CudaBackend gpu, CudaBackend.Ptr dwte, CudaBackend.Ptr dwpe, CudaBackend.Ptr dout, CudaBackend.Ptr grouping,
                         int groups, int b, int t, int c) {
        gpu.launch(CudaKernel.OPS_EMBEDDING_BACKWARD_POSITIONS, gpu.grid((long) t * c), gpu.block(), dwpe, dout, b, t, c);
        gpu.launch(CudaKernel.OPS_EMBEDDING_BACKWARD_TOKENS, gpu.grid((long) groups * c), gpu.block(), dwte, dout, grouping, groups, c);
    }
}
