package dev.distillery.trainer.teacher;

import java.io.IOException;
import java.io.PrintWriter;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.HostTopK;
import dev.distillery.kernels.Kernels;
import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.io.SafetensorsWriter;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.LanguageModelForward;
import dev.distillery.runtime.parallel.Collective;
import dev.distillery.trainer.data.TeacherManifest;
import dev.distillery.trainer.data.TeacherShardFormat;
import dev.distillery.trainer.data.TeacherShards;
import dev.distillery.trainer.data.TokenFile;
import dev.distillery.trainer.io.FolderLock;
import dev.distillery.trainer.loop.StopRequests;
import dev.distillery.trainer.loop.TrainingLoop;
import dev.distillery.trainer.report.Progress;

/**
 * {@code teacher dump-logits}: runs a teacher over a token file cut into non-overlapping
 * sequences and writes a teacher shard directory (docs/FORMATS.md): dense logits (f32/f16/bf16),
 * top-k (ids, logits, and the full-vocabulary logsumexp at the shard temperature) or sampled
 * targets (k ids drawn from softmax(t/T) with replacement, weight 1/k each: an unbiased estimate
 * of p). Shards are written crash-safe, the manifest (with every shard's SHA-256) last.
 */
public final class LogitDump {

    /** A shard's file name, as {@link #dump} writes it ("shard-%05d.safetensors"). */
    static final String SHARD_FILE = "shard-\\d+\\.safetensors";

    /**
     * @param seqLen            tokens per sequence (≤ the teacher's context)
     * @param sequencesPerShard sequences per shard file
     * @param k                 top-k size or samples per position (ignored for dense)
     * @param dtype             F32, F16 or BF16 for dense and top-k logits
     * @param temperature       the shard temperature (top-k logsumexp, sampling)
     * @param maxSequences      at most this many sequences (0 = all)
     * @param tokenizer         the {@code tokenizer.json} the token ids were made with, recorded by its SHA-256;
     *                          null = the teacher folder's own {@code tokenizer.json} when it has one
     * @param overwrite         replace the shards of a non-empty {@code out} (refused otherwise)
     * @param hiddenLayers      the teacher's hidden states to store beside the targets (bf16), numbered as
     *                          transformers' output_hidden_states; empty = none
     * @param resume            continue a dump that stopped in {@code out}: keep its whole shards, write the
     *                          rest (the options must be the stopped dump's; {@link DumpPlan})
     */
    public record Options(Path teacher, Path tokens, Path out, TeacherTargets.Kind kind, int k, DType dtype, double temperature,
                          int seqLen, int sequencesPerShard, int batch, int maxSequences, long seed, String tokenizerId,
                          Path tokenizer, boolean overwrite, int[] hiddenLayers, boolean resume) {
        public Options {
            hiddenLayers = hiddenLayers == null ? new int[0] : hiddenLayers.clone();
        }

        /** Without hidden states. */
        public Options(Path teacher, Path tokens, Path out, TeacherTargets.Kind kind, int k, DType dtype, double temperature, int seqLen,
                       int sequencesPerShard, int batch, int maxSequences, long seed, String tokenizerId, Path tokenizer, boolean overwrite) {
            this(teacher, tokens, out, kind, k, dtype, temperature, seqLen, sequencesPerShard, batch, maxSequences, seed, tokenizerId,
                    tokenizer, overwrite, null, false);
        }
    }

    private LogitDump() {
    }

    public static TeacherManifest run(Options o, Kernels kernels, PrintWriter out, PrintWriter err) throws IOException {
        return run(o, kernels, new Collective.Single(), out, err);
    }

    /**
     * As above as one rank of an {@code mpirun}: shard k is written by rank k mod W, so the ranks
     * split the windows shard by shard; rank 0 takes the folder's lock and, once every rank's
     * shards are on disk, writes the one manifest. The output does not depend on W: each shard's
     * sampled targets come from a generator seeded by (seed, shard).
     */
    public static TeacherManifest run(Options o, Kernels kernels, Collective collective, PrintWriter out, PrintWriter err) throws IOException {
        if (!o.dtype().isLogitType()) throw new IllegalArgumentException("--dtype must be f32, f16 or bf16, got " + o.dtype());
        if (!(o.temperature() > 0)) throw new IllegalArgumentException("--temperature must be positive, got " + o.temperature());
        if (o.resume() && o.overwrite()) throw new IllegalArgumentException("--resume keeps the shards --overwrite removes: choose one");
        if (collective.rank() == 0 && FolderLock.holdsFiles(o.out()) && !o.overwrite() && !o.resume()) {
            throw new IOException(o.out() + " already holds files; pass --overwrite to replace the shards there, --resume to continue a "
                    + "dump that stopped, or choose another --out");
        }
        Path tokenizer = o.tokenizer() != null ? o.tokenizer() : o.teacher().resolve("tokenizer.json");
        String tokenizerSha256 = o.tokenizer() != null || Files.isRegularFile(tokenizer) ? TeacherShards.sha256(tokenizer) : null;
        try (LanguageModel teacher = ModelFiles.readTeacher(o.teacher(), kernels);
             TokenFile tokens = TokenFile.open(o.tokens(), teacher.vocabSize(), "the teacher's")) {
            int v = teacher.vocabSize(), context = teacher.contextLength();
            int t = o.seqLen() > 0 ? o.seqLen() : context;
            if (t > context) throw new IllegalArgumentException("--seq-len " + t + " exceeds the teacher's context " + context);
            int total = (int) Math.min(o.maxSequences() > 0 ? o.maxSequences() : Integer.MAX_VALUE, tokens.size() / t);
            if (total < 1) throw new IOException(o.tokens() + ": " + tokens.size() + " tokens, fewer than one sequence of " + t);
            int batch = Math.min(o.batch(), total);
            for (int l : o.hiddenLayers()) {
                if (l < 0 || l > teacher.layers()) {
                    throw new IllegalArgumentException("--hidden-layers: state " + l + " does not exist: the teacher has " + teacher.layers()
                            + " blocks, so states 0.." + teacher.layers() + " (0 the embeddings, " + teacher.layers() + " the final norm's output)");
                }
            }
            if (Arrays.stream(o.hiddenLayers()).distinct().count() != o.hiddenLayers().length) {
                throw new IllegalArgumentException("--hidden-layers lists a state twice: " + Arrays.toString(o.hiddenLayers()));
            }
            try (LanguageModelForward model = new LanguageModelForward(teacher, kernels, batch, t);
                 FolderLock lock = collective.rank() == 0 ? FolderLock.acquire(o.out(), "--out") : null) {    // inputs before the folder: bad input writes nothing
                if (collective.rank() == 0) {
                    if (o.overwrite()) removeShards(o.out());
                    DumpPlan plan = new DumpPlan(o.teacher().toAbsolutePath().normalize().toString(),
                            o.tokens().toAbsolutePath().normalize().toString(), Files.size(o.tokens()), TeacherShardFormat.name(o.kind()),
                            o.kind() == TeacherTargets.Kind.DENSE ? 0 : o.k(),
                            o.kind() == TeacherTargets.Kind.SAMPLED ? null : TeacherShardFormat.name(o.dtype()), o.temperature(), t, total,
                            o.sequencesPerShard(), o.seed(), Arrays.stream(o.hiddenLayers()).boxed().toList(), tokenizerSha256, v);
                    if (o.resume()) {
                        plan.checkResumes(o.out());
                    } else {
                        plan.write(o.out());
                    }
                }
                collective.barrier();   // the folder is locked, cleared or checked before any rank writes to it
                StopRequests.loopRunning(true);   // a signal stops the dump between batches, its whole shards kept
                try {
                    dump(o, model, tokens, t, batch, total, tokenizer, tokenizerSha256, v, teacher.width(), collective, out, err);
                } finally {
                    StopRequests.loopRunning(false);
                }
            }
        }
        return TeacherManifest.read(o.out().resolve("manifest.json"));
    }

    private static void dump(Options o, LanguageModelForward model, TokenFile tokens, int t, int batch, int total, Path tokenizer,
                             String tokenizerSha256, int v, int width, Collective collective, PrintWriter out, PrintWriter err)
            throws IOException {
        boolean dense = o.kind() == TeacherTargets.Kind.DENSE;
        if (!dense && (o.k() < 1 || o.k() > v)) throw new IllegalArgumentException("--k must be in [1, " + v + "], got " + o.k());
        int k = dense ? 0 : o.k();
        TeacherLayout layout = dense ? TeacherLayout.dense(o.dtype(), v)
                : new TeacherLayout(o.kind(), o.kind() == TeacherTargets.Kind.SAMPLED ? DType.F32 : o.dtype(), v, k, (float) o.temperature());
        List<TeacherShardFormat.Tensor> tensors = TeacherShardFormat.tensors(o.kind());
        Files.createDirectories(o.out());
        List<TeacherManifest.Shard> shards = new ArrayList<>();
        Map<String, String> hashes = new HashMap<>();   // this rank's shards: SHA-256 of the bytes written
        int written = 0, kept = 0;
        Progress progress = new Progress(err, "dump-logits", 0, total, 5000);
        int[] window = new int[t];
        ThreadLocal<double[]> sums = ThreadLocal.withInitial(() -> new double[v]);   // a row's running sums, a thread's own
        ThreadLocal<int[]> heaps = ThreadLocal.withInitial(() -> new int[k]);   // a row's top k, a thread's own
        ThreadLocal<float[]> topScratch = ThreadLocal.withInitial(() -> HostTopK.scratch(k));
        int done = 0;
        for (int shardIndex = 0; done < total; shardIndex++) {
            int s = Math.min(o.sequencesPerShard(), total - done);
            String file = String.format("shard-%05d.safetensors", shardIndex);
            shards.add(new TeacherManifest.Shard(file, s, null));
            if (shardIndex % collective.size() != collective.rank()) {   // another rank's shard
                done += s;
                continue;
            }
            if (o.resume() && Files.isRegularFile(o.out().resolve(file))) {   // whole: shards are written atomically
                done += s;
                kept++;
                progress.update(done, String.format("shard %d kept", shardIndex));
                continue;
            }
            Rng rng = new Rng(o.seed() + 7919L * shardIndex);
            try (Arena arena = Arena.ofShared()) {
                long rows = (long) s * t;
                MemorySegment ids = arena.allocate(4 * rows, 64);
                List<MemorySegment> buffers = new ArrayList<>();
                for (int i = 0; i < tensors.size(); i++) buffers.add(arena.allocate(Math.max(1, rows * layout.bytesPerRow(i)), 64));
                Map<Integer, MemorySegment> hidden = new LinkedHashMap<>();
                for (int l : o.hiddenLayers()) hidden.put(l, arena.allocate(rows * width * TeacherShardFormat.HIDDEN_TYPE.bytes(), 64));
                MemorySegment batchIds = arena.allocate(4L * batch * t, 64);
                for (int s0 = 0; s0 < s; s0 += batch) {
                    if (StopRequests.requested() != null) {
                        throw new TrainingLoop.StoppedBySignalException("stopped by " + StopRequests.requested() + " during shard "
                                + shardIndex + " of " + o.out() + " (not written); its " + (written + kept) + " whole shard(s) before "
                                + "it stay; continue with the same command and --resume");
                    }
                    int n = Math.min(batch, s - s0);
                    for (int i = 0; i < batch; i++) {
                        tokens.read((long) (done + s0 + Math.min(i, n - 1)) * t, t, window);
                        for (int j = 0; j < t; j++) batchIds.setAtIndex(ValueLayout.JAVA_INT, (long) i * t + j, window[j]);
                    }
                    MemorySegment.copy(batchIds, 0, ids, 4L * s0 * t, 4L * n * t);
                    final int first = s0, rowsNow = n * t;
                    MemorySegment logits = model.logits(batchIds, hidden.isEmpty() ? null : (index, state) -> {
                        MemorySegment to = hidden.get(index);
                        if (to == null) return;
                        try (Arena host = Arena.ofConfined()) {   // read now: the next block overwrites the state
                            MemorySegment from = model.kernels().hostView(state.data(), 4L * rowsNow * width, host);
                            long at = (long) first * t * width;
                            for (long i = 0; i < (long) rowsNow * width; i++) {
                                TeacherShardFormat.HIDDEN_TYPE.write(to, at + i, from.getAtIndex(ValueLayout.JAVA_FLOAT, i));
                            }
                        }
                    });
                    switch (o.kind()) {
                        case DENSE -> rows(rowsNow, r -> {
                            long row = (long) first * t + r;
                            for (int j = 0; j < v; j++) {
                                o.dtype().write(buffers.get(0), row * v + j, logits.getAtIndex(ValueLayout.JAVA_FLOAT, (long) r * v + j));
                            }
                        });
                        case TOP_K -> {
                            rows(rowsNow, r -> topK(logits, (long) r * v, v, k, buffers.get(0), buffers.get(1), o.dtype(), (long) first * t + r,
                                    heaps.get(), topScratch.get()));
                            // the full-vocabulary log Σ exp(logit / T) of each row, where the logits live
                            float[] rowLse = model.logsumexpOfLastLogits(o.temperature());
                            for (int r = 0; r < n * t; r++) buffers.get(2).setAtIndex(ValueLayout.JAVA_FLOAT, (long) s0 * t + r, rowLse[r]);
                        }
                        case SAMPLED -> {
                            // the uniforms drawn from the shard's stream in row order, so the rows can run on every core
                            double[] u = new double[rowsNow * k];
                            for (int i = 0; i < u.length; i++) u[i] = rng.nextDouble();
                            rows(rowsNow, r -> sample(logits, (long) r * v, v, k, o.temperature(), buffers.get(0), buffers.get(1),
                                    (long) first * t + r, u, r * k, sums.get()));
                        }
                    }
                    progress.update(done + s0 + n, String.format("shard %d", shardIndex));
                }
                List<SafetensorsWriter.Item> items = new ArrayList<>();
                items.add(new SafetensorsWriter.Item("input_ids", DType.I32, new int[]{s, t}, ids));
                for (int i = 0; i < tensors.size(); i++) {
                    items.add(new SafetensorsWriter.Item(tensors.get(i).name(), layout.bufferTypes().get(i),
                            TeacherShardFormat.shape(layout, i, s, t), buffers.get(i)));
                }
                for (var h : hidden.entrySet()) {
                    items.add(new SafetensorsWriter.Item(TeacherShardFormat.hiddenTensor(h.getKey()), TeacherShardFormat.HIDDEN_TYPE,
                            new int[]{s, t, width}, h.getValue()));
                }
                Path path = o.out().resolve(file);
                MessageDigest digest = TeacherShards.sha256Digest();
                SafetensorsWriter.write(path, items, Map.of("teacher", o.teacher().toString()), digest);
                hashes.put(file, HexFormat.of().formatHex(digest.digest()));
                written++;
            }
            done += s;
        }
        collective.barrier();   // every rank's shards are on disk
        if (collective.rank() != 0) {
            collective.barrier();   // and the manifest, once rank 0 has written it
            return;
        }
        for (int i = 0; i < shards.size(); i++) {   // hashed as written; another rank's shards read back
            TeacherManifest.Shard sh = shards.get(i);
            String sha = hashes.containsKey(sh.file()) ? hashes.get(sh.file()) : TeacherShards.sha256(o.out().resolve(sh.file()));
            shards.set(i, new TeacherManifest.Shard(sh.file(), sh.sequences(), sha));
        }
        TeacherManifest m = new TeacherManifest(1, v, t, TeacherShardFormat.name(o.kind()), k,
                o.kind() == TeacherTargets.Kind.SAMPLED ? null : TeacherShardFormat.name(o.dtype()),
                o.temperature(), o.tokenizerId() != null ? o.tokenizerId() : tokenizerSha256 != null ? tokenizer.toString() : "unknown",
                tokenizerSha256, o.teacher().toString(), shards,
                o.hiddenLayers().length == 0 ? null : Arrays.stream(o.hiddenLayers()).boxed().toList(), o.hiddenLayers().length == 0 ? null : width);
        m.write(o.out().resolve("manifest.json"));
        out.printf("wrote %d sequences of %d tokens (%s%s%s) in %d shard(s) to %s%s%s%n", total, t, TeacherShardFormat.name(o.kind()),
                k > 0 ? ", k = " + k : "", o.hiddenLayers().length == 0 ? "" : ", hidden states " + Arrays.toString(o.hiddenLayers()) + " in bf16",
                shards.size(), o.out(), kept > 0 ? " (" + kept + " kept from the stopped dump)" : "",
                collective.size() > 1 ? " (" + collective.size() + " ranks, shard k by rank k mod " + collective.size() + ")" : "");
        out.flush();
        collective.barrier();
    }

    /**
     * Removes a shard directory's manifest (first: a directory without one is no shard set, so a
     * dump that stops half way never leaves an old manifest over new shards) and its shard files.
     */
    private static void removeShards(Path out) throws IOException {
        Files.deleteIfExists(out.resolve("manifest.json"));
        Files.deleteIfExists(out.resolve(DumpPlan.FILE));
        try (var entries = Files.list(out)) {
            for (Path p : entries.filter(p -> p.getFileName().toString().matches(SHARD_FILE)).toList()) Files.delete(p);
        }
    }

    /** Rows 0..n-1 of a batch's logits, each by itself, on every core (the rows write disjoint places). */
    private static void rows(int n, java.util.function.IntConsumer row) {
        int parts = Math.min(n, Runtime.getRuntime().availableProcessors());
        java.util.stream.IntStream.range(0, parts).parallel().forEach(p -> {
            for (int r = p * n / parts; r < (p + 1) * n / parts; r++) row.accept(r);
        });
    }

    /**
     * The k largest logits of one row, in descending order (ties to the lower id, NaN below every
     * number: {@link HostTopK}), into ids and vals at {@code row}; heap: k ints, scratch: {@link HostTopK#scratch}(k).
     */
    private static void topK(MemorySegment logits, long at, int v, int k, MemorySegment ids, MemorySegment vals, DType type, long row,
                             int[] heap, float[] scratch) {
        int n = HostTopK.ids(logits, at, v, heap, scratch);
        HostTopK.byLogit(logits, at, heap, n);
        for (int i = 0; i < n; i++) {
            ids.setAtIndex(ValueLayout.JAVA_INT, row * k + i, heap[i]);
            type.write(vals, row * k + i, logits.getAtIndex(ValueLayout.JAVA_FLOAT, at + heap[i]));
        }
    }

    /**
     * k draws from softmax(logit/T) with replacement, weight 1/k each: draw i is the first id
     * whose running sum of exp((logit - max)/T) passes u[from + i] times the row's sum (the last id
     * where none does: a NaN row), found by bisection over the running sums kept in c (v doubles).
     */
    static void sample(MemorySegment logits, long at, int v, int k, double temperature, MemorySegment ids, MemorySegment weights,
                       long row, double[] u, int from, double[] c) {
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < v; j++) max = Math.max(max, logits.getAtIndex(ValueLayout.JAVA_FLOAT, at + j));
        double sum = 0;
        for (int j = 0; j < v; j++) {
            sum += Math.exp((logits.getAtIndex(ValueLayout.JAVA_FLOAT, at + j) - max) / temperature);
            c[j] = sum;
        }
        for (int i = 0; i < k; i++) {
            double target = u[from + i] * sum;
            int pick = v - 1;
            if (target < sum) {   // the sums never fall, so the ids past the draw are those whose sum passes the target
                int lo = 0;
                for (int hi = v - 1; lo < hi; ) {
                    int mid = (lo + hi) >>> 1;
                    if (target < c[mid]) hi = mid;
                    else lo = mid + 1;
                }
                pick = lo;
            }
            ids.setAtIndex(ValueLayout.JAVA_INT, row * k + i, pick);
            weights.setAtIndex(ValueLayout.JAVA_FLOAT, row * k + i, 1f / k);
        }
    }
}
