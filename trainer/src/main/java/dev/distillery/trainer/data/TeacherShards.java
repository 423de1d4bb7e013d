package dev.distillery.trainer.data;

import java.io.IOException;
import java.io.InputStream;
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

import dev.distillery.kernels.distill.LogitType;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.DType;
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
    private final List<SafetensorsFile> files;
    private final int[] firstSequence;
    private final int total;

    private TeacherShards(TeacherManifest manifest, List<SafetensorsFile> files) {
        this.manifest = manifest;
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
        if (expected == null || expected.isBlank()) throw new IOException(file + ": the manifest gives no sha256 to verify against");
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
        int s = shard.sequences(), t = m.seqLen(), v = m.vocabSize(), k = m.k();
        expect(st, "input_ids", DType.I32, s, t);
        DType logitType = switch (m.dtype() == null ? "f32" : m.dtype()) {
            case "f16" -> DType.F16;
            case "bf16" -> DType.BF16;
            default -> DType.F32;
        };
        switch (m.targets()) {
            case "dense" -> expect(st, "logits", logitType, s, t, v);
            case "topk" -> {
                expect(st, "topk_ids", DType.I32, s, t, k);
                expect(st, "topk_logits", logitType, s, t, k);
                expect(st, "logsumexp", DType.F32, s, t);
            }
            default -> {
                expect(st, "sampled_ids", DType.I32, s, t, k);
                expect(st, "sampled_weights", DType.F32, s, t, k);
            }
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

    /** Sequences over all shards. */
    public int sequences() {
        return total;
    }

    /** Views of sequence {@code index} (0 ≤ index < sequences()). */
    public Sequence sequence(int index) {
        if (index < 0 || index >= total) throw new IndexOutOfBoundsException("sequence " + index + " of " + total);
        int shard = Arrays.binarySearch(firstSequence, index);
        shard = shard >= 0 ? shard : -shard - 2;
        while (firstSequence[shard + 1] <= index) shard++;
        int local = index - firstSequence[shard];
        SafetensorsFile st = files.get(shard);
        int t = manifest.seqLen(), v = manifest.vocabSize(), k = manifest.k();
        MemorySegment ids = st.bytes("input_ids").asSlice(4L * local * t, 4L * t);
        LogitType type = switch (manifest.dtype() == null ? "f32" : manifest.dtype()) {
            case "f16" -> LogitType.F16;
            case "bf16" -> LogitType.BF16;
            default -> LogitType.F32;
        };
        float temperature = (float) manifest.temperature();
        TeacherTargets targets = switch (manifest.targets()) {
            case "dense" -> new TeacherTargets.Dense(st.bytes("logits").asSlice((long) local * t * v * type.bytes()), type, v);
            case "topk" -> new TeacherTargets.TopK(st.bytes("topk_ids").asSlice(4L * local * t * k),
                    st.bytes("topk_logits").asSlice((long) local * t * k * type.bytes()), type,
                    st.bytes("logsumexp").asSlice(4L * local * t), k, v, temperature);
            default -> new TeacherTargets.Sampled(st.bytes("sampled_ids").asSlice(4L * local * t * k),
                    st.bytes("sampled_weights").asSlice(4L * local * t * k), k, v, temperature);
        };
        return new Sequence(ids, targets);
    }

    @Override
    public void close() {
        for (SafetensorsFile f : files) f.close();
    }
}
