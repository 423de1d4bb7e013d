"""Teacher top-k dumping, side by side: `transformers` (forward, top-k and logsumexp under
torch.inference_mode, nothing written) against `trainer.jar teacher dump-logits` (the whole
command: JVM start, model load, forward, top-k, logsumexp, the shard written and hashed), on the
same model, windows and threads, alternating round by round.

    python bench/reference/dump_logits_side_by_side.py --jar trainer/target/trainer.jar MODEL_DIR TOKENS.bin \
        [--seq-len 128] [--sequences 256] [--k 64] [--threads 2] [--rounds 3]

Run with OPENBLAS_CORETYPE unset. Needs transformers 5.x and torch 2.x.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--jar", required=True)
ap.add_argument("--java", default=os.path.join(os.environ.get("JAVA_HOME", "/usr/lib/jvm/temurin-25-jdk-amd64"), "bin", "java"))
ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--sequences", type=int, default=256)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--k", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("model")
ap.add_argument("tokens")
a = ap.parse_args()
torch.set_num_threads(a.threads)
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
head = np.fromfile(a.tokens, dtype=np.int32, count=256)
ids = np.fromfile(a.tokens, dtype=np.uint16 if head[0] == 20240520 else np.uint32, offset=1024)[: head[2]]
windows = torch.from_numpy(ids[: a.sequences * a.seq_len].reshape(a.sequences, a.seq_len).astype(np.int64))
n_tokens = windows.numel()
work = tempfile.mkdtemp(prefix="dump-bench-")


def python_round():
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, a.sequences, a.batch):
            logits = model(windows[i:i + a.batch]).logits
            logits.topk(a.k, dim=-1)
            logits.logsumexp(-1)
    return time.perf_counter() - t0


def java_round():
    out = os.path.join(work, "shards")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([a.java, "-jar", a.jar, "teacher", "dump-logits", "--teacher", a.model, "--tokens", a.tokens, "--out", out,
                    "--targets", "topk", "--k", str(a.k), "--seq-len", str(a.seq_len), "--max-sequences", str(a.sequences),
                    "--batch", str(a.batch), "--threads", str(a.threads), "--device", "cpu"], check=True, capture_output=True,
                   env={**os.environ, "DISTILLERY_OPENBLAS": os.environ.get("DISTILLERY_OPENBLAS", "bundled")})
    return time.perf_counter() - t0


times = {"transformers forward + top-k (Python)": [], "dump-logits, whole command": []}
for _ in range(a.rounds):
    times["transformers forward + top-k (Python)"].append(python_round())
    times["dump-logits, whole command"].append(java_round())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"{cpu}; {a.threads} threads; {model.config.model_type}, vocab {model.config.vocab_size}; {a.sequences} x {a.seq_len} tokens, "
      f"top-{a.k}; median of {a.rounds}")
base = statistics.median(times["transformers forward + top-k (Python)"])
for label, ts in times.items():
    m = statistics.median(ts)
    print(f"{label:40s} {m:7.2f} s {n_tokens / m:9,.0f} tokens/s {base / m:6.2f}x")
