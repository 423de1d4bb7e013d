#!/usr/bin/python3
"""The PyTorch side of the fused-loss comparison: forward KL at T = 2 with alpha 0.5 hard-label
CE and T^2 scaling, loss and d(loss)/d(student logits), as DistillLossBenchmark.fused computes.

    python3 bench/reference/pytorch_loss.py 2048x32000 dense-bf16 2 8 cpu   # shape, teacher, threads, calls, cpu|cuda
    python3 bench/reference/pytorch_loss.py 2048x32000 dense-bf16 2 8 cpu jsd   # or reverse-kl; dense teachers only

reverse-kl: sum q (log q - log p). jsd: JSD(0.5) = 0.5 KL(p||m) + 0.5 KL(q||m), m = (p + q) / 2, in
the form TRL's GKDTrainer.generalized_jsd_loss computes it (the mixture's log by logsumexp of the
two log-softmaxes, then two kl_div); both with the same CE and T^2 as forward KL.

dense-bf16: the teacher's logits stored in bf16, widened to fp32 in the step. top64: the teacher's
top-64 ids and logits (bf16) with its full-vocabulary logsumexp at T, the missing mass a tail
bucket (Distillery's default for top-k). The best plain-PyTorch form: log_softmax once, no
one-hot, the tail from the student's listed mass. Prints the median of the timed calls, their
min and max, and the threads torch and its BLAS use. On cuda the tensors live on GPU 0 and each
call ends with torch.cuda.synchronize().
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

T, ALPHA, K = 2.0, 0.5, 64


def dense_loss(s, t, y):
    log_q = F.log_softmax(s / T, dim=-1)
    log_p = F.log_softmax(t.float() / T, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean() * T * T
    return ALPHA * F.cross_entropy(s, y) + (1 - ALPHA) * kl


def dense_reverse_kl_loss(s, t, y):
    log_q = F.log_softmax(s / T, dim=-1)
    log_p = F.log_softmax(t.float() / T, dim=-1)
    rkl = (log_q.exp() * (log_q - log_p)).sum(-1).mean() * T * T
    return ALPHA * F.cross_entropy(s, y) + (1 - ALPHA) * rkl


def dense_jsd_loss(s, t, y, beta=0.5):
    log_q = F.log_softmax(s / T, dim=-1)
    log_p = F.log_softmax(t.float() / T, dim=-1)
    b = torch.tensor(beta, dtype=log_q.dtype, device=log_q.device)
    log_m = torch.logsumexp(torch.stack([log_q + torch.log(1 - b), log_p + torch.log(b)]), dim=0)
    kl_teacher = F.kl_div(log_m, log_p, reduction="none", log_target=True)
    kl_student = F.kl_div(log_m, log_q, reduction="none", log_target=True)
    jsd = (beta * kl_teacher + (1 - beta) * kl_student).sum(-1).mean() * T * T
    return ALPHA * F.cross_entropy(s, y) + (1 - ALPHA) * jsd


def topk_loss(s, ids, tl, lse, y):
    log_q = F.log_softmax(s / T, dim=-1)
    log_q_k = log_q.gather(1, ids)
    log_p_k = tl.float() / T - lse[:, None]
    p_k = log_p_k.exp()
    p_tail = (1 - p_k.sum(-1)).clamp_min(1e-30)
    q_tail = (1 - log_q_k.exp().sum(-1)).clamp_min(1e-30)
    kl = (p_k * (log_p_k - log_q_k)).sum(-1) + p_tail * (p_tail.log() - q_tail.log())
    return ALPHA * F.cross_entropy(s, y) + (1 - ALPHA) * kl.mean() * T * T


def main():
    n, v = (int(x) for x in sys.argv[1].split("x"))
    teacher = sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    device = sys.argv[5] if len(sys.argv) > 5 else "cpu"
    divergence = sys.argv[6] if len(sys.argv) > 6 else "forward-kl"
    if device not in ("cpu", "cuda"):
        sys.exit(f"device must be cpu or cuda, got {device}")
    dense = {"forward-kl": dense_loss, "reverse-kl": dense_reverse_kl_loss, "jsd": dense_jsd_loss}
    if divergence not in dense or divergence != "forward-kl" and teacher != "dense-bf16":
        sys.exit(f"divergence must be forward-kl, or reverse-kl or jsd with a dense-bf16 teacher; got {divergence} ({teacher})")
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)   # values drifting into denormals slow a step several times (docs/PERFORMANCE.md)
    g = torch.Generator(device).manual_seed(7)
    s = (3 * torch.randn(n, v, generator=g, device=device)).requires_grad_()
    y = torch.randint(0, v, (n,), generator=g, device=device)
    t = (3 * torch.randn(n, v, generator=g, device=device)).to(torch.bfloat16)
    if teacher == "top64":
        tl, ids = t.float().topk(K, dim=-1)
        lse = torch.logsumexp(t.float() / T, dim=-1)
        tl = tl.to(torch.bfloat16)
        del t
        fn = lambda: topk_loss(s, ids, tl, lse, y)
    else:
        fn = lambda: dense[divergence](s, t, y)
    times = []
    for i in range(2 + calls):
        s.grad = None
        t0 = time.perf_counter()
        fn().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    print(f"pytorch {torch.__version__} loss {sys.argv[1]} {teacher} {divergence}: median {ms:.1f} ms (min {min(times) * 1000:.1f}, "
          f"max {max(times) * 1000:.1f}); threads torch {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
