package dev.distillery.trainer.data;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.DigestInputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.io.SafetensorsFile;

/**
 * A teacher shard directory, validated before use: the manifest, every shard's checksum (when
 * asked), and every tensor's presence, dtype and exact shape against the manifest. Shards stay
 * memory-mapped; {@link #sequence(int)} hands out views, never copies.
 */
public final class TeacherShards implements AutoCloseable {

    /** One sequence: its int32 input ids (seqLen) and the teacher's targets for its seqLen positions. */
    public record Sequence(MemorySegment inputIds, TeacherTargets targets) {
    }

    private final TeacherManifest manifest;
    private final TeacherLayout layout;
    private final List<TeacherShardFormat.Tensor> tensors;
    private final List<SafetensorsFile> files;
    private final int[] firstSequence;
    private final int total;

    private TeacherShards(TeacherManifest manifest, List<SafetensorsFile> files) {
        this.manifest = manifest;
        this.layout = TeacherShardFormat.layout(manifest);
        this.tensors = TeacherShardFormat.tensors(layout.kind());
        this.files = files;
        this.firstSequence = new int[files.size() + 1];
        for (int i = 0; i < files.size(); i++) firstSequence[i + 1] = firstSequence[i] + manifest.shards().get(i).sequences();
        this.total = firstSequence[files.size()];
    }

    /** Opens {@code dir/manifest.json} and every shard; with {@code verifyChecksums}, streams each file through SHA-256. */
    public static TeacherShards open(Path dir, boolean verifyChecksums) throws IOException {
        TeacherManifest m = TeacherManifest.read(dir.resolve("manifest.json"));
        List<SafetensorsFile> opened = new ArrayList<>();
        try {
            for (TeacherManifest.Shard shard : m.shards()) {
                Path file = dir.resolve(shard.file());
                if (!Files.isRegularFile(file)) throw new IOException(file + ": listed in the manifest but missing");
                if (verifyChecksums) verify(file, shard.sha256());
                SafetensorsFile st = SafetensorsFile.open(file);
                opened.add(st);
                validate(st, m, shard);
            }
        } catch (IOException | RuntimeException e) {
            for (SafetensorsFile f : opened) f.close();
            throw e;
        }
        return new TeacherShards(m, List.copyOf(opened));
    }

    private static void verify(Path file, String expected) throws IOException {
        if (expected == null || expected.isBlank()) return;   // optional in the format: nothing to check against
        String actual = sha256(file);
        if (!actual.equalsIgnoreCase(expected)) {
            throw new IOException(file + ": sha256 is " + actual + ", the manifest says " + expected);
        }
    }

    /** The file's SHA-256 as lower-case hex, streamed. */
    public static String sha256(Path file) throws IOException {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JDK", e);
        }
        try (InputStream in = new DigestInputStream(Files.newInputStream(file), md)) {
            in.transferTo(java.io.OutputStream.nullOutputStream());
        }
        return HexFormat.of().formatHex(md.digest());
    }

    private static void validate(SafetensorsFile st, TeacherManifest m, TeacherManifest.Shard shard) throws IOException {
        int s = shard.sequences(), t = m.seqLen();
        expect(st, "input_ids", DType.I32, s, t);
        TeacherLayout layout = TeacherShardFormat.layout(m);
        List<TeacherShardFormat.Tensor> tensors = TeacherShardFormat.tensors(layout.kind());
        for (int i = 0; i < tensors.size(); i++) {
            expect(st, tensors.get(i).name(), layout.bufferTypes().get(i), TeacherShardFormat.shape(layout, i, s, t));
        }
    }

    private static void expect(SafetensorsFile st, String name, DType dtype, int... shape) throws IOException {
        if (!st.contains(name)) throw new IOException(st.path() + ": missing tensor '" + name + "' (has " + st.entries().keySet() + ")");
        SafetensorsFile.Entry e = st.entry(name);
        if (e.dtype() != dtype || !Arrays.equals(e.shape(), shape)) {
            throw new IOException(st.path() + ": tensor '" + name + "' at buffer offset " + e.begin() + " is " + e.dtype() + " "
                    + Arrays.toString(e.shape()) + ", the manifest implies " + dtype + " " + Arrays.toString(shape));
        }
    }

    public TeacherManifest manifest() {
        return manifest;
    }

    /** The targets' kind, types and sizes, parsed from the manifest once. */
    public TeacherLayout layout() {
        return layout;
    }

    /** Sequences over all shards. */
    public int sequences() {
        return total;
    }

    /** Views of sequence {@code index} (0 ≤ index < sequences()). */
    public Sequence sequence(int index) {
        if (index < 0 || index >= total) throw new IndexOutOfBoundsException("sequence " + index + " of " + total);
        int shard = shardOf(index);
        int local = index - firstSequence[shard];
        SafetensorsFile st = files.get(shard);
        int t = manifest.seqLen();
        MemorySegment ids = st.bytes("input_ids").asSlice(4L * local * t, 4L * t);
        List<MemorySegment> buffers = new ArrayList<>(tensors.size());
        for (int i = 0; i < tensors.size(); i++) buffers.add(st.bytes(tensors.get(i).name()).asSlice(local * t * layout.bytesPerRow(i)));
        TeacherTargets targets = layout.over(buffers);
        return new Sequence(ids, targets);
    }

    /** Where sequence {@code index}, position {@code position} is, in the user's terms: the shard file, the sequence in it, the position. */
    public String where(int index, int position) {
        int shard = shardOf(index);
        return files.get(shard).path() + ", sequence " + (index - firstSequence[shard]) + ", position " + position;
    }

    /**
     * The error for a read of sequence {@code index} that faulted (the JVM's "fault in an unsafe memory
     * access operation"): its file shrank or vanished after it was opened and mapped.
     */
    public UncheckedIOException unreadable(int index, Throwable fault) {
        int shard = shardOf(index);
        SafetensorsFile f = files.get(shard);
        String now;
        try {
            now = "is now " + Files.size(f.path()) + " bytes";
        } catch (IOException gone) {
            now = "is gone";
        }
        String message = f.path() + ": sequence " + (index - firstSequence[shard]) + " could not be read: the file " + now + ", "
                + f.fileSize() + " when it was opened (it was truncated or replaced while this run read it)";
        return new UncheckedIOException(message, new IOException(message, fault));
    }

    /** The bytes of the first {@code sequences} sequences' ids and targets. */
    public long bytesOfSequences(int sequences) {
        return (4 + layout.bytesPerRow()) * manifest.seqLen() * sequences;
    }

    private int shardOf(int index) {
        int shard = Arrays.binarySearch(firstSequence, index);
        shard = shard >= 0 ? shard : -shard - 2;
        while (firstSequence[shard + 1] <= index) shard++;
        return shard;
    }

    @Override
    public void close() {
        for (SafetensorsFile f : files) f.close();
    }
}
