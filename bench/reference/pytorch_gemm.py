#!/usr/bin/python3
"""The PyTorch side of GemmBenchmark: C = op(A) op(B) through torch.mm on the CPU, fp32, for shapes
written as GemmBenchmark writes them (MxNxK:AB, A and B each N or T, row-major), so the GEMMs of a
training step can be set beside ours one by one.

    python3 bench/reference/pytorch_gemm.py 2 256x32000x384:NT 2048x1536x384:NN   # threads, shapes

Prints, per shape, the median of 20 timed calls (after 3 untimed) in ms and GFLOP/s, and which
BLAS torch was built with. Run with OPENBLAS_CORETYPE unset.
"""
import re
import sys
import time

import torch

threads, shapes = int(sys.argv[1]), sys.argv[2:]
torch.set_num_threads(threads)
blas = (re.findall(r"BLAS_INFO=(\w+)", torch.__config__.show()) or ["unknown"])[0]
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, BLAS {blas}")
for shape in shapes:
    dims, ops = shape.split(":")
    m, n, k = (int(x) for x in dims.split("x"))
    trans_a, trans_b = ops[0] == "T", ops[1] == "T"
    a = torch.randn(k, m).t() if trans_a else torch.randn(m, k)   # op(A) is (m, k) either way
    b = torch.randn(n, k).t() if trans_b else torch.randn(k, n)   # op(B) is (k, n) either way
    c = torch.empty(m, n)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    print(f"{shape:22s} {median * 1e3:8.2f} ms {2 * m * n * k / median / 1e9:6.0f} GFLOP/s")
