package dev.distillery.trainer.distill;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.distillery.runtime.io.ModelFiles;
import dev.distillery.runtime.nn.Gpt2;
import dev.distillery.runtime.nn.Gpt2Config;
import dev.distillery.runtime.nn.LanguageModel;
import dev.distillery.runtime.nn.LanguageModelForward;
import dev.distillery.trainer.cli.Main;

/**
 * The loss as docs/CONFIG.md writes it, computed here in float64 from the shard files' bytes (read
 * by this test, not by the project's readers) and the student's logits, against what training
 * reports at step 1 and what {@code eval} prints: one definition, the same rows everywhere.
 */
class LossDefinitionTest {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static Path dir;

    @BeforeAll
    static void shardsAndStudent(@TempDir Path tmp) throws IOException {
        DistillRunTest.writeTeacherShards(tmp);
        dir = tmp;
        try (Gpt2 student = new Gpt2(new Gpt2Config(DistillRunTest.VOCAB, DistillRunTest.SEQ, 1, 16, 2),
                DistillRunTest.kernels)) {
            student.initialize(11);
            ModelFiles.write(tmp.resolve("student"), student);
        }
    }

    @AfterAll
    static void close() {
        DistillRunTest.close();
    }

    /** One shard tensor's bytes, found through the safetensors header as the format defines it. */
    private record Raw(ByteBuffer data, String dtype) {
        float f(long i) {
            return switch (dtype) {
                case "F32" -> data.getFloat((int) (4 * i));
                case "BF16" -> Float.intBitsToFloat((data.getShort((int) (2 * i)) & 0xFFFF) << 16);
                default -> throw new IllegalStateException(dtype);
            };
        }

        int i32(long i) {
            return data.getInt((int) (4 * i));
        }
    }

    private static Raw tensor(Path file, String name) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        int headerLen = (int) b.getLong(0);
        JsonNode t = JSON.readTree(new String(bytes, 8, headerLen, StandardCharsets.UTF_8)).get(name);
        int begin = 8 + headerLen + t.get("data_offsets").get(0).asInt(), end = 8 + headerLen + t.get("data_offsets").get(1).asInt();
        return new Raw(ByteBuffer.wrap(bytes, begin, end - begin).slice().order(ByteOrder.LITTLE_ENDIAN), t.get("dtype").asText());
    }

    private record Expected(double loss, double ce, double kl, long rows) {
    }

    /**
     * The documented loss over every shard sequence: the mean over positions with a label (all but
     * each sequence's last) of alpha·CE + (1 − alpha)·T²·D, D the forward KL at T (for top-k, over
     * the listed ids plus one tail bucket); and the KL at the shards' temperature without T², as
     * {@code eval} reports it.
     */
    private static Expected documented(Path shards, String targets, double temperature, double alpha) throws IOException {
        JsonNode manifest = JSON.readTree(shards.resolve("manifest.json").toFile());
        int t = manifest.get("seq_len").asInt(), v = manifest.get("vocab_size").asInt(), k = manifest.get("k").asInt();
        double shardT = manifest.get("temperature").asDouble();
        double loss = 0, ce = 0, kl = 0;
        long rows = 0;
        try (LanguageModel student = ModelFiles.read(dir.resolve("student"), DistillRunTest.kernels);
             LanguageModelForward forward = new LanguageModelForward(student, DistillRunTest.kernels, 1, t);
             java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment ids = arena.allocate(4L * t, 64);
            for (JsonNode shard : manifest.get("shards")) {
                Path file = shards.resolve(shard.get("file").asText());
                Raw input = tensor(file, "input_ids");
                Raw logits = targets.equals("dense") ? tensor(file, "logits") : tensor(file, "topk_logits");
                Raw topIds = targets.equals("dense") ? null : tensor(file, "topk_ids");
                Raw lse = targets.equals("dense") ? null : tensor(file, "logsumexp");
                for (int s = 0; s < shard.get("sequences").asInt(); s++) {
                    for (int p = 0; p < t; p++) ids.setAtIndex(ValueLayout.JAVA_INT, p, input.i32((long) s * t + p));
                    MemorySegment sl = forward.logits(ids);
                    for (int p = 0; p < t - 1; p++) {
                        double[] z = new double[v];
                        for (int j = 0; j < v; j++) z[j] = sl.getAtIndex(ValueLayout.JAVA_FLOAT, (long) p * v + j);
                        long row = (long) s * t + p;
                        int label = input.i32(row + 1);
                        double rowCe = logSumExp(z, 1) - z[label];
                        double dTrain, dEval;
                        if (topIds == null) {
                            double[] teacher = new double[v];
                            for (int j = 0; j < v; j++) teacher[j] = logits.f(row * v + j);
                            dTrain = denseKl(teacher, z, temperature);
                            dEval = denseKl(teacher, z, 1);
                        } else {
                            int[] listed = new int[k];
                            double[] logP = new double[k];
                            for (int i = 0; i < k; i++) {
                                listed[i] = topIds.i32(row * k + i);
                                logP[i] = logits.f(row * k + i) / shardT - lse.f(row);
                            }
                            dTrain = topKTailKl(listed, logP, z, shardT);   // sparse shards train at their own temperature
                            dEval = dTrain;
                        }
                        loss += alpha * rowCe + (1 - alpha) * temperature * temperature * dTrain;
                        ce += rowCe;
                        kl += dEval;
                        rows++;
                    }
                }
            }
        }
        return new Expected(loss / rows, ce / rows, kl / rows, rows);
    }

    private static double logSumExp(double[] z, double temperature) {
        double max = Double.NEGATIVE_INFINITY, sum = 0;
        for (double x : z) max = Math.max(max, x / temperature);
        for (double x : z) sum += Math.exp(x / temperature - max);
        return max + Math.log(sum);
    }

    /** Σ p (log p − log q), p = softmax(teacher/T), q = softmax(student/T). */
    private static double denseKl(double[] teacher, double[] student, double temperature) {
        double lt = logSumExp(teacher, temperature), ls = logSumExp(student, temperature), d = 0;
        for (int j = 0; j < teacher.length; j++) {
            double logP = teacher[j] / temperature - lt, logQ = student[j] / temperature - ls;
            d += Math.exp(logP) * (logP - logQ);
        }
        return d;
    }

    /** KL over the listed ids plus one bucket holding the rest of each distribution. */
    private static double topKTailKl(int[] listed, double[] logP, double[] student, double temperature) {
        double ls = logSumExp(student, temperature), pListed = 0, qListed = 0, d = 0;
        for (int i = 0; i < listed.length; i++) {
            double p = Math.exp(logP[i]), logQ = student[listed[i]] / temperature - ls;
            d += p * (logP[i] - logQ);
            pListed += p;
            qListed += Math.exp(logQ);
        }
        double pTail = 1 - pListed, qTail = 1 - qListed;
        if (pTail > 0) d += pTail * Math.log(pTail / qTail);
        return d;
    }

    private static JsonNode lastRecord(Path metrics, String kind) throws IOException {
        JsonNode last = null;
        for (String line : Files.readAllLines(metrics)) {
            JsonNode n = JSON.readTree(line);
            if (kind.equals(n.get("kind").asText())) last = n;
        }
        return last;
    }

    private static void check(String targets, double temperature, double alpha) throws IOException {
        Path shards = DistillRunTest.data.resolve(targets);
        Expected want = documented(shards, targets, temperature, alpha);
        int sequences = JSON.readTree(shards.resolve("manifest.json").toFile()).get("shards").findValues("sequences").stream()
                .mapToInt(JsonNode::asInt).sum();

        // Training: one batch of every sequence, so step 1's loss is the mean over all of them.
        Path out = dir.resolve("run-" + targets);
        DistillConfig cfg = new DistillConfig(shards.toString(), null, out.toString(), null, dir.resolve("student").toString(),
                DistillConfig.Student.gpt2(1, 16, 2, null, null), 1, sequences, 1, 1e-3, 1e-4, 0, 0.0, null, null, 0.0,
                new DistillConfig.Loss(temperature, alpha, "forward_kl", null, true, "tail", null, "mean", 7), 0, 0, 0, 1, 5L, 0, 1, true, null, null, null, null, null, null, null, null, null, null);
        PrintWriter quiet = new PrintWriter(new StringWriter());
        DistillRun.run(cfg, DistillRunTest.kernels, false, quiet, quiet);
        JsonNode train = lastRecord(out.resolve("metrics.jsonl"), "train");
        assertEquals(1, train.get("step").asInt());
        assertEquals(want.loss(), train.get("loss").asDouble(), 2e-5 * want.loss(), targets + ": training loss at step 1");

        // eval: the same rows, the CE and the KL at the shards' temperature.
        StringWriter stdout = new StringWriter(), stderr = new StringWriter();
        int status = Main.execute(new String[]{"eval", "--model", dir.resolve("student").toString(), "--teacher-shards", shards.toString(),
                "--batch", "5", "--json", "--device", "cpu", "--threads", "1"}, new PrintWriter(stdout, true), new PrintWriter(stderr, true));
        assertEquals(0, status, stderr.toString());
        JsonNode eval = JSON.readTree(stdout.toString().lines().filter(l -> l.startsWith("{")).reduce((a, b) -> b).orElseThrow());
        assertEquals(want.rows(), eval.get("positions").asLong(), targets + ": every labelled position, the last batch padded");
        assertEquals(want.ce(), eval.get("cross_entropy").asDouble(), 2e-5 * want.ce(), targets + ": eval CE");
        String klKey = targets.equals("dense") ? "kl" : "kl_topk_tail";
        assertEquals(want.kl(), eval.get(klKey).asDouble(), 2e-5 * want.kl(), targets + ": eval " + klKey + " in " + eval);
    }

    @Test
    void denseShardsAtTwiceTheirTemperature() throws IOException {
        check("dense", 2.0, 0.3);
    }

    @Test
    void topKShardsWithATailBucket() throws IOException {
        check("topk", 1.0, 0.5);
    }
}
