package dev.distillery.bench;

import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

import dev.distillery.bindings.DistilleryCpu;

/**
 * The ceiling of the bf16 GEMM's AVX512-BF16 path, as {@link FmaPeakBenchmark} is of fp32: 24
 * independent chains of VDPBF16PS (32 products into 16 fp32 lanes each) in registers, in C
 * ({@code distillery_bf16_dot_peak}; the Vector API has no bf16 dot product). Reported as
 * floating-point operations per second (a product and its sum count 2); run with {@code -t 1} and
 * {@code -t 2} for one and both cores. On a CPU without AVX512-BF16 it stops in its setup.
 *
 * <pre>java -jar bench/target/benchmarks.jar Bf16DotPeakBenchmark -f 1 -wi 2 -i 5 -t 2</pre>
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class Bf16DotPeakBenchmark {

    private static final int ITERATIONS = 1 << 20, CHAINS = 24;   // distillery_bf16_dot_peak's PEAK_CHAINS

    @Setup
    public void setUp() {
        if (DistilleryCpu.bf16GemmKind() == DistilleryCpu.BF16_NONE) {
            throw new IllegalStateException("no AVX512-BF16 here: " + DistilleryCpu.status());
        }
    }

    @Benchmark
    @OperationsPerInvocation(ITERATIONS * CHAINS * 16 * 2 * 2)
    public long dotChains() {
        long flops = DistilleryCpu.bf16DotPeak(ITERATIONS);
        if (flops != (long) ITERATIONS * CHAINS * 16 * 2 * 2) throw new IllegalStateException("the C chains did " + flops + " operations");
        return flops;
    }
}
