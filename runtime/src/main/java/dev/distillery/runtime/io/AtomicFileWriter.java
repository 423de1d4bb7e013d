package dev.distillery.runtime.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Optional;
import java.util.concurrent.ThreadLocalRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Crash-safe file writes: the bytes go to a temporary name in the target's folder, are fsync'd,
 * and the file is renamed over the target (then the folder is fsync'd), so a reader sees either
 * the old file or the whole new one, never a torn one. Used for safetensors, token files and,
 * later, checkpoints.
 */
public final class AtomicFileWriter {

    /** Writes the file's content into an open channel. */
    @FunctionalInterface
    public interface Content {
        void writeTo(FileChannel channel) throws IOException;
    }

    /** A temporary name: "." + the target's name + "." + the writer's PID + "." + a random tag + ".tmp". */
    private static final Pattern TEMPORARY = Pattern.compile("\\.(.+)\\.\\d+\\.[0-9a-z]+\\.tmp");

    private AtomicFileWriter() {
    }

    /**
     * The name of the file that a write to {@code fileName}, a temporary name, was making (a
     * process halted mid-write leaves it behind), or empty when it is no temporary name.
     */
    public static Optional<String> targetOfTemporary(String fileName) {
        Matcher m = TEMPORARY.matcher(fileName);
        return m.matches() ? Optional.of(m.group(1)) : Optional.empty();
    }

    public static void write(Path target, Content content) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        // Not Files.createTempFile: it makes the file 0600 whatever the umask, and the user's
        // checkpoints and shards should get the permissions their other files get.
        Path tmp = dir.resolve("." + target.getFileName() + "." + ProcessHandle.current().pid() + "."
                + Long.toUnsignedString(ThreadLocalRandom.current().nextLong(), 36) + ".tmp");
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            content.writeTo(ch);
            ch.force(true);
        } catch (IOException | RuntimeException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
        }
        try (FileChannel dirChannel = FileChannel.open(dir, StandardOpenOption.READ)) {
            dirChannel.force(true);
        } catch (IOException ignoredOnPlatformsWithoutDirectoryFsync) {
            // Linux supports it; a filesystem that refuses it gives no stronger guarantee we could ask for.
        }
    }

    /** Writes all of buf. */
    public static void writeFully(FileChannel ch, ByteBuffer buf) throws IOException {
        while (buf.hasRemaining()) ch.write(buf);
    }
}
