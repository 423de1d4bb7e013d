#!/usr/bin/python3
"""A training step of PyTorch and of Distillery, a few steps of each in turn, both processes warm.

    paired_steps.py [--pairs 12] [--burst 2] [--warmup 20] [--threads 2] [--java JAVA] [--jar JAR] \\
                    [--torch-attention explicit|sdpa] [--ours-attention keep|recompute] CONFIG fp32|bf16 ce|distill

Starts pytorch_step.py --serve (under the Python running this script, with the environment it
was given: side_by_side.sh --paired gives it PyTorch's best setup) and Distillery's StepServer
(TrainingStepBenchmark's step; LD_PRELOAD and TCMALLOC_RELEASE_RATE taken out of its environment,
as its JMH runs have them). Distillery first runs --warmup steps for its JIT (PyTorch ran 5 of its
own before it said ready), then each pair runs --burst steps on one side and then on the other, the
order swapped every pair (ABBA), and the pair's ratio is PyTorch's burst median over Distillery's.
The sides of a pair ran within seconds of each other, so a machine whose speed drifts over minutes
(these shared machines drift by 1.5x within the hour) moves both; a ratio of two separate runs'
medians carries that drift in full.

Prints one line: "paired CONFIG PRECISION LOSS: pytorch P ms, distillery D ms, ratio R (quartiles
Q1-Q3, range LO-HI) over N pairs of K steps; threads torch T", P and D the medians of the bursts'
medians and R the median of the pairs' ratios (above 1: Distillery faster).

Not used by any test: a measurement, run by hand or by side_by_side.sh --paired.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Side:
    """A step server on pipes: says ready, then answers a step count with that many step times."""

    def __init__(self, name, command, env):
        self.name = name
        self.stderr = tempfile.TemporaryFile(mode="w+")   # shown if the side fails, kept off the table otherwise
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=env, cwd=ROOT)
        self.ready = self.proc.stdout.readline().strip()
        if not self.ready.startswith("ready"):
            self.proc.kill()
            self.fail(f"did not start ({' '.join(command)})")

    def fail(self, what):
        self.stderr.seek(0)
        sys.exit(f"paired_steps.py: {self.name} {what}:\n{self.stderr.read()[-4000:]}")

    def steps(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.fail(f"ended (exit {self.proc.wait()})")
        return [float(t) for t in line.split()]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("precision", choices=["fp32", "bf16"])
    p.add_argument("loss", choices=["ce", "distill"])
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--burst", type=int, default=2, help="steps of one side in a row")
    p.add_argument("--warmup", type=int, default=20, help="Distillery's steps before the pairs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--java", default=os.path.join(os.environ.get("JAVA_HOME", "/usr/lib/jvm/temurin-25-jdk-amd64"), "bin", "java"))
    p.add_argument("--jar", default=str(ROOT / "bench/target/benchmarks.jar"))
    p.add_argument("--torch-attention", default="explicit", choices=["explicit", "sdpa"])
    p.add_argument("--ours-attention", default="keep", choices=["keep", "recompute"])
    a = p.parse_args()
    if a.pairs < 2 or a.burst < 1:
        sys.exit("paired_steps.py: --pairs must be at least 2 and --burst at least 1")

    torch = Side("pytorch", [sys.executable, str(ROOT / "bench/reference/pytorch_step.py"), a.config, str(a.threads), "1",
                             a.precision, a.loss, "cpu", a.torch_attention, "--serve"], dict(os.environ))
    java_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TCMALLOC_RELEASE_RATE")}
    ours = Side("distillery", [a.java, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                               "-XX:-UseProfiledLoopPredicate", "-Xmx8g", "-XX:+UseSerialGC", "-cp", a.jar,
                               "dev.distillery.bench.StepServer", a.config, a.precision, a.loss, a.ours_attention, str(a.threads)],
                java_env)
    try:
        ours.steps(a.warmup)
        torch_ms, ours_ms, ratios = [], [], []
        for i in range(a.pairs):
            order = (torch, ours) if i % 2 == 0 else (ours, torch)
            burst = {side.name: statistics.median(side.steps(a.burst)) for side in order}
            torch_ms.append(burst["pytorch"])
            ours_ms.append(burst["distillery"])
            ratios.append(burst["pytorch"] / burst["distillery"])
    finally:
        torch.close()
        ours.close()
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    threads = torch.ready.rsplit("threads torch ", 1)[-1]
    print(f"paired {a.config} {a.precision} {a.loss}: pytorch {statistics.median(torch_ms):.1f} ms, distillery "
          f"{statistics.median(ours_ms):.1f} ms, ratio {statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f}, range "
          f"{min(ratios):.3f}-{max(ratios):.3f}) over {a.pairs} pairs of {a.burst} steps; threads torch {threads}")


if __name__ == "__main__":
    main()
