package dev.distillery.trainer.data;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

import dev.distillery.kernels.DType;
import dev.distillery.runtime.io.SafetensorsWriter;

/**
 * Small teacher shard directories written as a user's Python script would, right or with one
 * mistake: V = 50, T = 6, k = 4, two shards of S = 3 sequences, temperature 2.
 */
public final class ShardFixtures {

    public static final int V = 50, T = 6, K = 4, S = 3;
    public static final double TEMPERATURE = 2.0;

    private ShardFixtures() {
    }

    /**
     * A valid shard directory of {@code kind} (two shards of S sequences), the second (or every)
     * shard changed by {@code mutate} (tensor name to its buffer) before it is written.
     */
    public static Path write(Path dir, String kind, DType logitType, Consumer<Map<String, MemorySegment>> mutate) throws IOException {
        return write(dir, kind, logitType, mutate, false, null);
    }

    /** As above; with {@code everyShard} every shard is changed, and the manifest records {@code tokenizerSha256}. */
    public static Path write(Path dir, String kind, DType logitType, Consumer<Map<String, MemorySegment>> mutate, boolean everyShard,
                             String tokenizerSha256) throws IOException {
        Path d = dir.resolve(kind + "-" + System.nanoTime());
        try (Arena arena = Arena.ofConfined()) {
            List<TeacherManifest.Shard> listed = new java.util.ArrayList<>();
            for (int shard = 0; shard < 2; shard++) {
                Map<String, MemorySegment> t = new LinkedHashMap<>();
                Map<String, int[]> shapes = new LinkedHashMap<>();
                Map<String, DType> types = new LinkedHashMap<>();
                MemorySegment ids = arena.allocate(4L * S * T);
                for (int i = 0; i < S * T; i++) ids.setAtIndex(ValueLayout.JAVA_INT, i, (7 * i + shard) % V);
                put(t, shapes, types, "input_ids", ids, DType.I32, S, T);
                switch (kind) {
                    case "dense" -> {
                        MemorySegment lg = arena.allocate(logitType.bytes() * S * T * V);
                        for (int i = 0; i < S * T * V; i++) logitType.write(lg, i, (float) Math.sin(i));
                        put(t, shapes, types, "logits", lg, logitType, S, T, V);
                    }
                    case "topk" -> {
                        // Logits 10, 9, 8, 7 at T = 2 with the full-vocabulary logsumexp of those four plus 46 logits of 0.
                        MemorySegment tid = arena.allocate(4L * S * T * K), tl = arena.allocate(logitType.bytes() * S * T * K);
                        MemorySegment lse = arena.allocate(4L * S * T);
                        double sum = 46;
                        for (int j = 0; j < K; j++) sum += Math.exp((10 - j) / TEMPERATURE);
                        for (int r = 0; r < S * T; r++) {
                            for (int j = 0; j < K; j++) {
                                tid.setAtIndex(ValueLayout.JAVA_INT, (long) r * K + j, (r + 3 * j) % V);
                                logitType.write(tl, (long) r * K + j, 10 - j);
                            }
                            lse.setAtIndex(ValueLayout.JAVA_FLOAT, r, (float) Math.log(sum));
                        }
                        put(t, shapes, types, "topk_ids", tid, DType.I32, S, T, K);
                        put(t, shapes, types, "topk_logits", tl, logitType, S, T, K);
                        put(t, shapes, types, "logsumexp", lse, DType.F32, S, T);
                    }
                    default -> {
                        MemorySegment sid = arena.allocate(4L * S * T * K), w = arena.allocate(4L * S * T * K);
                        for (int i = 0; i < S * T * K; i++) {
                            sid.setAtIndex(ValueLayout.JAVA_INT, i, (i * 5) % V);
                            w.setAtIndex(ValueLayout.JAVA_FLOAT, i, 1f / K);
                        }
                        put(t, shapes, types, "sampled_ids", sid, DType.I32, S, T, K);
                        put(t, shapes, types, "sampled_weights", w, DType.F32, S, T, K);
                    }
                }
                if (shard == 1 || everyShard) mutate.accept(t);
                List<SafetensorsWriter.Item> items = new java.util.ArrayList<>();
                for (String name : t.keySet()) items.add(new SafetensorsWriter.Item(name, types.get(name), shapes.get(name), t.get(name)));
                String file = "shard-" + shard + ".safetensors";
                SafetensorsWriter.write(d.resolve(file), items, Map.of());
                listed.add(new TeacherManifest.Shard(file, S, TeacherShards.sha256(d.resolve(file))));
            }
            new TeacherManifest(1, V, T, kind, kind.equals("dense") ? 0 : K, logitType.name().toLowerCase(java.util.Locale.ROOT),
                    TEMPERATURE, "test", tokenizerSha256, "test", listed).write(d.resolve("manifest.json"));
        }
        return d;
    }

    private static void put(Map<String, MemorySegment> t, Map<String, int[]> shapes, Map<String, DType> types, String name,
                            MemorySegment m, DType type, int... shape) {
        t.put(name, m);
        shapes.put(name, shape);
        types.put(name, type);
    }

}
