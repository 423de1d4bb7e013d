#!/usr/bin/python3
"""The PyTorch side of the training-step comparison in the README.

The same GPT-2 student as Distillery's Transformer (learned positions, pre-LN blocks, 4x GELU
MLP with the tanh approximation, tied LM head), one full step: forward, cross-entropy, backward,
clip to 1.0, AdamW. Prints the median step time over the measured steps.

    python3 bench/reference/pytorch_step.py A 2 10 bf16 ce cpu sdpa   # config, threads, steps, fp32|bf16, ce|distill, cpu|cuda,
                                                                     # explicit|sdpa

bf16 is PyTorch's mixed precision: forward and loss under torch.autocast(device, dtype=torch.bfloat16)
(bf16 matmuls, fp32 weights, gradients and AdamW). On cuda the model, data and teacher live on GPU 0,
fp32 matmuls stay IEEE fp32 (no TF32, as Distillery's fp32 cuBLAS GEMMs), and each step ends with
torch.cuda.synchronize() so that its time holds all of its GPU work.
distill is a distillation step against a dense bf16 teacher of random logits: 0.5 CE +
0.5 T^2 KL(softmax(t/T) || softmax(s/T)) at T = 2 (DistillKit's composition: log_softmax of both,
kl_div with log_target), as Distillery's TrainingStepBenchmark -p loss=distill.

Attention is written out (scores, mask, softmax, product: nanoGPT's slow path, which keeps the
(b, heads, t, t) probabilities for the backward) or, with sdpa, F.scaled_dot_product_attention with
is_causal (PyTorch's fused attention: flash attention on the CPU, no probabilities kept). The
written-out form is the faster at configs A and B, sdpa at config L's 2,048 tokens
(docs/PERFORMANCE.md, "Attention without kept probabilities").

With --serve (anywhere among the arguments) it builds the same step, runs its 5 warm-up steps,
says "ready ..." on a line, then reads lines from stdin: a count N runs N steps and prints their
times in ms on one line; end of input ends it. bench/reference/paired_steps.py drives it beside
Distillery's step (dev.distillery.bench.StepServer), a few steps of each side in turn.

Not used by any test: it is the baseline, run by hand beside `StepProfile`/JMH.
"""
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {  # vocab, ctx, layers, d, heads, batch
    "A": (4096, 128, 4, 256, 4, 8),
    "B": (32000, 256, 6, 384, 6, 8),
    "L": (32000, 2048, 6, 384, 6, 1),   # B's model over a long context
}
SDPA = False


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        if SDPA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / (k.shape[-1] ** 0.5)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            y = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        y = y.transpose(1, 2).reshape(b, t, d)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, layers, d, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


def main():
    serve = "--serve" in sys.argv
    if serve:
        sys.argv.remove("--serve")
    name = sys.argv[1] if len(sys.argv) > 1 else "A"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    precision = sys.argv[4] if len(sys.argv) > 4 else "fp32"
    if precision not in ("fp32", "bf16"):
        sys.exit(f"precision must be fp32 or bf16, got {precision}")
    objective = sys.argv[5] if len(sys.argv) > 5 else "ce"
    if objective not in ("ce", "distill"):
        sys.exit(f"loss must be ce or distill, got {objective}")
    device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
    if device not in ("cpu", "cuda"):
        sys.exit(f"device must be cpu or cuda, got {device}")
    attention = sys.argv[7] if len(sys.argv) > 7 else "explicit"
    if attention not in ("explicit", "sdpa"):
        sys.exit(f"attention must be explicit or sdpa, got {attention}")
    global SDPA
    SDPA = attention == "sdpa"
    if SDPA and not hasattr(F, "scaled_dot_product_attention"):
        sys.exit(f"torch {torch.__version__} has no scaled_dot_product_attention (torch 2.0 and later)")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)   # values drifting into denormals slow a step several times (docs/PERFORMANCE.md)
    torch.manual_seed(0)
    vocab, ctx, layers, d, heads, batch = CONFIGS[name]
    model = GPT(vocab, ctx, layers, d, heads).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    x = torch.randint(0, vocab, (batch, ctx), device=device)
    y = torch.randint(0, vocab, (batch, ctx), device=device)
    teacher = (4 * torch.randn(batch * ctx, vocab, device=device)).to(torch.bfloat16) if objective == "distill" else None
    T = 2.0

    def step():   # one step; its time in seconds
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x).view(-1, vocab)
            loss = F.cross_entropy(logits, y.view(-1))
            if teacher is not None:
                kl = F.kl_div(F.log_softmax(logits.float() / T, dim=-1), F.log_softmax(teacher.float() / T, dim=-1),
                              log_target=True, reduction="batchmean")
                loss = 0.5 * loss + 0.5 * T * T * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(5):
        step()
    where = torch.cuda.get_device_name() if device == "cuda" else f"{threads} threads"
    if serve:
        print(f"ready pytorch {torch.__version__} config {name} {precision} {objective} {attention} attention, {where}; "
              f"threads torch {torch.get_num_threads()}", flush=True)
        for line in sys.stdin:
            print(" ".join(f"{step() * 1000:.3f}" for _ in range(int(line))), flush=True)
        return
    times = [step() for _ in range(steps)]
    ms = statistics.median(times) * 1000
    print(f"pytorch {torch.__version__} config {name} {precision} {objective} {attention} attention, {where}: median {ms:.1f} ms/step, "
          f"{batch * ctx / ms * 1000:.0f} tokens/s (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}); threads torch "
          f"{torch.get_num_threads()}")


if __name__ == "__main__":
    main()
