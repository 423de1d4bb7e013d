"""Makes PythonShardsTest's fixtures with trainer/src/main/python/distillery_shards.py (numpy only):
shards of random logits written the way a user's script writes them, and the raw logits they come
from, so the JUnit suite checks the Python writer against the Java reader and writer.

    python python_shards_fixture.py OUT_DIR     # made with numpy 2.4

OUT_DIR/raw.safetensors: input_ids I32 [5, 6], logits F32 [5, 6, 50]; dense-bf16/, topk-bf16/ (k 4 at
temperature 2), sampled/ (4 samples a position) written by ShardWriter, 2 sequences a shard;
int64-ids/ (input_ids I64 as torch writes them, manifest dtype "bfloat16") and bf16-logsumexp/
written around the writer, as a script that skips it would.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "main", "python"))
from distillery_shards import ShardWriter, topk_targets, _write_safetensors, _sha256, _to_bf16_bits  # noqa: E402

out = sys.argv[1]
rng = np.random.default_rng(20261202)
S, T, V, K = 5, 6, 50, 4
ids = rng.integers(0, V, size=(S, T)).astype(np.int32)
logits = (rng.standard_normal((S, T, V)) * 3).astype(np.float32)
os.makedirs(out, exist_ok=True)
_write_safetensors(os.path.join(out, "raw.safetensors"), {"input_ids": ("I32", ids.shape, ids.tobytes()), "logits": ("F32", logits.shape, logits.tobytes())})

common = dict(vocab_size=V, seq_len=T, tokenizer="test", teacher="random", sequences_per_shard=2, overwrite=True)
with ShardWriter(os.path.join(out, "dense-bf16"), targets="dense", dtype="bf16", **common) as w:
    w.add(ids[:3], logits=logits[:3])
    w.add(ids[3:], logits=logits[3:])
with ShardWriter(os.path.join(out, "topk-bf16"), targets="topk", k=K, dtype="bf16", temperature=2.0, **common) as w:
    w.add(ids, **topk_targets(logits, k=K, temperature=2.0))
p = np.exp(logits - logits.max(-1, keepdims=True))
p /= p.sum(-1, keepdims=True)
sampled = np.stack([[rng.choice(V, size=K, p=p[s, t]) for t in range(T)] for s in range(S)]).astype(np.int32)
with ShardWriter(os.path.join(out, "sampled"), targets="sampled", k=K, **common) as w:
    w.add(ids, sampled_ids=sampled, sampled_weights=np.full((S, T, K), 1 / K, dtype=np.float32))


def by_hand(name, tensors, dtype):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    _write_safetensors(os.path.join(d, "shard-00000.safetensors"), tensors)
    json.dump({"format_version": 1, "vocab_size": V, "seq_len": T, "targets": "dense" if "logits" in tensors else "topk",
               "k": 0 if "logits" in tensors else K, "dtype": dtype, "temperature": 1.0, "tokenizer": "test", "teacher": "random",
               "shards": [{"file": "shard-00000.safetensors", "sequences": S, "sha256": _sha256(os.path.join(d, "shard-00000.safetensors"))}]},
              open(os.path.join(d, "manifest.json"), "w"), indent=2)


ids64 = ids.astype(np.int64)
by_hand("int64-ids", {"input_ids": ("I64", ids.shape, ids64.tobytes()), "logits": ("BF16", logits.shape, _to_bf16_bits(logits).tobytes())}, "bfloat16")
top = topk_targets(logits, k=K)
by_hand("bf16-logsumexp", {"input_ids": ("I32", ids.shape, ids.tobytes()), "topk_ids": ("I32", top["topk_ids"].shape, top["topk_ids"].tobytes()),
                           "topk_logits": ("BF16", top["topk_logits"].shape, _to_bf16_bits(top["topk_logits"]).tobytes()),
                           "logsumexp": ("BF16", top["logsumexp"].shape, _to_bf16_bits(top["logsumexp"]).tobytes())}, "bf16")
print("written", sorted(os.listdir(out)))
