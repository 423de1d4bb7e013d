package dev.distillery.trainer.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.cpu.CpuKernels;
import dev.distillery.kernels.distill.DistillOptions;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.io.SafetensorsWriter;

class TeacherShardsTest {

    @TempDir
    Path dir;

    private static final int V = 11, T = 5, K = 3;

    /** Writes one shard of the given kind with s sequences; value(seq, pos, j) fills the logits. */
    private Path shard(Arena arena, String name, String targets, int s, int offset) throws IOException {
        MemorySegment ids = arena.allocate(4L * s * T);
        for (int i = 0; i < s * T; i++) ids.setAtIndex(ValueLayout.JAVA_INT, i, (offset + i) % V);
        List<SafetensorsWriter.Item> items = new ArrayList<>();
        items.add(new SafetensorsWriter.Item("input_ids", DType.I32, new int[]{s, T}, ids));
        switch (targets) {
            case "dense" -> {
                MemorySegment lg = arena.allocate(2L * s * T * V);
                for (int i = 0; i < s * T * V; i++) DType.BF16.write(lg, i, (offset * 100 + i) % 7 - 3);
                items.add(new SafetensorsWriter.Item("logits", DType.BF16, new int[]{s, T, V}, lg));
            }
            case "topk" -> {
                MemorySegment tid = arena.allocate(4L * s * T * K), tl = arena.allocate(2L * s * T * K), lse = arena.allocate(4L * s * T);
                for (int i = 0; i < s * T * K; i++) {
                    tid.setAtIndex(ValueLayout.JAVA_INT, i, i % K);
                    DType.BF16.write(tl, i, 2 - i % K);
                }
                for (int i = 0; i < s * T; i++) lse.setAtIndex(ValueLayout.JAVA_FLOAT, i, 3f);
                items.add(new SafetensorsWriter.Item("topk_ids", DType.I32, new int[]{s, T, K}, tid));
                items.add(new SafetensorsWriter.Item("topk_logits", DType.BF16, new int[]{s, T, K}, tl));
                items.add(new SafetensorsWriter.Item("logsumexp", DType.F32, new int[]{s, T}, lse));
            }
            default -> {
                MemorySegment sid = arena.allocate(4L * s * T * K), w = arena.allocate(4L * s * T * K);
                for (int i = 0; i < s * T * K; i++) {
                    sid.setAtIndex(ValueLayout.JAVA_INT, i, (i * 5) % V);
                    w.setAtIndex(ValueLayout.JAVA_FLOAT, i, 1f / K);
                }
                items.add(new SafetensorsWriter.Item("sampled_ids", DType.I32, new int[]{s, T, K}, sid));
                items.add(new SafetensorsWriter.Item("sampled_weights", DType.F32, new int[]{s, T, K}, w));
            }
        }
        Path p = dir.resolve(name);
        SafetensorsWriter.write(p, items, Map.of("teacher", "test"));
        return p;
    }

    private static String sha256(Path p) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(p)));
    }

    private void manifest(String targets, List<TeacherManifest.Shard> shards) throws IOException {
        new TeacherManifest(1, V, T, targets, targets.equals("dense") ? 0 : K, "bf16", 2.0, "test-bpe", null, "tiny", shards)
                .write(dir.resolve("manifest.json"));
    }

    @Test
    void everyTargetKindOpensValidatesAndFeedsTheLossKernel() throws Exception {
        for (String targets : new String[]{"dense", "topk", "sampled"}) {
            try (Arena arena = Arena.ofShared(); CpuKernels kernels = new CpuKernels(1, "vector")) {
                Path a = shard(arena, targets + "-0.safetensors", targets, 2, 0);
                Path b = shard(arena, targets + "-1.safetensors", targets, 3, 1000);
                manifest(targets, List.of(new TeacherManifest.Shard(a.getFileName().toString(), 2, sha256(a)),
                        new TeacherManifest.Shard(b.getFileName().toString(), 3, sha256(b))));
                try (TeacherShards shards = TeacherShards.open(dir, true)) {
                    assertEquals(5, shards.sequences());
                    TeacherShards.Sequence third = shards.sequence(2); // first sequence of the second shard
                    assertEquals(1000 % V, third.inputIds().getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, 0));
                    MemorySegment student = arena.allocate(4L * T * V);
                    var sums = kernels.distillLoss(student, student, third.targets(), null, null, null, T, V,
                            DistillOptions.of(2f, 0f), 1f / T);
                    assertEquals(T, sums.rows());
                    assertTrue(Double.isFinite(sums.total()), targets + ": " + sums);
                    if (third.targets() instanceof TeacherTargets.Dense d) {
                        assertEquals(DType.BF16.read(d.logits(), 0), (1000 * 100) % 7 - 3, 0f);
                    }
                }
            }
        }
    }

    @Test
    void badDirectoriesAreRejectedNamingFileKeyAndTensor() throws Exception {
        try (Arena arena = Arena.ofShared()) {
            Path a = shard(arena, "s.safetensors", "dense", 2, 0);
            // checksum mismatch
            manifest("dense", List.of(new TeacherManifest.Shard("s.safetensors", 2, "00".repeat(32))));
            var e = assertThrows(IOException.class, () -> TeacherShards.open(dir, true).close());
            assertTrue(e.getMessage().contains("s.safetensors") && e.getMessage().contains("sha256"), e.getMessage());
            // sequence count that does not match the tensors
            manifest("dense", List.of(new TeacherManifest.Shard("s.safetensors", 3, sha256(a))));
            e = assertThrows(IOException.class, () -> TeacherShards.open(dir, false).close());
            assertTrue(e.getMessage().contains("'input_ids'") && e.getMessage().contains("[3, 5]"), e.getMessage());
            // targets the shard does not hold
            manifest("topk", List.of(new TeacherManifest.Shard("s.safetensors", 2, sha256(a))));
            e = assertThrows(IOException.class, () -> TeacherShards.open(dir, false).close());
            assertTrue(e.getMessage().contains("missing tensor 'topk_ids'"), e.getMessage());
            // a missing file
            manifest("dense", List.of(new TeacherManifest.Shard("nope.safetensors", 2, sha256(a))));
            e = assertThrows(IOException.class, () -> TeacherShards.open(dir, false).close());
            assertTrue(e.getMessage().contains("nope.safetensors") && e.getMessage().contains("missing"), e.getMessage());
            // a truncated shard
            byte[] bytes = Files.readAllBytes(a);
            Files.write(dir.resolve("cut.safetensors"), java.util.Arrays.copyOf(bytes, bytes.length - 7));
            manifest("dense", List.of(new TeacherManifest.Shard("cut.safetensors", 2, "")));
            e = assertThrows(IOException.class, () -> TeacherShards.open(dir, false).close());
            assertTrue(e.getMessage().contains("cut.safetensors"), e.getMessage());
        }
    }

    @Test
    void manifestErrorsNameTheKey() throws IOException {
        Path m = dir.resolve("manifest.json");
        Files.writeString(m, "{\"format_version\": 1, \"vocab_size\": 5, \"seq_len\": 4, \"targets\": \"dense\", \"k\": 0, "
                + "\"dtype\": \"bf16\", \"temperature\": 1.0, \"tokenizer\": \"t\", \"teacher\": \"x\", \"shards\": [], \"colour\": 1}");
        var e = assertThrows(IOException.class, () -> TeacherManifest.read(m));
        assertTrue(e.getMessage().contains("unknown key 'colour'"), e.getMessage());
        Files.writeString(m, "{\"format_version\": 1, \"vocab_size\": 5, \"seq_len\": 4, \"targets\": \"logits\", \"k\": 0, "
                + "\"dtype\": \"bf16\", \"temperature\": 1.0, \"tokenizer\": \"t\", \"teacher\": \"x\", "
                + "\"shards\": [{\"file\": \"a\", \"sequences\": 1, \"sha256\": \"\"}]}");
        e = assertThrows(IOException.class, () -> TeacherManifest.read(m));
        assertTrue(e.getMessage().contains("'targets'"), e.getMessage());
        Files.writeString(m, "{\"format_version\": 1, \"vocab_size\": 5, \"seq_len\": 4, \"targets\": \"topk\", \"k\": 9, "
                + "\"dtype\": \"bf16\", \"temperature\": 1.0, \"tokenizer\": \"t\", \"teacher\": \"x\", "
                + "\"shards\": [{\"file\": \"a\", \"sequences\": 1, \"sha256\": \"\"}]}");
        e = assertThrows(IOException.class, () -> TeacherManifest.read(m));
        assertTrue(e.getMessage().contains("'k'"), e.getMessage());
        Files.writeString(m, "{ not json");
        e = assertThrows(IOException.class, () -> TeacherManifest.read(m));
        assertTrue(e.getMessage().contains("manifest.json"), e.getMessage());
    }

    /** Top-k shards of 4 and 3 sequences with their manifest. */
    private void sevenTopKSequencesInTwoShards(Arena arena) throws Exception {
        Path a = shard(arena, "t-0.safetensors", "topk", 4, 0);
        Path b = shard(arena, "t-1.safetensors", "topk", 3, 500);
        manifest("topk", List.of(new TeacherManifest.Shard("t-0.safetensors", 4, sha256(a)),
                new TeacherManifest.Shard("t-1.safetensors", 3, sha256(b))));
    }

    @Test
    void batchStreamVisitsEverySequenceOncePerEpochInASeededOrderAndResumesExactly() throws Exception {
        try (Arena arena = Arena.ofShared()) {
            sevenTopKSequencesInTwoShards(arena);
            try (TeacherShards shards = TeacherShards.open(dir, false)) {
                List<int[]> seen = new ArrayList<>();
                try (TeacherBatchStream stream = new TeacherBatchStream(shards, 2, 42, 2, 0, 0)) {
                    assertEquals(3, stream.batchesPerEpoch()); // 7 sequences, batches of 2, last one dropped
                    java.util.Set<Integer> epoch0 = new java.util.HashSet<>();
                    for (int i = 0; i < 6; i++) {
                        TeacherBatchStream.Batch batch = stream.next();
                        assertEquals(i / 3, batch.epoch());
                        assertEquals(i % 3, batch.index());
                        for (int j = 0; j < 2; j++) {
                            int seq = batch.sequences()[j];
                            if (i < 3) assertTrue(epoch0.add(seq), "sequence " + seq + " twice in epoch 0");
                            TeacherShards.Sequence view = shards.sequence(seq);
                            // the batch holds a contiguous copy of each sequence's ids and targets
                            assertEquals(-1, view.inputIds().mismatch(batch.inputIds().asSlice(4L * j * T, 4L * T)));
                            var tk = (TeacherTargets.TopK) batch.targets();
                            var src = (TeacherTargets.TopK) view.targets();
                            assertEquals(-1, src.ids().asSlice(0, 4L * T * K).mismatch(tk.ids().asSlice(4L * j * T * K, 4L * T * K)));
                        }
                        seen.add(batch.sequences().clone());
                        stream.release(batch);
                    }
                    assertEquals(6, epoch0.size());
                    assertTrue(stream.waitNanos() >= 0);
                }
                assertTrue(!java.util.Arrays.equals(seen.get(0), seen.get(3)) || !java.util.Arrays.equals(seen.get(1), seen.get(4)),
                        "epochs 0 and 1 should be shuffled differently");
                // resuming at (epoch 1, batch 1) yields what the uninterrupted stream yielded there
                try (TeacherBatchStream resumed = new TeacherBatchStream(shards, 2, 42, 1, 1, 1)) {
                    TeacherBatchStream.Batch batch = resumed.next();
                    assertEquals(1, batch.epoch());
                    assertEquals(1, batch.index());
                    assertTrue(java.util.Arrays.equals(seen.get(4), batch.sequences()));
                    resumed.release(batch);
                }
            }
        }
    }

    @Test
    void aOnePassStreamCoversEverySequenceOnceAndMarksThePaddingOfItsLastBatch() throws Exception {
        try (Arena arena = Arena.ofShared()) {
            sevenTopKSequencesInTwoShards(arena);
            try (TeacherShards shards = TeacherShards.open(dir, false);
                 TeacherBatchStream stream = TeacherBatchStream.onePass(shards, 3, 0L)) {
                assertEquals(3, stream.batchesPerEpoch()); // 7 sequences in batches of 3: 3 + 3 + 1
                java.util.Set<Integer> seen = new java.util.HashSet<>();
                int[] valid = new int[3];
                for (int i = 0; i < 3; i++) {
                    TeacherBatchStream.Batch batch = stream.next();
                    valid[i] = batch.valid();
                    for (int j = 0; j < batch.valid(); j++) assertTrue(seen.add(batch.sequences()[j]), "sequence twice");
                    if (i == 2) {   // the padding repeats the last real sequence
                        int last = batch.sequences()[0];
                        for (int j = 1; j < 3; j++) {
                            assertEquals(-1, shards.sequence(last).inputIds().mismatch(batch.inputIds().asSlice(4L * j * T, 4L * T)));
                        }
                    }
                    stream.release(batch);
                }
                assertArrayEquals(new int[]{3, 3, 1}, valid);
                assertEquals(7, seen.size());
            }
            // a batch larger than the shards is one padded batch
            try (TeacherShards shards = TeacherShards.open(dir, false);
                 TeacherBatchStream stream = TeacherBatchStream.onePass(shards, 10, 0L)) {
                assertEquals(1, stream.batchesPerEpoch());
                assertEquals(7, stream.next().valid());
            }
        }
    }

    @Test
    void topOneTiesGoToTheFirstListedTopKIdAndTheSmallerSampledId() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ids = arena.allocate(4L * 3), logits = arena.allocate(4L * 3), lse = arena.allocate(4);
            int[] listed = {9, 4, 7};
            float[] values = {2f, 2f, 1f};
            for (int i = 0; i < 3; i++) {
                ids.setAtIndex(ValueLayout.JAVA_INT, i, listed[i]);
                logits.setAtIndex(ValueLayout.JAVA_FLOAT, i, values[i]);
            }
            assertEquals(9, new TeacherTargets.TopK(ids, logits, DType.F32, lse, 3, 10, 1f).top1(0));   // the writer ranked 9 first
            MemorySegment weights = arena.allocate(4L * 3);
            for (int i = 0; i < 3; i++) weights.setAtIndex(ValueLayout.JAVA_FLOAT, i, values[i]);
            assertEquals(4, new TeacherTargets.Sampled(ids, weights, 3, 10, 1f).top1(0));
        }
    }

    /** A shard cut short after it was opened (a copy still running, a disk quota): the read names the file, not a JVM fault. */
    @Test
    void aShardTruncatedAfterItWasOpenedIsNamedWhenReached() throws Exception {
        Path d = ShardFixtures.write(dir, "dense", DType.F32, t -> { });
        Path second = d.resolve("shard-1.safetensors");
        try (TeacherShards shards = TeacherShards.open(d, true)) {
            long size = Files.size(second);
            try (var ch = java.nio.channels.FileChannel.open(second, java.nio.file.StandardOpenOption.WRITE)) {
                ch.truncate(0);
            }
            String check = assertThrows(IOException.class, () -> ShardValues.check(shards, 1, new java.io.PrintWriter(new java.io.StringWriter())))
                    .getMessage();
            assertTrue(check.startsWith(second + ": sequence 0 could not be read: the file is now 0 bytes, " + size
                    + " when it was opened"), check);
            try (TeacherBatchStream stream = TeacherBatchStream.onePass(shards, ShardFixtures.S, 0L)) {
                java.io.UncheckedIOException e = assertThrows(java.io.UncheckedIOException.class, () -> {
                    for (int i = 0; i < stream.batchesPerEpoch(); i++) stream.release(stream.next());
                });
                assertTrue(e.getMessage().startsWith(second + ": sequence "), e.getMessage());
            }
        }
    }
}
