"""Greedy generation, side by side: `transformers`' generate (KV cache, torch.inference_mode) against
`trainer.jar generate --temperature 0` on the same checkpoint, from the same start token, for the same
number of new tokens, at the same threads, alternating round by round. Distillery's figure is the
one it prints (the sampling loop only: after the JVM start and the model load); transformers' is
timed around generate alone, the same span.

    python bench/reference/generate_side_by_side.py --jar trainer/target/trainer.jar CHECKPOINT [--tokens 200] [--threads 2] [--rounds 3]

Run with OPENBLAS_CORETYPE unset. Needs transformers 5.x and torch 2.x.
"""
import argparse
import os
import re
import statistics
import subprocess
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--jar", required=True)
ap.add_argument("--java", default=os.path.join(os.environ.get("JAVA_HOME", "/usr/lib/jvm/temurin-25-jdk-amd64"), "bin", "java"))
ap.add_argument("--tokens", type=int, default=200)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("checkpoint")
a = ap.parse_args()
torch.set_num_threads(a.threads)
model = AutoModelForCausalLM.from_pretrained(a.checkpoint, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(a.checkpoint)
start = tok.bos_token_id if model.config.model_type != "gpt2" and tok.bos_token_id is not None else tok.eos_token_id


def python_round():
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(torch.tensor([[start]]), max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False,
                       pad_token_id=tok.eos_token_id)
        return a.tokens / (time.perf_counter() - t0)


def java_round():
    out = subprocess.run([a.java, "-jar", a.jar, "generate", "--model", a.checkpoint, "--tokens", str(a.tokens), "--temperature", "0",
                          "--threads", str(a.threads), "--device", "cpu"], check=True, capture_output=True, text=True,
                         env={**os.environ, "DISTILLERY_OPENBLAS": os.environ.get("DISTILLERY_OPENBLAS", "bundled")}).stdout
    return float(re.search(r"([0-9.]+) tokens/s", out).group(1))


rates = {"transformers generate (KV cache)": [], "trainer.jar generate": []}
for _ in range(a.rounds):
    rates["transformers generate (KV cache)"].append(python_round())
    rates["trainer.jar generate"].append(java_round())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"{cpu}; {a.threads} threads; {model.config.model_type}, vocab {model.config.vocab_size}; {a.tokens} new tokens, greedy; median of {a.rounds}")
base = statistics.median(rates["transformers generate (KV cache)"])
for label, r in rates.items():
    m = statistics.median(r)
    print(f"{label:36s} {m:9,.1f} tokens/s {m / base:6.2f}x")
