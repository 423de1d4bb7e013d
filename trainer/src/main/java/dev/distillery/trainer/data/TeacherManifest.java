package dev.distillery.trainer.data;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import dev.distillery.kernels.distill.TeacherTargets;


/**
 * {@code manifest.json} of a teacher shard directory (docs/FORMATS.md#teacher-shards). Keys are
 * snake_case; an unknown key is an error that names it.
 *
 * @param formatVersion 1
 * @param vocabSize     teacher vocabulary
 * @param seqLen        tokens per sequence
 * @param targets       dense, topk or sampled
 * @param k             top-k size, or samples per position; 0 for dense
 * @param dtype         f32, f16 or bf16: the dense or top-k logits
 * @param temperature   the temperature the top-k logsumexp or the samples were taken at
 * @param tokenizer     the tokenizer's name (informational)
 * @param tokenizerSha256 the SHA-256 (hex) of the {@code tokenizer.json} the ids were made with, or null;
 *                      when both it and a run's {@code tokenizer} are given, they must agree
 * @param teacher       the teacher's name (informational)
 * @param shards        the shard files in order
 * @param hiddenLayers  the teacher's hidden states each shard also holds as {@code hidden.<l>} (bf16,
 *                      (sequences, seq_len, hidden_size)), numbered as transformers' output_hidden_states;
 *                      null or empty = none
 * @param hiddenSize    their width; required with hidden_layers
 */
public record TeacherManifest(int formatVersion, int vocabSize, int seqLen, String targets, int k, String dtype,
                              double temperature, String tokenizer, String tokenizerSha256, String teacher, List<Shard> shards,
                              List<Integer> hiddenLayers, Integer hiddenSize) {

    /** One shard: its file (relative to the manifest), how many sequences it holds, its SHA-256 (hex). */
    public record Shard(String file, int sequences, String sha256) {
    }

    /** A manifest without hidden states. */
    public TeacherManifest(int formatVersion, int vocabSize, int seqLen, String targets, int k, String dtype, double temperature,
                           String tokenizer, String tokenizerSha256, String teacher, List<Shard> shards) {
        this(formatVersion, vocabSize, seqLen, targets, k, dtype, temperature, tokenizer, tokenizerSha256, teacher, shards, null, null);
    }

    /** The hidden states the shards hold, in the manifest's order; empty when none. */
    public int[] hiddenLayerArray() {
        return hiddenLayers == null ? new int[0] : hiddenLayers.stream().mapToInt(Integer::intValue).toArray();
    }

    /** Reads and checks {@code manifest.json}; every problem names the file and the key. */
    public static TeacherManifest read(Path file) throws IOException {
        TeacherManifest m = StrictJson.read(file, TeacherManifest.class);
        m.check(file);
        return m;
    }

    /** Writes the manifest crash-safely (temporary name, fsync, rename). */
    public void write(Path file) throws IOException {
        byte[] json = StrictJson.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsBytes(this);
        dev.distillery.runtime.io.AtomicFileWriter.write(file,
                ch -> dev.distillery.runtime.io.AtomicFileWriter.writeFully(ch, java.nio.ByteBuffer.wrap(json)));
    }

    private void check(Path file) throws IOException {
        require(file, formatVersion == 1, "format_version", "must be 1, got " + formatVersion);
        require(file, vocabSize > 0, "vocab_size", "must be positive, got " + vocabSize);
        require(file, seqLen > 0, "seq_len", "must be positive, got " + seqLen);
        TeacherTargets.Kind kind;
        try {
            kind = TeacherShardFormat.kind(targets);
        } catch (IllegalArgumentException e) {
            throw new IOException(file + ": 'targets' " + e.getMessage(), e);
        }
        require(file, kind == TeacherTargets.Kind.DENSE || (k > 0 && k <= vocabSize), "k",
                "must be in [1, vocab_size = " + vocabSize + "] for " + targets + ", got " + k);
        if (kind != TeacherTargets.Kind.SAMPLED) {
            try {
                TeacherShardFormat.logitType(dtype);
            } catch (IllegalArgumentException e) {
                throw new IOException(file + ": 'dtype' " + e.getMessage(), e);
            }
        }
        require(file, temperature > 0, "temperature", "must be positive, got " + temperature);
        require(file, tokenizerSha256 == null || tokenizerSha256.matches("[0-9a-f]{64}"), "tokenizer_sha256",
                "must be 64 lower-case hex digits (a SHA-256), got '" + tokenizerSha256 + "'");
        require(file, shards != null && !shards.isEmpty(), "shards", "must list at least one shard");
        if (hiddenLayers != null && !hiddenLayers.isEmpty()) {
            require(file, hiddenLayers.stream().allMatch(l -> l != null && l >= 0) && hiddenLayers.stream().distinct().count() == hiddenLayers.size(),
                    "hidden_layers", "must list distinct hidden-state numbers >= 0, got " + hiddenLayers);
            require(file, hiddenSize != null && hiddenSize > 0, "hidden_size", "must be positive with hidden_layers, got " + hiddenSize);
        }
        for (int i = 0; i < shards.size(); i++) {
            Shard s = shards.get(i);
            require(file, s != null && s.file() != null && !s.file().isBlank(), "shards[" + i + "].file", "is missing");
            require(file, s.sequences() > 0, "shards[" + i + "].sequences", "must be positive, got " + s.sequences());
        }
    }

    private static void require(Path file, boolean ok, String key, String problem) throws IOException {
        if (!ok) throw new IOException(file + ": '" + key + "' " + problem);
    }
}
