package dev.distillery.kernels.distill;

/**
 * A problem in one row of a loss kernel's input (a teacher value, a label), with the row's number
 * in the call, so that a caller who knows where its rows came from (a chunk's offset, a batch's
 * shard sequences) can name the place in the user's terms.
 */
public final class BadRowException extends IllegalArgumentException {

    private final long row;
    private final String problem;

    /** @param problem what is wrong with the row, without the row: "top-k id 7 is listed twice" */
    public BadRowException(long row, String problem) {
        super("row " + row + ": " + problem);
        this.row = row;
        this.problem = problem;
    }

    public long row() {
        return row;
    }

    public String problem() {
        return problem;
    }

    /** The same problem, with the row counted from {@code offset} rows earlier (a chunk's first row). */
    public BadRowException shifted(long offset) {
        BadRowException e = new BadRowException(row + offset, problem);
        e.initCause(this);
        return e;
    }
}
