package dev.distillery.trainer.data;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import dev.distillery.runtime.io.AtomicFileWriter;

/**
 * llm.c's token files, memory-mapped: a header of 256 little-endian int32 — magic, version,
 * token count — then the tokens. Two layouts exist:
 * <ul>
 *   <li>magic 20240520, version 1: uint16 tokens (GPT-2 vocabularies);</li>
 *   <li>magic 20240801, version 7: uint32 tokens (larger vocabularies, llm.c's LLaMA-3 files).</li>
 * </ul>
 * Every problem names the file and the offset.
 */
public final class TokenFile implements AutoCloseable {

    public static final int HEADER_INTS = 256;
    public static final int HEADER_BYTES = HEADER_INTS * 4;
    public static final int MAGIC_U16 = 20240520, VERSION_U16 = 1;
    public static final int MAGIC_U32 = 20240801, VERSION_U32 = 7;

    private final Path path;
    private final Arena arena;
    private final MemorySegment tokens;
    private final int width;
    private final long count;

    private TokenFile(Path path, Arena arena, MemorySegment tokens, int width, long count) {
        this.path = path;
        this.arena = arena;
        this.tokens = tokens;
        this.width = width;
        this.count = count;
    }

    /** Opens and validates {@code path}; the tokens stay mapped until {@link #close()}. */
    public static TokenFile open(Path path) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < HEADER_BYTES) {
                throw new IOException(path + ": " + size + " bytes, shorter than the " + HEADER_BYTES + "-byte header");
            }
            ByteBuffer h = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
            while (h.hasRemaining()) {
                if (ch.read(h, h.position()) < 0) throw new IOException(path + ": unexpected end of file in the header");
            }
            h.flip();
            int magic = h.getInt(), version = h.getInt();
            long count = Integer.toUnsignedLong(h.getInt());
            int width;
            if (magic == MAGIC_U16 && version == VERSION_U16) width = 2;
            else if (magic == MAGIC_U32 && version == VERSION_U32) width = 4;
            else {
                throw new IOException(path + ": magic " + magic + " / version " + version + " at offset 0 is not an llm.c token file ("
                        + MAGIC_U16 + "/" + VERSION_U16 + " for uint16 tokens, " + MAGIC_U32 + "/" + VERSION_U32 + " for uint32)");
            }
            long expected = HEADER_BYTES + count * width;
            if (size != expected) {
                throw new IOException(path + ": header at offset 8 says " + count + " tokens of " + width + " bytes ("
                        + expected + " bytes in all) but the file has " + size + " bytes");
            }
            Arena arena = Arena.ofShared();
            try {
                return new TokenFile(path, arena, ch.map(FileChannel.MapMode.READ_ONLY, HEADER_BYTES, count * width, arena), width, count);
            } catch (IOException | RuntimeException e) {
                arena.close();
                throw e;
            }
        }
    }

    /** {@link #open(Path)} and {@link #requireBelow}: a file whose every id is in {@code whose} vocabulary of {@code vocab}. */
    public static TokenFile open(Path path, int vocab, String whose) throws IOException {
        TokenFile f = open(path);
        try {
            f.requireBelow(vocab, whose);
            return f;
        } catch (IOException | RuntimeException e) {
            f.close();
            throw e;
        }
    }

    /** Writes tokens crash-safely (temporary name, fsync, rename), uint16 when every id fits, else uint32. */
    public static void write(Path path, int[] tokens) throws IOException {
        int max = 0;
        for (int i = 0; i < tokens.length; i++) {
            if (tokens[i] < 0) throw new IllegalArgumentException("token " + tokens[i] + " at position " + i + " is negative");
            max = Math.max(max, tokens[i]);
        }
        int width = max <= 0xFFFF ? 2 : 4;
        ByteBuffer b = ByteBuffer.allocate(HEADER_BYTES + tokens.length * width).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(width == 2 ? MAGIC_U16 : MAGIC_U32).putInt(width == 2 ? VERSION_U16 : VERSION_U32).putInt(tokens.length);
        b.position(HEADER_BYTES);
        for (int t : tokens) {
            if (width == 2) b.putShort((short) t);
            else b.putInt(t);
        }
        b.flip();
        AtomicFileWriter.write(path, ch -> AtomicFileWriter.writeFully(ch, b));
    }

    /**
     * Tokens streamed into an open channel (the content of an {@code AtomicFileWriter}): a header
     * placeholder first, the tokens as they come, the header with the count at {@link #finish()}.
     * The width is fixed up front: uint16 when the vocabulary fits, else uint32.
     */
    public static final class Appender {
        private final java.nio.channels.FileChannel channel;
        private final int width;
        private final ByteBuffer buffer = ByteBuffer.allocate(1 << 20).order(ByteOrder.LITTLE_ENDIAN);
        private long count;

        public Appender(java.nio.channels.FileChannel channel, int vocab) throws IOException {
            this.channel = channel;
            this.width = vocab <= 0x10000 ? 2 : 4;
            AtomicFileWriter.writeFully(channel, ByteBuffer.allocate(HEADER_BYTES));
        }

        public void append(int[] ids) throws IOException {
            for (int id : ids) {
                if (buffer.remaining() < 4) flush();
                if (width == 2) buffer.putShort((short) id);
                else buffer.putInt(id);
            }
            count += ids.length;
            if (count > 0xFFFFFFFFL) throw new IOException("more than 2^32 - 1 tokens, the most one token file's header can count; split the corpus");
        }

        public long count() {
            return count;
        }

        public void finish() throws IOException {
            flush();
            ByteBuffer h = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
            h.putInt(width == 2 ? MAGIC_U16 : MAGIC_U32).putInt(width == 2 ? VERSION_U16 : VERSION_U32).putInt((int) count).flip();
            while (h.hasRemaining()) channel.write(h, h.position());
        }

        private void flush() throws IOException {
            buffer.flip();
            AtomicFileWriter.writeFully(channel, buffer);
            buffer.clear();
        }
    }

    public Path path() {
        return path;
    }

    public long size() {
        return count;
    }

    /** Bytes per token: 2 or 4. */
    public int tokenWidth() {
        return width;
    }

    public int get(long index) {
        if (index < 0 || index >= count) {
            throw new IndexOutOfBoundsException(path + ": token " + index + " of " + count);
        }
        return width == 2 ? Short.toUnsignedInt(tokens.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index))
                : tokens.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, index);
    }

    /**
     * Checks every id against a vocabulary in one pass before any work starts, so an id out of
     * range is named with its place, not found hours in.
     *
     * @param whose whose vocabulary, for the message ("the teacher's")
     * @throws IOException naming the file, the token's index and its id (uint32 ids as unsigned)
     */
    public void requireBelow(int vocab, String whose) throws IOException {
        for (long i = 0; i < count; i++) {
            long id = Integer.toUnsignedLong(get(i));
            if (id >= vocab) {
                throw new IOException(path + ": token " + i + " (byte offset " + (HEADER_BYTES + i * width) + ") is id " + id
                        + ", outside " + whose + " vocabulary of " + vocab);
            }
        }
    }

    /** Copies tokens [from, from + n) into dst[0, n) as int32. */
    public void read(long from, int n, int[] dst) {
        if (from < 0 || from + n > count) {
            throw new IndexOutOfBoundsException(path + ": tokens [" + from + ", " + (from + n) + ") of " + count);
        }
        for (int i = 0; i < n; i++) dst[i] = get(from + i);
    }

    @Override
    public void close() {
        arena.close();
    }
}
