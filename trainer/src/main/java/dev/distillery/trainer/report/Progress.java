package dev.distillery.trainer.report;

import java.io.PrintWriter;

/**
 * A progress line on stderr: a bar, the step, what the caller adds (loss, tokens/s), and the ETA.
 * On a terminal it redraws one line; otherwise it prints a line at most every {@code intervalMillis}.
 */
public final class Progress {

    private final PrintWriter err;
    private final String label;
    private final long total;
    private final boolean terminal;
    private final long intervalNanos;
    private final long startNanos = System.nanoTime();
    private final long startDone;
    private long lastPrint;

    public Progress(PrintWriter err, String label, long startDone, long total, long intervalMillis) {
        this.err = err;
        this.label = label;
        this.startDone = startDone;
        this.total = total;
        this.terminal = System.console() != null && System.getenv("DISTILLERY_PLAIN_PROGRESS") == null;
        this.intervalNanos = (terminal ? 200 : intervalMillis) * 1_000_000L;
    }

    /** Reports {@code done} of {@code total}; {@code detail} is appended (e.g. "loss 3.21 | 4,100 tok/s"). */
    public void update(long done, String detail) {
        long now = System.nanoTime();
        boolean last = done >= total;
        if (!last && now - lastPrint < intervalNanos && lastPrint != 0) return;
        lastPrint = now;
        double fraction = total == 0 ? 1 : (double) done / total;
        int width = 24, filled = (int) Math.round(fraction * width);
        String bar = "=".repeat(filled) + (filled < width ? ">" : "") + " ".repeat(Math.max(0, width - filled - 1));
        double elapsed = (now - startNanos) / 1e9;
        long doneHere = done - startDone;
        String eta = doneHere <= 0 ? "?" : duration(elapsed / doneHere * (total - done));
        String line = String.format("%s [%s] %d/%d %s | ETA %s", label, bar, done, total, detail, eta);
        if (terminal) {
            err.print("\r" + line + "   ");
            if (last) err.println();
        } else {
            err.println(line);
        }
        err.flush();
    }

    public static String duration(double seconds) {
        long s = Math.round(seconds);
        return s >= 3600 ? String.format("%dh%02dm", s / 3600, s / 60 % 60) : s >= 60 ? String.format("%dm%02ds", s / 60, s % 60) : s + "s";
    }
}
