"""By-hand check with the real `transformers` (not a project test: the tests never need Python).
Opens a checkpoint and its `trainer.jar export` side by side with AutoModelForCausalLM and checks
that the export loads in the dtype its config names, and how far its logits are from the
checkpoint's on the first two windows of a token file (bf16 weights: about 2^-8 relative).

    python bench/reference/hf_open_export.py CHECKPOINT EXPORT TOKENS.bin

Needs transformers 5.x and torch 2.x (pip install --no-index --find-links DIR transformers torch).
"""
import argparse

import numpy as np
import torch
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("export")
p.add_argument("tokens", help="an llm.c .bin token file (uint16)")
a = p.parse_args()

full = AutoModelForCausalLM.from_pretrained(a.checkpoint).eval()
export = AutoModelForCausalLM.from_pretrained(a.export).eval()
header = np.fromfile(a.tokens, dtype=np.int32, count=256)
assert header[0] == 20240520 and header[1] == 1, "not an llm.c uint16 token file: " + a.tokens
window = min(64, full.config.max_position_embeddings)
x = torch.tensor(np.fromfile(a.tokens, dtype=np.uint16, offset=1024)[:2 * window].astype(np.int64)).view(2, window)
with torch.no_grad():
    reference = full(x).logits.float()
    as_loaded = export(x).logits.float()
    widened = export.float()(x).logits
print(f"1. the export loads as {next(AutoModelForCausalLM.from_pretrained(a.export).parameters()).dtype}")
print(f"2. logits on {tuple(reference.shape)}: max |checkpoint - export in its dtype| = {(reference - as_loaded).abs().max():.4g}, "
      f"widened to fp32 = {(reference - widened).abs().max():.4g}; "
      f"top-1 agreement {(reference.argmax(-1) == widened.argmax(-1)).float().mean():.1%}")
