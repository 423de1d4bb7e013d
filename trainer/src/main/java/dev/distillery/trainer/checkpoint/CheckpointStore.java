package dev.distillery.trainer.checkpoint;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import dev.distillery.runtime.io.AtomicFileWriter;

/**
 * A folder of checkpoints, {@code step-00000100/} each, that a crash can never tear. A checkpoint
 * is written into {@code .step-00000100.partial/} (every file fsync'd), then the folder is
 * renamed into place (one atomic rename) and the parent fsync'd, and only then does the
 * {@code latest} file (itself replaced atomically) name it. A {@code kill -9} at any moment leaves
 * either the previous checkpoints or the previous ones plus the new one; leftover partial folders
 * are removed when the store is opened.
 */
public final class CheckpointStore {

    /** The files every complete checkpoint holds. */
    public static final List<String> REQUIRED = List.of("model.safetensors", "config.json", "trainer_state.safetensors");

    private static final Pattern NAME = Pattern.compile("step-(\\d{8})");
    private static final String LATEST = "latest";

    /** One complete checkpoint. */
    public record Checkpoint(Path dir, int step) {
    }

    /** Writes a checkpoint's files into the (empty) folder it is given. */
    @FunctionalInterface
    public interface Contents {
        void writeInto(Path dir) throws IOException;
    }

    private final Path root;

    private CheckpointStore(Path root) {
        this.root = root;
    }

    /** Opens (creating) {@code root} and removes partial folders a crash left behind. */
    public static CheckpointStore open(Path root) throws IOException {
        Files.createDirectories(root);
        try (Stream<Path> s = Files.list(root)) {
            for (Path p : s.filter(p -> p.getFileName().toString().endsWith(".partial")).toList()) deleteTree(p);
        }
        return new CheckpointStore(root);
    }

    /** Opens {@code root} to read only: nothing is removed (safe while another process writes there). */
    public static CheckpointStore readOnly(Path root) {
        return new CheckpointStore(root);
    }

    public Path root() {
        return root;
    }

    public static String dirName(int step) {
        return String.format("step-%08d", step);
    }

    /** Writes the checkpoint of {@code step} crash-safely and points {@code latest} at it. */
    public Checkpoint save(int step, Contents contents) throws IOException {
        String name = dirName(step);
        Path partial = root.resolve("." + name + ".partial");
        deleteTree(partial);
        Files.createDirectories(partial);
        try {
            contents.writeInto(partial);
            for (String required : REQUIRED) {
                if (!Files.isRegularFile(partial.resolve(required))) throw new IllegalStateException("checkpoint writer left out " + required);
            }
            fsync(partial);
            Path target = root.resolve(name);
            if (Files.exists(target)) {
                Path old = root.resolve("." + name + ".replaced.partial");
                move(target, old);
                move(partial, target);
                deleteTree(old);
            } else {
                move(partial, target);
            }
            fsync(root);
            byte[] latest = (name + "\n").getBytes(StandardCharsets.UTF_8);
            AtomicFileWriter.write(root.resolve(LATEST), ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(latest)));
            return new Checkpoint(target, step);
        } catch (IOException | RuntimeException e) {
            deleteTree(partial);
            throw e;
        }
    }

    /** Every complete checkpoint, oldest first. */
    public List<Checkpoint> list() throws IOException {
        try (Stream<Path> s = Files.list(root)) {
            return s.map(p -> {
                        Matcher m = NAME.matcher(p.getFileName().toString());
                        return m.matches() && complete(p) ? new Checkpoint(p, Integer.parseInt(m.group(1))) : null;
                    })
                    .filter(c -> c != null)
                    .sorted(Comparator.comparingInt(Checkpoint::step))
                    .toList();
        }
    }

    /** The checkpoint {@code latest} names, or else the highest complete step folder. */
    public Optional<Checkpoint> latest() throws IOException {
        Path pointer = root.resolve(LATEST);
        if (Files.isRegularFile(pointer)) {
            String name = Files.readString(pointer, StandardCharsets.UTF_8).trim();
            Matcher m = NAME.matcher(name);
            if (m.matches() && complete(root.resolve(name))) return Optional.of(new Checkpoint(root.resolve(name), Integer.parseInt(m.group(1))));
        }
        List<Checkpoint> all = list();
        return all.isEmpty() ? Optional.empty() : Optional.of(all.getLast());
    }

    /** Deletes all but the newest {@code keep} checkpoints (never the one {@code latest} names). */
    public void prune(int keep) throws IOException {
        if (keep < 1) return;
        List<Checkpoint> all = list();
        Optional<Checkpoint> latest = latest();
        for (int i = 0; i < all.size() - keep; i++) {
            if (latest.isPresent() && latest.get().step() == all.get(i).step()) continue;
            deleteTree(all.get(i).dir());
        }
    }

    private static boolean complete(Path dir) {
        for (String f : REQUIRED) if (!Files.isRegularFile(dir.resolve(f))) return false;
        return true;
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(from, to);
        }
    }

    private static void fsync(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            for (Path f : s.filter(Files::isRegularFile).toList()) {
                try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                    ch.force(true);
                }
            }
        }
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException ignoredWhereDirectoriesCannotBeSynced) {
            // Linux syncs directories; elsewhere the rename is the strongest guarantee on offer.
        }
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) return;
        try (Stream<Path> s = Files.walk(p)) {
            for (Path q : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(q);
        }
    }
}
