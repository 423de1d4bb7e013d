"""Makes the fixture of PythonShardsTest's comparison with `teacher dump-logits`: top-8 shards
of the tiny Llama (hf/llama-tiny) written by trainer/src/main/python/examples/hf_topk_shards.py,
as a user would run it, for the token windows of hf/llama-tiny-logits.safetensors.

    python hf_example_shards_fixture.py RESOURCES_DIR     # made with transformers 5.17, torch 2.13 (CPU)

RESOURCES_DIR is trainer/src/test/resources/dev/distillery/trainer; writes
python-shards/llama-tiny-windows.bin (llm.c uint16 tokens: 3 windows of 24) and
python-shards/llama-tiny-topk8/ (manifest.json, one shard).
"""
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

res = sys.argv[1]
ids = load_file(os.path.join(res, "hf", "llama-tiny-logits.safetensors"))["input_ids"].reshape(-1)
tokens = os.path.join(res, "python-shards", "llama-tiny-windows.bin")
header = np.zeros(256, dtype=np.int32)
header[:3] = (20240520, 1, len(ids))
with open(tokens, "wb") as f:
    f.write(header.tobytes())
    f.write(ids.astype(np.uint16).tobytes())
example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "main", "python", "examples", "hf_topk_shards.py")
subprocess.run([sys.executable, example, os.path.join(res, "hf", "llama-tiny"), tokens,
                os.path.join(res, "python-shards", "llama-tiny-topk8"), "8", "24"], check=True)
