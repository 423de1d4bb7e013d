#!/usr/bin/env bash
# Compiles src/main/c/rows_avx512.c and rows_avx2.c (the row kernels for two machines: the native
# rows of the fused distillation loss, docs/KERNELS.md#the-native-row, and the exps of drawing a
# token, docs/KERNELS.md#sampling-a-token) with their entry points distill_cpu.c and
# sample_rows.c, src/main/c/bf16_gemm.c (the GEMM of bf16 mixed precision,
# docs/KERNELS.md#bf16-gemm) and src/main/c/f32_gemm.c and f32_gemm_avx2.c (the fp32 GEMM on
# AVX-512 and on AVX2, docs/KERNELS.md#the-fp32-gemm) into the resource
# dev/distillery/cpu/linux-x86_64/libdistillery_cpu.so. Without a C compiler, or off Linux
# x86-64, it says so in one line and succeeds: the Java rows then run every row. Run by Maven
# (cpu/pom.xml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/target/classes/dev/distillery/cpu/linux-x86_64"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "cpu: not Linux x86-64 ($(uname -s)-$(uname -m)); no native loss rows, the Java rows run them all"
  exit 0
fi
cc="${CC:-}"
if [ -z "$cc" ]; then
  for c in gcc cc clang; do
    if command -v "$c" >/dev/null 2>&1; then cc="$(command -v "$c")"; break; fi
  done
fi
if [ -z "$cc" ]; then
  echo "cpu: no C compiler (set CC or install gcc); no native loss rows, the Java rows run them all"
  exit 0
fi
mkdir -p "$out"
# -ffp-contract=off: a multiply and an add stay two operations, as in the Java rows; the fused
# ones are written out. No -march: the kernels carry target attributes, checked at load time.
"$cc" -O2 -std=gnu11 -ffp-contract=off -fPIC -shared -Wall -Wextra -Werror \
  -o "$out/libdistillery_cpu.so" "$here/src/main/c/distill_cpu.c" "$here/src/main/c/rows_avx512.c" "$here/src/main/c/rows_avx2.c" \
  "$here/src/main/c/bf16_gemm.c" "$here/src/main/c/f32_gemm.c" "$here/src/main/c/f32_gemm_avx2.c" \
  "$here/src/main/c/sample_rows.c" -lm
echo "cpu: libdistillery_cpu.so ($(stat -c %s "$out/libdistillery_cpu.so") bytes) with $("$cc" --version | head -n 1)"
