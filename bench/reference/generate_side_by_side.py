"""Greedy generation, side by side: `transformers`' generate (KV cache, torch.inference_mode) against
Distillery's on the same checkpoint, from the same start token, for the same number of new tokens,
at the same threads, alternating round by round. Two rows each:

  first run   one generation in a fresh process, timed after the model is loaded: what a user
              who runs `trainer.jar generate` once sees (Distillery's is the rate it prints, which
              includes the JIT compiling the decode path; transformers' is its first generate call
              in a fresh Python)
  warm        generations after a warm-up: transformers' later calls in one process, Distillery's
              GenerationBenchmark (JMH: warm-up iterations, then the mean of the timed ones)

and the seconds of the whole first-run process, start to exit, as a user waits for it: Python's
imports of torch and transformers, the model's load and the generation, against `trainer.jar
generate` (its JVMs' start, the load, the generation with the JIT compiling it).

    python bench/reference/generate_side_by_side.py --jar trainer/target/trainer.jar \
        --bench-jar bench/target/benchmarks.jar CHECKPOINT [--tokens 200] [--threads 2] [--rounds 3]

Run with OPENBLAS_CORETYPE unset. Needs transformers 5.x and torch 2.x.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--jar", required=True)
ap.add_argument("--bench-jar", required=True)
ap.add_argument("--java", default=os.path.join(os.environ.get("JAVA_HOME", "/usr/lib/jvm/temurin-25-jdk-amd64"), "bin", "java"))
ap.add_argument("--tokens", type=int, default=200)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--first-run-only", action="store_true", help=argparse.SUPPRESS)   # the child process of a transformers first run
ap.add_argument("checkpoint")
a = ap.parse_args()

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(a.threads)
model = AutoModelForCausalLM.from_pretrained(a.checkpoint, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(a.checkpoint)
start = tok.bos_token_id if model.config.model_type != "gpt2" and tok.bos_token_id is not None else tok.eos_token_id


def python_generation():
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(torch.tensor([[start]]), max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False,
                       pad_token_id=tok.eos_token_id)
        return a.tokens / (time.perf_counter() - t0)


if a.first_run_only:
    print(python_generation())
    sys.exit(0)

env = {**os.environ, "DISTILLERY_OPENBLAS": os.environ.get("DISTILLERY_OPENBLAS", "bundled")}


def timed(command, **kw):
    """The command's standard output and its seconds from start to exit."""
    t0 = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True, **kw).stdout
    return out, time.perf_counter() - t0


def python_first_run():
    out, seconds = timed([sys.executable, __file__, "--jar", a.jar, "--bench-jar", a.bench_jar, "--tokens", str(a.tokens),
                          "--threads", str(a.threads), "--first-run-only", a.checkpoint])
    return float(out.strip().splitlines()[-1]), seconds


def java_first_run():
    out, seconds = timed([a.java, "-jar", a.jar, "generate", "--model", a.checkpoint, "--tokens", str(a.tokens), "--temperature", "0",
                          "--threads", str(a.threads), "--device", "cpu"], env=env)
    return float(re.search(r"([0-9.]+) tokens/s", out).group(1)), seconds


def java_warm():
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        subprocess.run([a.java, "-jar", a.bench_jar, "GenerationBenchmark", "-p", "model=" + os.path.abspath(a.checkpoint),
                        "-p", f"tokens={a.tokens}", "-p", f"threads={a.threads}", "-f", "1", "-wi", "3", "-i", "5",
                        "-rf", "json", "-rff", result.name], check=True, capture_output=True, text=True, env=env)
        ms = json.load(open(result.name))[0]["primaryMetric"]["score"]
        return a.tokens / (ms / 1e3)


python_generation()   # this process's warm-up
rates = {k: [] for k in ["transformers, first run", "trainer.jar generate, first run", "transformers, warm", "Distillery, warm (JMH)"]}
walls = {k: [] for k in ["transformers script, whole process", "trainer.jar generate, whole process"]}
for _ in range(a.rounds):
    for (rate, wall), label, whole in [(python_first_run(), "transformers, first run", "transformers script, whole process"),
                                       (java_first_run(), "trainer.jar generate, first run", "trainer.jar generate, whole process")]:
        rates[label].append(rate)
        walls[whole].append(wall)
    rates["transformers, warm"].append(python_generation())
    rates["Distillery, warm (JMH)"].append(java_warm())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"{cpu}; {a.threads} threads; {model.config.model_type}, vocab {model.config.vocab_size}; {a.tokens} new tokens, greedy; "
      f"median of {a.rounds}; ratios against transformers in the same row kind")
for label, r in rates.items():
    m = statistics.median(r)
    base = statistics.median(rates["transformers, first run" if "first" in label else "transformers, warm"])
    print(f"{label:34s} {m:10,.1f} tokens/s {m / base:7.2f}x   (rounds: {', '.join(f'{x:,.0f}' for x in r)})")
base = statistics.median(walls["transformers script, whole process"])
for label, w in walls.items():
    m = statistics.median(w)
    print(f"{label:34s} {m:10,.2f} s        {base / m:7.2f}x   (rounds: {', '.join(f'{x:,.2f}' for x in w)})")
