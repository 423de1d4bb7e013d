package dev.distillery.trainer.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * One writer per folder: an OS file lock on {@code <folder>/.distillery.lock}, held while a command
 * writes there (a run folder, a shard directory being dumped, the demo's work folder). A second
 * writer, in this process or another, is refused with a line naming the holder's PID. The OS
 * releases the lock when the process ends, however it ends; the file itself stays, harmless.
 */
public final class FolderLock implements AutoCloseable {

    /** The lock file's name; commands that check a folder for other files ignore it. */
    public static final String FILE = ".distillery.lock";

    private final FileChannel channel;
    private final FileLock lock;

    private FolderLock(FileChannel channel, FileLock lock) {
        this.channel = channel;
        this.lock = lock;
    }

    /**
     * Locks {@code folder} (created if missing) for this process.
     *
     * @param option what the user names the folder by ({@code --out}, {@code 'out'}), for the refusal
     * @throws IOException when another writer holds it, naming its PID
     */
    public static FolderLock acquire(Path folder, String option) throws IOException {
        Files.createDirectories(folder);
        FileChannel channel = FileChannel.open(folder.resolve(FILE), StandardOpenOption.CREATE, StandardOpenOption.READ,
                StandardOpenOption.WRITE);
        FileLock lock;
        try {
            lock = channel.tryLock();
        } catch (OverlappingFileLockException e) {
            lock = null;   // held by this process, through another channel
        }
        if (lock == null) {
            String holder = holder(channel);
            channel.close();
            throw new IOException(folder + " is being written by another Distillery process (" + holder
                    + "); wait for it to end, or choose another " + option);
        }
        channel.truncate(0);
        channel.write(ByteBuffer.wrap(("pid " + ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.US_ASCII)), 0);
        channel.force(false);
        return new FolderLock(channel, lock);
    }

    /** What the holder wrote into the file ("pid 1234"), or "PID unknown" before it has written. */
    private static String holder(FileChannel channel) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(64);
        channel.read(b, 0);
        String s = new String(b.array(), 0, b.position(), StandardCharsets.US_ASCII).strip();
        return s.startsWith("pid ") ? "PID " + s.substring(4) : "PID unknown";
    }

    /** Whether {@code folder} holds anything but a lock file. */
    public static boolean holdsFiles(Path folder) throws IOException {
        if (!Files.isDirectory(folder)) return false;
        try (var entries = Files.list(folder)) {
            return entries.anyMatch(p -> !p.getFileName().toString().equals(FILE));
        }
    }

    @Override
    public void close() throws IOException {
        try {
            lock.release();
        } finally {
            channel.close();
        }
    }
}
