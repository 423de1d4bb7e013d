package dev.distillery.bindings;

/**
 * A CUDA driver ({@code CUresult}) or cuBLAS ({@code cublasStatus_t}) call that failed: the call,
 * the status as a number and a name ({@code CUDA_ERROR_OUT_OF_MEMORY}), and its description.
 */
public final class CudaException extends RuntimeException {

    private final String call;
    private final int status;
    private final String statusName;

    public CudaException(String call, int status, String statusName, String description) {
        super(call + " failed: " + statusName + " (" + status + "): " + description);
        this.call = call;
        this.status = status;
        this.statusName = statusName;
    }

    public String call() {
        return call;
    }

    public int status() {
        return status;
    }

    public String statusName() {
        return statusName;
    }
}
