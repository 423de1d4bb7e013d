package dev.distillery.kernels.cuda;

/**
 * Sums over the rows of an (n, c) matrix into one value per column, on the device in two launches
 * (transformer_ops.cu, {@code column_tile}): partial sums of row chunks by tiles of 32 columns, then
 * each column's chunks added in order. No atomics, so every run gives the same bits; and the
 * first launch puts {@code chunks · ⌈c/32⌉} blocks on the device, where one thread per column
 * (a bias of 384 columns: 12 warps) left almost all of it idle for n sequential loads. A sum of
 * one chunk adds into the result in its one launch.
 */
final class ColumnSums {

    private static final CudaBackend.Ptr NONE = new CudaBackend.Ptr(0);

    private ColumnSums() {
    }

    /** Rows per chunk: at least 32, and at most 64 chunks. */
    static int chunkRows(int n) {
        return Math.max(32, (n + 63) / 64);
    }

    static int chunks(int n) {
        return Math.max(1, (n + chunkRows(n) - 1) / chunkRows(n));
    }

    /** Device scratch for {@code arrays} partial sums of n rows by c columns (none for one chunk). */
    static long scratchBytes(int n, int c, int arrays) {
        return chunks(n) == 1 ? 0 : 4L * arrays * chunks(n) * c;
    }

    private static int partialGrid(int n, int c) {
        return chunks(n) * ((c + 31) / 32);
    }

    /** acc[j] += Σ_r x[r, j]; {@code scratch} holds {@link #scratchBytes}(n, c, 1). */
    static void sumRows(CudaBackend gpu, long scratch, CudaBackend.Ptr acc, CudaBackend.Ptr x, int n, int c) {
        if (chunks(n) == 1) {
            gpu.launch(CudaKernel.OPS_SUM_ROWS_PARTIAL, partialGrid(n, c), gpu.block(), acc, x, n, c, chunkRows(n), 1);
            return;
        }
        CudaBackend.Ptr partial = new CudaBackend.Ptr(scratch);
        gpu.launch(CudaKernel.OPS_SUM_ROWS_PARTIAL, partialGrid(n, c), gpu.block(), partial, x, n, c, chunkRows(n), 0);
        gpu.launch(CudaKernel.OPS_SUM_PARTIALS, gpu.grid(c), gpu.block(), acc, partial, NONE, NONE, chunks(n), c);
    }

    /** Layernorm's dweight and dbias (docs/KERNELS.md#layernorm); {@code scratch} holds {@link #scratchBytes}(n, c, 2). */
    static void layerNormParams(CudaBackend gpu, long scratch, CudaBackend.Ptr dweight, CudaBackend.Ptr dbias, CudaBackend.Ptr dout,
                                CudaBackend.Ptr inp, CudaBackend.Ptr mean, CudaBackend.Ptr rstd, int n, int c) {
        if (chunks(n) == 1) {
            gpu.launch(CudaKernel.OPS_LAYERNORM_PARAMS_PARTIAL, partialGrid(n, c), gpu.block(), dweight, dbias, dout, inp, mean, rstd, n, c,
                    chunkRows(n), 1);
            return;
        }
        CudaBackend.Ptr pw = new CudaBackend.Ptr(scratch), pb = new CudaBackend.Ptr(scratch + 4L * chunks(n) * c);
        gpu.launch(CudaKernel.OPS_LAYERNORM_PARAMS_PARTIAL, partialGrid(n, c), gpu.block(), pw, pb, dout, inp, mean, rstd, n, c,
                chunkRows(n), 0);
        gpu.launch(CudaKernel.OPS_SUM_PARTIALS, gpu.grid(c), gpu.block(), dweight, pw, dbias, pb, chunks(n), c);
    }

    /** RMSNorm's dweight (docs/KERNELS.md#rmsnorm); {@code scratch} holds {@link #scratchBytes}(n, c, 1). */
    static void rmsNormWeight(CudaBackend gpu, long scratch, CudaBackend.Ptr dweight, CudaBackend.Ptr dout, CudaBackend.Ptr inp,
                              CudaBackend.Ptr rstd, int n, int c) {
        if (chunks(n) == 1) {
            gpu.launch(CudaKernel.OPS_RMSNORM_WEIGHT_PARTIAL, partialGrid(n, c), gpu.block(), dweight, dout, inp, rstd, n, c, chunkRows(n), 1);
            return;
        }
        CudaBackend.Ptr pw = new CudaBackend.Ptr(scratch);
        gpu.launch(CudaKernel.OPS_RMSNORM_WEIGHT_PARTIAL, partialGrid(n, c), gpu.block(), pw, dout, inp, rstd, n, c, chunkRows(n), 0);
        gpu.launch(CudaKernel.OPS_SUM_PARTIALS, gpu.grid(c), gpu.block(), dweight, pw, NONE, NONE, chunks(n), c);
    }
}
