"""Tokenizer throughput, side by side: Hugging Face `tokenizers`' encode_batch against Distillery's
`tokenize` on the same documents, with the same number of threads, alternating round by round.

    python bench/reference/tokenize_side_by_side.py --jar trainer/target/trainer.jar --threads 2 [--mb 50] [--rounds 3]

The corpus is the bundled State of the Union text cut into ~4 KB documents and repeated to --mb MB,
written once as a .jsonl file that both sides read. The tokenizer is GPT-2's byte-level BPE as a
tokenizer.json (built from the r50k ranks; the test fixture gpt2-tokenizer.json.gz). Python's time
is encode_batch alone (the documents already in memory); Distillery's is the whole command (JVM
start, reading, encoding, writing the token file). Both write or hold the same ids: the script
checks it. Needs tokenizers and numpy (pip install --no-index --find-links DIR tokenizers numpy).
"""
import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--jar", required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--mb", type=float, default=50)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--java", default=os.path.join(os.environ.get("JAVA_HOME", "/usr/lib/jvm/temurin-25-jdk-amd64"), "bin", "java"))
a = ap.parse_args()
os.environ["RAYON_NUM_THREADS"] = str(a.threads)   # tokenizers' thread pool, read when it first starts
os.environ["TOKENIZERS_PARALLELISM"] = "true"
from tokenizers import Tokenizer  # noqa: E402  (after the thread settings)

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
res = os.path.join(root, "trainer", "src", "main", "resources", "dev", "distillery", "trainer", "corpus", "sotu-1982-2021.txt.gz")
fixture = os.path.join(root, "trainer", "src", "test", "resources", "dev", "distillery", "trainer", "tokenizer", "gpt2-tokenizer.json.gz")
work = tempfile.mkdtemp(prefix="tokenize-bench-")
tok_json = os.path.join(work, "tokenizer.json")
with gzip.open(fixture, "rt", encoding="utf-8") as f, open(tok_json, "w", encoding="utf-8") as g:
    g.write(f.read())
text = gzip.open(res, "rt", encoding="utf-8").read()
docs, cur = [], []
for para in text.split("\n\n"):
    cur.append(para)
    if sum(map(len, cur)) > 4000:
        docs.append("\n\n".join(cur))
        cur = []
docs += ["\n\n".join(cur)] if cur else []
reps = max(1, int(a.mb * 1e6 / len(text.encode())))
docs = docs * reps
corpus = os.path.join(work, "corpus.jsonl")
with open(corpus, "w", encoding="utf-8") as f:
    for d in docs:
        f.write(json.dumps({"text": d}) + "\n")
mb = os.path.getsize(corpus) / 1e6
tok = Tokenizer.from_file(tok_json)
eos = tok.token_to_id("<|endoftext|>")


def python_round():
    t0 = time.perf_counter()
    enc = tok.encode_batch(docs, add_special_tokens=False)
    return time.perf_counter() - t0, enc


def java_round(spec, out):
    t0 = time.perf_counter()
    subprocess.run([a.java, "-jar", a.jar, "tokenize", "--tokenizer", spec, "--corpus", corpus, "--out", out,
                    "--val-fraction", "0", "--threads", str(a.threads)], check=True, capture_output=True)
    return time.perf_counter() - t0


def read(path):
    b = open(path, "rb").read()
    h = np.frombuffer(b[:1024], dtype=np.int32)
    return np.frombuffer(b[1024:], dtype=np.uint16 if h[0] == 20240520 else np.uint32)[: h[2]]


times = {"tokenizers encode_batch (Python)": [], "tokenize, tokenizer.json (DJL)": [], "tokenize, gpt2 (jtokkit)": []}
reference = None
for r in range(a.rounds):
    t, enc = python_round()
    times["tokenizers encode_batch (Python)"].append(t)
    if reference is None:
        reference = np.concatenate([np.append(np.asarray(e.ids, dtype=np.int64), eos) for e in enc])
    for label, spec in [("tokenize, tokenizer.json (DJL)", tok_json), ("tokenize, gpt2 (jtokkit)", "gpt2")]:
        out = os.path.join(work, "out-" + spec.replace("/", "_"))
        times[label].append(java_round(spec, out))
        ids = read(os.path.join(out, "train.bin"))
        if not np.array_equal(ids.astype(np.int64), reference):
            sys.exit(f"{label}: the ids differ from tokenizers' ({len(ids)} against {len(reference)})")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"{cpu}; {a.threads} threads; {mb:.1f} MB of .jsonl, {len(docs):,} documents, {len(reference):,} tokens; "
      f"median of {a.rounds} rounds; ids identical")
base = statistics.median(times["tokenizers encode_batch (Python)"])
print(f"{'':34s} {'seconds':>8s} {'MB/s':>7s} {'Mtokens/s':>10s} {'vs Python':>10s}")
for label, ts in times.items():
    m = statistics.median(ts)
    print(f"{label:34s} {m:8.2f} {mb / m:7.1f} {len(reference) / m / 1e6:10.2f} {base / m:9.2f}x")
