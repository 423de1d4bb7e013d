package dev.distillery.trainer.teacher;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Objects;

import com.fasterxml.jackson.core.type.TypeReference;

import dev.distillery.runtime.io.AtomicFileWriter;
import dev.distillery.trainer.data.StrictJson;

/**
 * {@code dump.json} of a shard folder: what {@code teacher dump-logits} was asked to write there,
 * written before its first shard. Shards are written whole (each by {@link AtomicFileWriter}) and
 * the manifest last, so a dump that stopped (a signal, a crash, a lost machine) leaves whole
 * shards and this file; {@code --resume} keeps those shards and writes the rest, after checking
 * here that it continues the same dump: every value must be as recorded. The teacher's weights
 * are named by their folder, not hashed (a teacher is gigabytes); the token file by its path and
 * size.
 *
 * @param sequences the dump's sequences in all, so the shards' boundaries
 */
public record DumpPlan(String teacher, String tokens, long tokensBytes, String targets, int k, String dtype, double temperature,
                       int seqLen, int sequences, int sequencesPerShard, long seed, List<Integer> hiddenLayers,
                       String tokenizerSha256, int vocabSize) {

    static final String FILE = "dump.json";

    /** Writes {@code out/dump.json}, replacing one a finished or cleared dump left. */
    void write(Path out) throws IOException {
        byte[] json = StrictJson.MAPPER.writerWithDefaultPrettyPrinter().writeValueAsBytes(this);
        AtomicFileWriter.write(out.resolve(FILE), ch -> AtomicFileWriter.writeFully(ch, ByteBuffer.wrap(json)));
    }

    /**
     * Checks that {@code out} holds a dump that stopped and that this plan continues it, and
     * removes what a process halted while writing a shard left behind (its temporary file); a
     * problem is one line naming the folder and, for a changed value, its key and both values.
     */
    void checkResumes(Path out) throws IOException {
        if (Files.isRegularFile(out.resolve("manifest.json"))) {
            throw new IOException(out + " holds a finished dump (manifest.json); nothing to resume. Start over with --overwrite");
        }
        Path file = out.resolve(FILE);
        if (!Files.isRegularFile(file)) {
            throw new IOException(out + ": no " + FILE + ", so no dump to resume here; run without --resume (with --overwrite to "
                    + "replace what the folder holds)");
        }
        Map<String, Object> was = StrictJson.MAPPER.convertValue(StrictJson.read(file, DumpPlan.class), new TypeReference<>() { });
        Map<String, Object> now = StrictJson.MAPPER.convertValue(this, new TypeReference<>() { });
        for (var e : now.entrySet()) {
            if (!Objects.equals(e.getValue(), was.get(e.getKey()))) {
                throw new IOException("--resume: '" + e.getKey() + "' was " + was.get(e.getKey()) + " in " + file + ", now "
                        + e.getValue() + "; resume with the options of the stopped dump, or start over with --overwrite");
            }
        }
        try (var entries = Files.list(out)) {
            for (Path p : entries.filter(p -> AtomicFileWriter.targetOfTemporary(p.getFileName().toString())
                    .filter(target -> target.matches(LogitDump.SHARD_FILE)).isPresent()).toList()) {
                Files.delete(p);
            }
        }
    }
}
