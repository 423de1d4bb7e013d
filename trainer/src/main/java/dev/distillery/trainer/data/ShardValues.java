package dev.distillery.trainer.data;

import java.io.IOException;
import java.io.PrintWriter;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Locale;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.distill.TeacherLayout;
import dev.distillery.kernels.distill.TeacherTargets;
import dev.distillery.trainer.report.Progress;

/**
 * Every value of a teacher shard directory, checked in one parallel pass before the first step:
 * input ids inside the vocabulary; dense and top-k logits and the logsumexp finite; top-k ids in
 * range and distinct within a row, and their probabilities at the manifest's temperature summing
 * to at most 1 (beyond what the stored values' rounding explains); sampled ids in range and each
 * row's weights finite, non-negative and summing to 1. The first problem, in the shards' order,
 * is an error naming the shard file, the sequence in it and the position.
 *
 * <p>Up front rather than while streaming: a problem found at step 1 costs seconds, one found
 * when the stream first reaches it can cost the hours before it. The pass reads every byte once
 * (as the SHA-256 check does); docs/PERFORMANCE.md measures it.
 */
public final class ShardValues {

    /** What the pass saw: rows checked, and how many had a top-k holding all the teacher's probability. */
    public record Summary(long rows, long rowsWithoutTail, double seconds) {
    }

    /** Sampled weights of a row must sum to 1 within this (float32 sums of k terms). */
    static final double WEIGHT_SUM_TOLERANCE = 1e-3;
    /** Top-k mass may exceed 1 by this much after every value is rounded the way that lowers it most. */
    static final double MASS_TOLERANCE = 1e-5;
    private static final int SEQUENCES_PER_ROUND = 64;

    private ShardValues() {
    }

    /**
     * Checks every sequence of {@code shards} on {@code threads} threads; a progress line on
     * {@code err} when the pass is long.
     *
     * @throws IOException naming the shard file, sequence and position of the first bad value
     */
    public static Summary check(TeacherShards shards, int threads, PrintWriter err) throws IOException {
        long t0 = System.nanoTime();
        int n = shards.sequences(), t = shards.manifest().seqLen();
        AtomicLong withoutTail = new AtomicLong();
        Progress progress = null;
        try (ForkJoinPool pool = new ForkJoinPool(Math.max(1, threads))) {
            for (int from = 0; from < n; from += SEQUENCES_PER_ROUND * Math.max(1, threads)) {
                int start = from, end = Math.min(n, from + SEQUENCES_PER_ROUND * Math.max(1, threads));
                Optional<String> problem = pool.submit(() -> IntStream.range(start, end).parallel()
                        .mapToObj(s -> checkSequence(shards, s, withoutTail)).flatMap(Optional::stream).findFirst()).get();
                if (problem.isPresent()) throw new IOException(problem.get());
                if (progress == null && System.nanoTime() - t0 > 2_000_000_000L) {
                    progress = new Progress(err, "checking teacher values", 0, n, 10_000);
                }
                if (progress != null) progress.update(end, String.format("%.1f GB", shards.bytesOfSequences(end) / 1e9));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while checking the teacher's values", e);
        } catch (ExecutionException e) {
            throw new IllegalStateException("checking the teacher's values failed: " + e.getCause(), e.getCause());
        }
        return new Summary((long) n * t, withoutTail.get(), (System.nanoTime() - t0) / 1e9);
    }

    /** The first problem of sequence {@code s}, in position order, or empty. */
    private static Optional<String> checkSequence(TeacherShards shards, int s, AtomicLong withoutTail) {
        try {
            return checkMappedSequence(shards, s, withoutTail);
        } catch (InternalError fault) {   // a mapped page past the file's end: the file shrank after it was opened
            return Optional.of(shards.unreadable(s, fault).getMessage());
        }
    }

    private static Optional<String> checkMappedSequence(TeacherShards shards, int s, AtomicLong withoutTail) {
        TeacherShards.Sequence seq = shards.sequence(s);
        TeacherLayout layout = shards.layout();
        int t = shards.manifest().seqLen(), v = layout.vocab();
        for (int p = 0; p < t; p++) {
            int id = seq.inputIds().getAtIndex(ValueLayout.JAVA_INT, p);
            if (id < 0 || id >= v) return fail(shards, s, p, "input_ids: token id " + id + " is outside the vocabulary [0, " + v + ")");
            String problem = switch (seq.targets()) {
                case TeacherTargets.Dense d -> dense(d, p);
                case TeacherTargets.TopK k -> topK(k, p, withoutTail);
                case TeacherTargets.Sampled sm -> sampled(sm, p);
                case TeacherTargets.Mixture m -> throw new AssertionError("shards hold one teacher's targets, never a mixture");
            };
            if (problem != null) return fail(shards, s, p, problem);
        }
        return Optional.empty();
    }

    /** {@code problem} starts with the tensor's name: "topk_ids: id 7 is listed twice". */
    private static Optional<String> fail(TeacherShards shards, int s, int p, String problem) {
        return Optional.of(shards.where(s, p) + ": " + problem);
    }

    private static String dense(TeacherTargets.Dense d, int p) {
        long base = (long) p * d.vocab();
        long bad = firstNonFinite(d.logits(), d.type(), base, d.vocab());
        return bad < 0 ? null : "logits: token " + (bad - base) + " is " + d.type().read(d.logits(), bad) + "; teacher logits must be finite";
    }

    /** Index of the first non-finite element of {@code n} at {@code offset}, or -1; on the raw bits, one pass. */
    static long firstNonFinite(MemorySegment m, DType type, long offset, long n) {
        switch (type) {
            case F32 -> {
                for (long i = offset; i < offset + n; i++) {
                    if ((m.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i) & 0x7F80_0000) == 0x7F80_0000) return i;
                }
            }
            case BF16 -> {
                for (long i = offset; i < offset + n; i++) {
                    if ((m.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) & 0x7F80) == 0x7F80) return i;
                }
            }
            case F16 -> {
                for (long i = offset; i < offset + n; i++) {
                    if ((m.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) & 0x7C00) == 0x7C00) return i;
                }
            }
            default -> throw new IllegalArgumentException("not a logit type: " + type);
        }
        return -1;
    }

    /** Half the spacing of {@code type}'s values around {@code x}: how far rounding to it may have moved a value. */
    static double halfUlp(DType type, float x) {
        double ulp32 = Math.ulp(x);
        return switch (type) {
            case F32 -> ulp32 / 2;
            case BF16 -> ulp32 * (1 << 16) / 2;          // 7 stored mantissa bits against 23
            case F16 -> Math.max(ulp32 * (1 << 13), Math.scalb(1.0, -24)) / 2;   // 10 bits; subnormal spacing 2^-24
            default -> throw new IllegalArgumentException("not a logit type: " + type);
        };
    }

    /** Per thread: the row each vocabulary id was last listed in, so distinctness costs O(k) per row. */
    private static final ThreadLocal<int[]> LAST_ROW = new ThreadLocal<>();
    private static final ThreadLocal<int[]> ROW_STAMP = ThreadLocal.withInitial(() -> new int[1]);

    private static String topK(TeacherTargets.TopK tk, int p, AtomicLong withoutTail) {
        int k = tk.k(), v = tk.vocab();
        long base = (long) p * k;
        float lse = tk.logsumexp().getAtIndex(ValueLayout.JAVA_FLOAT, p);
        if (!Float.isFinite(lse)) return "logsumexp: " + lse + "; it must be finite";
        int[] lastRow = LAST_ROW.get();
        if (lastRow == null || lastRow.length < v) {
            lastRow = new int[v];
            Arrays.fill(lastRow, -1);
            LAST_ROW.set(lastRow);
        }
        int stamp = ++ROW_STAMP.get()[0];
        if (stamp == Integer.MAX_VALUE) {   // after 2^31 rows on this thread: start the stamps again
            Arrays.fill(lastRow, -1);
            ROW_STAMP.get()[0] = stamp = 0;
        }
        double temperature = tk.shardTemperature(), hl = Math.ulp(lse) / 2.0, lowest = 0, highest = 0;
        for (int i = 0; i < k; i++) {
            int id = tk.ids().getAtIndex(ValueLayout.JAVA_INT, base + i);
            if (id < 0 || id >= v) return "topk_ids: entry " + i + " is " + id + ", outside the vocabulary [0, " + v + ")";
            if (lastRow[id] == stamp) {
                int first = 0;
                while (tk.ids().getAtIndex(ValueLayout.JAVA_INT, base + first) != id) first++;
                return "topk_ids: id " + id + " is listed twice (entries " + first + " and " + i + "); top-k ids must be distinct";
            }
            lastRow[id] = stamp;
            float x = tk.type().read(tk.logits(), base + i);
            if (!Float.isFinite(x)) return "topk_logits: entry " + i + " (id " + id + ") is " + x + "; it must be finite";
            // One exp per entry: q as stored, and the most that rounding of the logit (half an ulp
            // of its type) and of the logsumexp could have raised it: e^(-a) >= 1 - a bounds it from below.
            double q = Math.exp(x / temperature - lse), a = halfUlp(tk.type(), x) / temperature + hl;
            lowest += q * (1 - a);
            highest += q * (1 + 2 * a);
        }
        if (lowest > 1 + MASS_TOLERANCE) {
            return String.format(Locale.ROOT, "topk_logits: the top-%d probabilities exp(logit / %s − logsumexp) sum to %.6f, more "
                    + "than 1 beyond what rounding explains; the logsumexp must be log Σ exp(logit / temperature) over the whole vocabulary "
                    + "at the manifest's temperature %s (one taken at another temperature, or over other logits, gives this)",
                    k, temperature, lowest, temperature);
        }
        if (highest >= 1 - MASS_TOLERANCE) withoutTail.incrementAndGet();
        return null;
    }

    private static String sampled(TeacherTargets.Sampled sm, int p) {
        int k = sm.samples(), v = sm.vocab();
        long base = (long) p * k;
        double sum = 0;
        for (int i = 0; i < k; i++) {
            int id = sm.ids().getAtIndex(ValueLayout.JAVA_INT, base + i);
            if (id < 0 || id >= v) return "sampled_ids: entry " + i + " is " + id + ", outside the vocabulary [0, " + v + ")";
            float w = sm.weights().getAtIndex(ValueLayout.JAVA_FLOAT, base + i);
            if (!(w >= 0) || !Float.isFinite(w)) return "sampled_weights: entry " + i + " is " + w + "; weights must be finite and >= 0";
            sum += w;
        }
        if (Math.abs(sum - 1) > WEIGHT_SUM_TOLERANCE) {
            return "sampled_weights: the row's weights sum to " + sum + ", not 1; each position's weights must sum to 1";
        }
        return null;
    }

    /** The warning a summary deserves, or null: top-k rows that never leave mass to the tail. */
    public static String warning(Summary s, TeacherLayout layout, String dir) {
        if (layout.kind() != TeacherTargets.Kind.TOP_K || layout.k() >= layout.vocab() || s.rows() == 0) return null;
        if (s.rowsWithoutTail() < s.rows()) return null;
        return dir + ": in every row the top-" + layout.k() + " hold all the teacher's probability (no tail mass); a logsumexp taken over "
                + "the top-k only gives this, and then the tail bucket teaches nothing. It must be over the whole vocabulary";
    }
}
