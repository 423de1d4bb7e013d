#!/usr/bin/python3
"""PyTorch's side of `trainer.jar teacher train`: the same GPT-2 trained the same way, for held-out
perplexities to set beside Distillery's.

The model is pytorch_step.py's (learned positions, pre-LN blocks, tanh GELU, tied LM head), and
everything around it follows LanguageModelTraining: GPT-2's initialisation (normal 0.02, the two
residual projections 0.02 / sqrt(2 layers), zero biases, unit norm weights); AdamW with betas
(0.9, 0.95), eps 1e-8 and weight decay 0.1 on the matrices only; linear warm-up to --lr, then a
cosine to lr / 10 at the last step; gradients clipped to norm 1; each step `batch` windows of
context + 1 tokens at uniform random offsets of the training file; held-out perplexity over 16
batches of consecutive windows from the start of the held-out file, at every --eval-every steps
and at the end. The data order and the initial weights come from torch's generator, not ours, so
the runs agree in distribution, not in bits: compare over several seeds.

    python3 bench/reference/pytorch_train.py --tokens train.bin --val val.bin --vocab 1024 --context 64 \
        --layers 4 --channels 192 --heads 6 --batch 16 --steps 600 --lr 2e-3 --warmup 30 [--precision bf16] [--seed S]

bf16 is torch.autocast on the CPU (bf16 matmuls; fp32 weights, gradients and AdamW). Prints one
line per evaluation, `step N perplexity P`. Not used by any test.
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_step import GPT  # noqa: E402  (the model of the step comparison)

MAGIC = 20240520


def tokens(path):
    """An llm.c token file: 256 int32 of header (magic, version 1 uint16 or 2 uint32, count), then the tokens."""
    header = np.fromfile(path, dtype=np.int32, count=256)
    if header.size < 256 or header[0] != MAGIC:
        sys.exit(f"{path}: not an llm.c token file (magic {header[0] if header.size else 'missing'}, expected {MAGIC})")
    dtype = {1: np.uint16, 2: np.uint32}.get(int(header[1]))
    if dtype is None:
        sys.exit(f"{path}: token file version {header[1]}, expected 1 (uint16) or 2 (uint32)")
    data = np.fromfile(path, dtype=dtype, offset=256 * 4)
    if data.size != header[2]:
        sys.exit(f"{path}: header says {header[2]} tokens, the file holds {data.size}")
    return torch.from_numpy(data.astype(np.int64))


def initialise(model, layers):
    residual = 0.02 / math.sqrt(2 * layers)
    for name, p in model.named_parameters():
        if "ln_" in name and name.endswith(".weight"):   # ln_1, ln_2, ln_f: the LayerNorms
            torch.nn.init.ones_(p)
        elif name.endswith(".bias"):
            torch.nn.init.zeros_(p)
        else:
            torch.nn.init.normal_(p, std=residual if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02)


def lr_at(step, lr, warmup, total):
    if step <= warmup:
        return lr * step / warmup
    if step >= total:
        return lr / 10
    progress = (step - warmup) / max(1, total - warmup)
    return lr / 10 + 0.5 * (lr - lr / 10) * (1 + math.cos(math.pi * progress))


def perplexity(model, val, batch, t, batches, precision):
    available = (val.numel() - 1) // t
    batches = min(batches, available // batch)
    total = 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for i in range(batches):
            w = torch.stack([val[(i * batch + b) * t:(i * batch + b) * t + t + 1] for b in range(batch)])
            logits = model(w[:, :-1]).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1)).item()
    return math.exp(total / batches)


def main():
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--tokens", required=True)
    a.add_argument("--val", required=True)
    a.add_argument("--vocab", type=int, required=True)
    a.add_argument("--context", type=int, default=128)
    a.add_argument("--layers", type=int, default=6)
    a.add_argument("--channels", type=int, default=384)
    a.add_argument("--heads", type=int, default=6)
    a.add_argument("--batch", type=int, default=8)
    a.add_argument("--steps", type=int, default=1000)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--warmup", type=int, default=50)
    a.add_argument("--eval-every", type=int, default=0)
    a.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    a.add_argument("--seed", type=int, default=1234)
    a.add_argument("--threads", type=int, default=2)
    o = a.parse_args()
    torch.set_num_threads(o.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(o.seed)
    train, val = tokens(o.tokens), tokens(o.val)
    if int(max(train.max(), val.max())) >= o.vocab:
        sys.exit(f"a token id is outside the vocabulary of {o.vocab}")
    t = o.context
    model = GPT(o.vocab, t, o.layers, o.channels, o.heads)
    initialise(model, o.layers)
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                            lr=o.lr, betas=(0.9, 0.95), eps=1e-8)
    for step in range(1, o.steps + 1):
        offsets = (torch.rand(o.batch, dtype=torch.float64) * (train.numel() - t)).long()
        w = torch.stack([train[s:s + t + 1] for s in offsets.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o.lr, o.warmup, o.steps)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=o.precision == "bf16"):
            logits = model(w[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, o.vocab), w[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (o.eval_every > 0 and step % o.eval_every == 0) or step == o.steps:
            model.eval()
            print(f"step {step} loss {loss.item():.4f} perplexity {perplexity(model, val, o.batch, t, 16, o.precision):.3f}", flush=True)
            model.train()


if __name__ == "__main__":
    main()
