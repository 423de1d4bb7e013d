package dev.distillery.bench;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Locale;
import java.util.StringJoiner;

/**
 * {@link TrainingStepBenchmark}'s step (the same setup and the same call, outside JMH) behind a
 * line protocol on stdin, for bench/reference/paired_steps.py, which runs a few steps of it and
 * of PyTorch's step ({@code pytorch_step.py --serve}) in turn, both processes warm, so that the
 * two sides of each pair ran within a few seconds of each other on a machine whose speed drifts.
 * Says "ready ..." once set up; then each line holding a count N runs N steps and prints their
 * times in ms on one line; end of input ends it.
 *
 * <pre>java --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate -Xmx8g \
 *     -XX:+UseSerialGC -cp bench/target/benchmarks.jar dev.distillery.bench.StepServer B bf16 ce keep [threads]</pre>
 */
public final class StepServer {

    private StepServer() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 4 || args[0].equals("-h") || args[0].equals("--help")) {
            System.err.println("usage: StepServer CONFIG fp32|bf16 ce|distill keep|recompute [threads]   (then step counts on stdin)");
            System.exit(args.length > 0 && args[0].startsWith("-") ? 0 : 2);
        }
        TrainingStepBenchmark b = null;
        try {
            b = benchmark(args[0], args[1], args[2], args[3], args.length > 4 ? Integer.parseInt(args[4]) : 2);
            serve(b, new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)), System.out);
        } catch (IllegalArgumentException e) {   // a bad config, precision, loss, thread count or step count
            System.err.println("StepServer: " + e.getMessage());
            System.exit(2);
        } finally {
            if (b != null) b.tearDown();
        }
    }

    /** TrainingStepBenchmark set up as JMH would with these parameters, on the CPU with the default GEMM. */
    static TrainingStepBenchmark benchmark(String config, String precision, String loss, String attention, int threads) {
        if (Arrays.stream(StudentConfigs.values()).noneMatch(c -> c.name().equals(config))) {
            throw new IllegalArgumentException("config: one of " + Arrays.toString(StudentConfigs.values()) + ", got '" + config + "'");
        }
        TrainingStepBenchmark b = new TrainingStepBenchmark();
        b.config = config;
        b.precision = precision;
        b.loss = loss;
        b.attention = attention;
        b.threads = threads;
        b.gemm = "auto";
        b.device = "cpu";
        b.setUp();
        return b;
    }

    /** The protocol over a set-up benchmark: "ready ...", then a line of step times for each count read. */
    static void serve(TrainingStepBenchmark b, BufferedReader in, PrintStream out) throws IOException {
        out.println("ready distillery config " + b.config + " " + b.precision + " " + b.loss + " " + b.attention
                + " attention, " + b.threads + " threads");
        out.flush();
        for (String line; (line = in.readLine()) != null; ) {
            int n;
            try {
                n = Integer.parseInt(line.trim());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("expected a step count on stdin, got '" + line + "'");
            }
            StringJoiner times = new StringJoiner(" ");
            for (int i = 0; i < n; i++) {
                long t0 = System.nanoTime();
                b.step();
                times.add(String.format(Locale.ROOT, "%.3f", (System.nanoTime() - t0) / 1e6));
            }
            out.println(times);
            out.flush();
        }
    }
}
