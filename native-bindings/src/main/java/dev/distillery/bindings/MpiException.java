package dev.distillery.bindings;

/** An MPI call that failed: the call, its status and MPI's description of it. */
public final class MpiException extends RuntimeException {

    private final int status;

    public MpiException(String call, int status, String description) {
        super(call + " failed: " + description + (status >= 0 ? " (MPI error " + status + ")" : ""));
        this.status = status;
    }

    public int status() {
        return status;
    }
}
