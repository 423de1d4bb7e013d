package dev.distillery.bench;

import java.io.IOException;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Two or more builds of the fused loss, or of a training step, in one JVM, called alternately:
 * each jar (a kernels jar, or the benchmarks.jar of another commit) gets a class loader of its own
 * with {@link DistillLossBenchmark} and its inputs (or, with {@code --step}, with
 * {@link TrainingStepBenchmark}'s model), and the calls go A B B A A B ... so that a drift in
 * the machine's speed (this project's machines are shared; it drifts by 1.5× within the hour)
 * falls on every build alike. Separate JMH runs of two jars cannot tell apart differences under
 * about 15% here; alternated calls in one JVM resolve a few percent.
 *
 * <pre>
 * java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate \
 *      -cp bench/target/benchmarks.jar dev.distillery.bench.SideBySide \
 *      --shape 2048x32000 --teacher dense-bf16 old-kernels.jar kernels/target/distillery-kernels-*.jar
 * </pre>
 *
 * {@code --step A --precision bf16 old/benchmarks.jar bench/target/benchmarks.jar} times config A's
 * training step of each build instead (each build trains its own model from the same seed). The
 * build loaded second runs a little slower whatever it is (the same jar twice: about 0.5% under
 * bf16, 3–5% under fp32, whose OpenBLAS both builds share), so steps are compared two builds at a
 * time and in both orders (docs/PERFORMANCE.md).
 *
 * Prints, per jar, the min, median and mean of the calls after the first quarter (warm-up), the
 * median as a fraction of the first jar's, in ns per element and in GB/s of floor traffic, and
 * the loss of the last call (the builds should agree to float accuracy); then, per jar after the
 * first, the median and quartiles of its per-round ratio to the first jar's call (the two ran
 * back to back, so the ratio carries less of the machine's drift than a ratio of medians). Each jar's inputs are generated from the same seed.
 * With {@code --copy}, each round also copies 1 GiB (MemoryBandwidthBenchmark's copy) and each
 * build's floor GB/s is reported as a fraction of the same round's copy GB/s.
 */
public final class SideBySide {

    private SideBySide() {
    }

    public static void main(String[] args) throws Exception {
        String shape = "2048x32000", teacher = "dense-bf16", divergence = "forward-kl";
        String step = null, precision = "fp32", stepLoss = "ce";
        int threads = 2, calls = 40;
        boolean copy = false;
        List<Path> jars = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            switch (a) {
                case "-h", "--help" -> {
                    System.out.println(usage());
                    return;
                }
                case "--shape" -> shape = value(args, ++i, a);
                case "--teacher" -> teacher = value(args, ++i, a);
                case "--divergence" -> divergence = value(args, ++i, a);
                case "--threads" -> threads = positive(value(args, ++i, a), a);
                case "--calls" -> calls = positive(value(args, ++i, a), a);
                case "--copy" -> copy = true;
                case "--step" -> step = value(args, ++i, a);
                case "--precision" -> precision = value(args, ++i, a);
                case "--loss" -> stepLoss = value(args, ++i, a);
                default -> {
                    if (a.startsWith("-")) fail("unknown option " + a);
                    Path jar = Path.of(a);
                    if (!Files.isRegularFile(jar)) fail("no such jar: " + jar.toAbsolutePath());
                    jars.add(jar);
                }
            }
        }
        if (jars.size() < (copy ? 1 : 2)) fail("give two or more jars to compare, or one with --copy (" + jars.size() + " given)");
        if (calls < 4) fail("--calls must be at least 4 (the first quarter is warm-up)");
        if (step != null && copy) fail("--copy measures the loss against the copy bandwidth; a step has no such floor");
        Path self = Path.of(SideBySide.class.getProtectionDomain().getCodeSource().getLocation().toURI());

        int m = jars.size();
        Build[] builds = new Build[m];
        for (int j = 0; j < m; j++) {
            builds[j] = step == null ? Build.loss(jars.get(j), self, shape, teacher, divergence, threads)
                    : Build.step(jars.get(j), self, step, precision, stepLoss, threads);
        }
        double[][] ms = new double[m][calls];
        double[] loss = new double[m];
        Copy copier = copy ? new Copy(threads) : null;
        double[] copyGbs = new double[calls];
        for (int c = 0; c < calls; c++) {
            if (copier != null) copyGbs[c] = copier.gbPerSecond();
            for (int k = 0; k < m; k++) {
                int j = c % 2 == 0 ? k : m - 1 - k;   // A B, then B A: neither always goes first
                builds[j].restore();
                long t0 = System.nanoTime();
                loss[j] = builds[j].call();
                ms[j][c] = (System.nanoTime() - t0) / 1e6;
            }
            if ((c + 1) % 10 == 0) System.out.printf("  %d of %d calls each%n", c + 1, calls);
        }
        String[] nv = shape.split("x");
        long elems = Long.parseLong(nv[0]) * Long.parseLong(nv[1]);
        double floorBytes = teacher.equals("dense-bf16") ? 10.0 * elems : 8.0 * elems + Long.parseLong(nv[0]) * 64 * 8;
        double firstMedian = 0;
        for (int j = 0; j < m; j++) {
            double[] x = Arrays.copyOfRange(ms[j], calls / 4, calls);
            Arrays.sort(x);
            double median = x[x.length / 2], mean = Arrays.stream(x).average().orElseThrow();
            if (j == 0) firstMedian = median;
            if (step != null) {
                System.out.printf("%-48s min %8.2f  median %8.2f  mean %8.2f ms a step  (median %.3f of the first's)  loss %.6f%n",
                        jars.get(j), x[0], median, mean, median / firstMedian, loss[j]);
            } else {
                System.out.printf("%-48s min %8.2f  median %8.2f  mean %8.2f ms  (median %.3f of the first's)   %.3f ns/element  %.1f GB/s  loss %.6f%n",
                        jars.get(j), x[0], median, mean, median / firstMedian, median * 1e6 / elems, floorBytes / (median * 1e6), loss[j]);
            }
        }
        // the machine's speed drifts over seconds; a call and the first build's call of the same
        // round ran within milliseconds of each other, so their ratio carries less of the drift
        for (int j = 1; j < m; j++) {
            double[] r = new double[calls - calls / 4];
            for (int c = calls / 4; c < calls; c++) r[c - calls / 4] = ms[j][c] / ms[0][c];
            Arrays.sort(r);
            System.out.printf("%-48s per-round ratio to the first's: median %.3f, quartiles %.3f to %.3f%n",
                    jars.get(j), r[r.length / 2], r[r.length / 4], r[r.length * 3 / 4]);
        }
        if (copier != null) {
            // the bandwidth bar: floor traffic at half the machine's copy bandwidth or more; the
            // copy ran in the same round as the calls, so the ratio carries little of the drift
            double[] x = Arrays.copyOfRange(copyGbs, calls / 4, calls);
            Arrays.sort(x);
            System.out.printf("%-48s median %.1f GB/s, quartiles %.1f to %.1f (%s, %d threads, bytes read + written)%n",
                    "copy", x[x.length / 2], x[x.length / 4], x[x.length * 3 / 4], Copy.SIZE, threads);
            for (int j = 0; j < m; j++) {
                double[] r = new double[calls - calls / 4];
                for (int c = calls / 4; c < calls; c++) r[c - calls / 4] = floorBytes / (ms[j][c] * 1e6) / copyGbs[c];
                Arrays.sort(r);
                System.out.printf("%-48s floor GB/s over the same round's copy GB/s: median %.3f, quartiles %.3f to %.3f%n",
                        jars.get(j), r[r.length / 2], r[r.length / 4], r[r.length * 3 / 4]);
            }
            copier.close();
        }
        for (Build b : builds) b.close();
    }

    /** MemoryBandwidthBenchmark's copy, 1 GiB into another, split over the kernel's thread count. */
    private static final class Copy implements AutoCloseable {
        static final String SIZE = "1 GiB -> 1 GiB";
        private final MemoryBandwidthBenchmark bench = new MemoryBandwidthBenchmark();

        Copy(int threads) {
            bench.threads = threads;
            bench.setUp();
        }

        /** One copy: 2 GiB moved (read + written), in GB/s. */
        double gbPerSecond() throws InterruptedException {
            long t0 = System.nanoTime();
            bench.copy();
            return 2.0 * MemoryBandwidthBenchmark.BYTES / (System.nanoTime() - t0);
        }

        @Override
        public void close() {
            bench.tearDown();
        }
    }

    /**
     * One build: a benchmark's class loaded from jar first, then from this benchmarks.jar, set up
     * once; {@link #call} runs one timed call (a fused loss after its student logits are restored,
     * or a training step) and returns its loss.
     */
    private static final class Build implements AutoCloseable {
        private final URLClassLoader loader;
        private final Object bench;
        private final Method restore, call, tearDown;

        private Build(Path jar, Path self, Class<?> benchmark, Map<String, Object> fields, String callName, String restoreName)
                throws Exception {
            loader = new URLClassLoader(new URL[]{jar.toUri().toURL(), self.toUri().toURL()}, ClassLoader.getPlatformClassLoader());
            Class<?> c = loader.loadClass(benchmark.getName());
            bench = c.getConstructor().newInstance();
            for (var f : fields.entrySet()) {
                try {
                    c.getField(f.getKey()).set(bench, f.getValue());
                } catch (NoSuchFieldException e) {
                    throw new IllegalArgumentException(jar + " predates " + benchmark.getSimpleName() + "'s " + f.getKey());
                }
            }
            restore = restoreName == null ? null : c.getMethod(restoreName);
            call = c.getMethod(callName);
            tearDown = c.getMethod("tearDown");
            invoke(c.getMethod("setUp"));
        }

        static Build loss(Path jar, Path self, String shape, String teacher, String divergence, int threads) throws Exception {
            System.out.printf("setting up %s (%s, %s, %s, %d threads)%n", jar, shape, teacher, divergence, threads);
            // every @Param field, as for a step: JMH sets them, so they have no defaults of their own
            Map<String, Object> fields = new LinkedHashMap<>(Map.of("shape", shape, "teacher", teacher, "threads", threads,
                    "divergence", divergence));
            return new Build(jar, self, DistillLossBenchmark.class, fields, "fused", "restoreStudent");
        }

        static Build step(Path jar, Path self, String config, String precision, String loss, int threads) throws Exception {
            System.out.printf("setting up %s (config %s step, %s, %s loss, %d threads)%n", jar, config, precision, loss, threads);
            // every @Param field: JMH sets them, so they have no defaults of their own
            Map<String, Object> fields = new LinkedHashMap<>(Map.of("config", config, "precision", precision, "threads", threads,
                    "gemm", "auto", "device", "cpu", "loss", loss));
            return new Build(jar, self, TrainingStepBenchmark.class, fields, "step", null);
        }

        void restore() throws Exception {
            if (restore != null) invoke(restore);
        }

        double call() throws Exception {
            return ((Number) invoke(call)).doubleValue();
        }

        private Object invoke(Method method) throws Exception {
            try {
                return method.invoke(bench);
            } catch (InvocationTargetException e) {
                throw e.getCause() instanceof Exception ex ? ex : e;
            }
        }

        @Override
        public void close() throws Exception {
            invoke(tearDown);
            try {
                loader.close();
            } catch (IOException ignored) {
                // the loader's jar handles go with the JVM
            }
        }
    }

    private static String value(String[] args, int i, String option) {
        if (i >= args.length) fail(option + " needs a value");
        return args[i];
    }

    private static int positive(String s, String option) {
        try {
            int v = Integer.parseInt(s);
            if (v > 0) return v;
        } catch (NumberFormatException ignored) {
            // reported below
        }
        fail(option + " must be a positive integer, not '" + s + "'");
        return 0;
    }

    private static void fail(String message) {
        System.err.println("SideBySide: " + message + "\n\n" + usage());
        System.exit(2);
    }

    private static String usage() {
        return """
                usage: java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate \\
                            -cp bench/target/benchmarks.jar dev.distillery.bench.SideBySide [options] A.jar [B.jar ...]

                Calls the fused loss of each build alternately in one JVM (DistillLossBenchmark's inputs,
                loss and gradient in place) and prints min / median / mean ms per build, and each
                build's per-round ratio to the first's (median and quartiles).
                  --step A|B           time a training step of that config instead (TrainingStepBenchmark;
                                       each build trains its own model from the same seed)
                  --precision P        the step's precision: fp32 (default) or bf16
                  --loss ce|distill    the step's loss (default ce; distill: a dense bf16 teacher)
                                       (the build loaded second runs up to 5% slower whatever it is:
                                       compare steps two builds at a time, in both orders)
                  --shape NxV          2048x32000 (default), 4096x50257, 1024x128256, or any
                  --teacher KIND       dense-bf16 (default) or top64
                  --divergence D       forward-kl (default), reverse-kl or jsd
                  --threads N          kernel threads (default 2)
                  --calls N            calls per build (default 40; the first quarter is warm-up)
                  --copy               also copy 1 GiB into another (MemoryBandwidthBenchmark's copy, at
                                       --threads) once a round, and print each build's floor GB/s as a
                                       fraction of that round's copy GB/s (the bar is 0.5)
                A jar is a distillery-kernels jar or the benchmarks.jar of another commit. Each build holds
                its own inputs: at 4096x50257 about 6 GB per build.""";
    }
}
