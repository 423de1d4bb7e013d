package dev.distillery.trainer.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;

import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;

/**
 * A token file cut into consecutive windows of seqLen tokens (the last partial window dropped),
 * as {@code dump-logits} cuts it: the sequences of a run whose teacher runs in the process and
 * computes its targets from the ids. Reads are memory-mapped; one reader thread at a time.
 */
public final class TokenWindows implements Sequences, AutoCloseable {

    private final TokenFile file;
    private final int seqLen, count;
    private final int[] window;

    private TokenWindows(TokenFile file, int seqLen) {
        this.file = file;
        this.seqLen = seqLen;
        this.count = (int) Math.min(Integer.MAX_VALUE, file.size() / seqLen);
        this.window = new int[seqLen];
    }

    /**
     * @param vocab every id must be below it (checked once, naming the position of the first that is not)
     * @throws IOException when the file holds fewer than one window
     */
    public static TokenWindows open(Path path, int seqLen, int vocab, String whose) throws IOException {
        if (seqLen < 2) throw new IllegalArgumentException("windows of " + seqLen + " tokens: at least 2 are needed (a token and the next)");
        TokenFile f = TokenFile.open(path, vocab, whose);
        if (f.size() < seqLen) {
            f.close();
            throw new IOException(path + ": " + f.size() + " tokens, fewer than one window of " + seqLen);
        }
        return new TokenWindows(f, seqLen);
    }

    public Path path() {
        return file.path();
    }

    @Override
    public int sequences() {
        return count;
    }

    @Override
    public int seqLen() {
        return seqLen;
    }

    @Override
    public TeacherLayout layout() {
        return null;
    }

    @Override
    public void copyInputIds(int index, MemorySegment dst, long offset) {
        file.read((long) index * seqLen, seqLen, window);
        for (int i = 0; i < seqLen; i++) dst.set(ValueLayout.JAVA_INT_UNALIGNED, offset + 4L * i, window[i]);
    }

    @Override
    public TeacherTargets targets(int index) {
        throw new IllegalStateException(file.path() + " holds token ids only: its teacher runs in the process");
    }

    @Override
    public String where(int index, int position) {
        return file.path() + ", token " + ((long) index * seqLen + position) + " (window " + index + ", position " + position + ")";
    }

    @Override
    public RuntimeException unreadable(int index, Throwable fault) {
        String message = file.path() + ": window " + index + " could not be read (the file was truncated or replaced while this run read it)";
        return new UncheckedIOException(message, new IOException(message, fault));
    }

    @Override
    public void close() {
        file.close();
    }
}
