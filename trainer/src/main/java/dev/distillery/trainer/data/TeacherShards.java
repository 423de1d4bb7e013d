package dev.distillery.trainer.data;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
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
public final class TeacherShards implements Sequences, AutoCloseable {

    /** One sequence: its int32 input ids (seqLen) and the teacher's targets for its seqLen positions. */
    public record Sequence(MemorySegment inputIds, TeacherTargets targets) {
    }

    private final TeacherManifest manifest;
    private final TeacherLayout layout;
    private final List<TeacherShardFormat.Tensor> tensors;
    private final List<SafetensorsFile> files;
    private final List<MemorySegment> inputIds;   // per shard, int32: mapped, or narrowed from int64 on open
    private final Arena narrowed;
    private final int[] firstSequence;
    private final int total;

    private TeacherShards(TeacherManifest manifest, List<SafetensorsFile> files, List<MemorySegment> inputIds, Arena narrowed) {
        this.manifest = manifest;
        this.inputIds = inputIds;
        this.narrowed = narrowed;
        this.layout = TeacherShardFormat.layout(manifest);
        this.tensors = TeacherShardFormat.tensors(layout.kind());
        this.files = files;
        this.firstSequence = new int[files.size() + 1];
        for (int i = 0; i < files.size(); i++) firstSequence[i + 1] = firstSequence[i] + manifest.shards().get(i).sequences();
        this.total = firstSequence[files.size()];
    }

    /** Opens {@code dir/manifest.json} and every shard; with {@code verifyChecksums}, streams each file through SHA-256. */
    public static TeacherShards open(Path dir, boolean verifyChecksums) throws IOException {
        if (!Files.isRegularFile(dir.resolve("manifest.json"))) {
            throw new IOException(dir + (!Files.exists(dir) ? ": no such teacher shard folder"
                    : Files.isDirectory(dir) ? ": no manifest.json, so not a teacher shard folder (teacher dump-logits writes one; docs/FORMATS.md)"
                    : ": a file; teacher shards are a folder with manifest.json"));
        }
        TeacherManifest m = TeacherManifest.read(dir.resolve("manifest.json"));
        List<SafetensorsFile> opened = new ArrayList<>();
        List<MemorySegment> ids = new ArrayList<>();
        Arena narrowed = Arena.ofShared();
        try {
            for (TeacherManifest.Shard shard : m.shards()) {
                Path file = dir.resolve(shard.file());
                if (!Files.isRegularFile(file)) throw new IOException(file + ": listed in the manifest but missing");
                if (verifyChecksums) verify(file, shard.sha256());
                SafetensorsFile st = SafetensorsFile.open(file);
                opened.add(st);
                validate(st, m, shard);
                ids.add(inputIds(st, narrowed));
            }
        } catch (IOException | RuntimeException e) {
            for (SafetensorsFile f : opened) f.close();
            narrowed.close();
            throw e;
        }
        return new TeacherShards(m, List.copyOf(opened), List.copyOf(ids), narrowed);
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
        MessageDigest md = sha256Digest();
        try (InputStream in = new DigestInputStream(Files.newInputStream(file), md)) {
            in.transferTo(java.io.OutputStream.nullOutputStream());
        }
        return HexFormat.of().formatHex(md.digest());
    }

    /** A fresh SHA-256, the manifest's hash of a shard file. */
    public static MessageDigest sha256Digest() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JDK", e);
        }
    }

    /**
     * A shard's input ids as int32: mapped when stored so, else narrowed from int64 (torch's
     * default for ids; 4 bytes a position, small beside the targets) with each id checked to fit.
     */
    private static MemorySegment inputIds(SafetensorsFile st, Arena arena) throws IOException {
        MemorySegment stored = st.bytes("input_ids");
        if (st.entry("input_ids").dtype() == DType.I32) return stored;
        long n = stored.byteSize() / 8;
        MemorySegment ids = arena.allocate(4 * n, 64);
        for (long i = 0; i < n; i++) {
            long id = stored.get(ValueLayout.JAVA_LONG_UNALIGNED, 8 * i);
            if (id < 0 || id > Integer.MAX_VALUE) {
                throw new IOException(st.path() + ": input_ids element " + i + " is " + id + ", not a token id");
            }
            ids.setAtIndex(ValueLayout.JAVA_INT, i, (int) id);
        }
        return ids;
    }

    private static void validate(SafetensorsFile st, TeacherManifest m, TeacherManifest.Shard shard) throws IOException {
        int s = shard.sequences(), t = m.seqLen();
        if (st.contains("input_ids") && st.entry("input_ids").dtype() == DType.I64) {
            expect(st, "input_ids", DType.I64, s, t);
        } else {
            expect(st, "input_ids", DType.I32, s, t);
        }
        TeacherLayout layout = TeacherShardFormat.layout(m);
        List<TeacherShardFormat.Tensor> tensors = TeacherShardFormat.tensors(layout.kind());
        for (int i = 0; i < tensors.size(); i++) {
            expect(st, tensors.get(i).name(), layout.bufferTypes().get(i), TeacherShardFormat.shape(layout, i, s, t));
        }
        for (int l : m.hiddenLayerArray()) expect(st, TeacherShardFormat.hiddenTensor(l), TeacherShardFormat.HIDDEN_TYPE, s, t, m.hiddenSize());
    }

    private static void expect(SafetensorsFile st, String name, DType dtype, int... shape) throws IOException {
        if (!st.contains(name)) throw new IOException(st.path() + ": missing tensor '" + name + "' (has " + st.entries().keySet() + ")");
        SafetensorsFile.Entry e = st.entry(name);
        if (e.dtype() != dtype && Arrays.equals(e.shape(), shape)) {
            // what Python writers produce by default, with the fix
            String fix = e.dtype() == DType.I64 ? "torch's default for indices; write it as int32 (.int() in torch, .astype(np.int32) "
                    + "in numpy): the targets are read at every step, and int64 ids would double those bytes"
                    : name.equals("logsumexp") ? "it must be F32 (.float()): a bf16 logsumexp is off by up to 0.4% of its value, "
                    + "which scales every top-k probability by up to e^(0.004 |logsumexp|)"
                    : e.dtype() == DType.F64 ? "write it as " + dtype + " (the manifest's 'dtype'), not float64"
                    : "the manifest's 'dtype' implies " + dtype;
            throw new IOException(st.path() + ": tensor '" + name + "' is " + e.dtype() + "; " + fix);
        }
        if (e.dtype() != dtype || !Arrays.equals(e.shape(), shape)) {
            throw new IOException(st.path() + ": tensor '" + name + "' at buffer offset " + e.begin() + " is " + e.dtype() + " "
                    + Arrays.toString(e.shape()) + ", the manifest implies " + dtype + " " + Arrays.toString(shape));
        }
    }

    public TeacherManifest manifest() {
        return manifest;
    }

    /** The targets' kind, types and sizes, parsed from the manifest once. */
    @Override
    public TeacherLayout layout() {
        return layout;
    }

    /** Sequences over all shards. */
    @Override
    public int sequences() {
        return total;
    }

    @Override
    public int seqLen() {
        return manifest.seqLen();
    }

    @Override
    public void copyInputIds(int index, MemorySegment dst, long offset) {
        MemorySegment.copy(inputIds(index), 0, dst, offset, 4L * manifest.seqLen());
    }

    @Override
    public TeacherTargets targets(int index) {
        if (index < 0 || index >= total) throw new IndexOutOfBoundsException("sequence " + index + " of " + total);
        int shard = shardOf(index), local = index - firstSequence[shard], t = manifest.seqLen();
        SafetensorsFile st = files.get(shard);
        List<MemorySegment> buffers = new ArrayList<>(tensors.size());
        for (int i = 0; i < tensors.size(); i++) buffers.add(st.bytes(tensors.get(i).name()).asSlice(local * t * layout.bytesPerRow(i)));
        return layout.over(buffers);
    }

    @Override
    public int[] hiddenLayers() {
        return manifest.hiddenLayerArray();
    }

    @Override
    public int hiddenSize() {
        return manifest.hiddenSize() == null ? 0 : manifest.hiddenSize();
    }

    @Override
    public MemorySegment hiddenState(int index, int layer) {
        if (index < 0 || index >= total) throw new IndexOutOfBoundsException("sequence " + index + " of " + total);
        int shard = shardOf(index), local = index - firstSequence[shard];
        long bytes = (long) manifest.seqLen() * hiddenSize() * TeacherShardFormat.HIDDEN_TYPE.bytes();
        return files.get(shard).bytes(TeacherShardFormat.hiddenTensor(layer)).asSlice(local * bytes, bytes);
    }

    /** Views of sequence {@code index} (0 ≤ index < sequences()). */
    public Sequence sequence(int index) {
        return new Sequence(inputIds(index), targets(index));
    }

    /** Sequence {@code index}'s seqLen int32 ids, a view of its shard. */
    private MemorySegment inputIds(int index) {
        if (index < 0 || index >= total) throw new IndexOutOfBoundsException("sequence " + index + " of " + total);
        int shard = shardOf(index), t = manifest.seqLen();
        return inputIds.get(shard).asSlice(4L * (index - firstSequence[shard]) * t, 4L * t);
    }

    /** Where sequence {@code index}, position {@code position} is, in the user's terms: the shard file, the sequence in it, the position. */
    @Override
    public String where(int index, int position) {
        int shard = shardOf(index);
        return files.get(shard).path() + ", sequence " + (index - firstSequence[shard]) + ", position " + position;
    }

    /**
     * The error for a read of sequence {@code index} that faulted (the JVM's "fault in an unsafe memory
     * access operation"): its file shrank or vanished after it was opened and mapped.
     */
    @Override
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
        narrowed.close();
    }
}
