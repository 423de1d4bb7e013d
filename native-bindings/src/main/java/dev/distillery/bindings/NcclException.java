package dev.distillery.bindings;

/** An NCCL call that failed: the call, its ncclResult_t and NCCL's description of it. */
public final class NcclException extends RuntimeException {

    private final int result;

    public NcclException(String call, int result, String description) {
        super(call + " failed: " + description + " (ncclResult_t " + result + ")");
        this.result = result;
    }

    public int result() {
        return result;
    }
}
