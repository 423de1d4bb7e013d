#!/usr/bin/env bash
# Compiles src/main/cuda/distillery.cu (which includes every kernel file) into one fatbin
# (sm_80, sm_86, sm_89, sm_90 + compute_90 PTX) with `ptxas -v`, puts it in the jar as the
# resource dev/distillery/cuda/distillery.fatbin, keeps the ptxas report, and fails on any register
# spill. Without nvcc it says so in one line and succeeds: the jar is then CPU-only. Run by Maven
# (cuda/pom.xml).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/target/classes/dev/distillery/cuda"
nvcc="${NVCC:-}"
if [ -z "$nvcc" ]; then
  if command -v nvcc >/dev/null 2>&1; then nvcc="$(command -v nvcc)"
  elif [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc
  fi
fi
if [ -z "$nvcc" ]; then
  echo "cuda: nvcc not found (set NVCC or put it on PATH); building a CPU-only jar"
  exit 0
fi
mkdir -p "$out"
log="$here/target/ptxas.log"
: > "$log"
archs=(-gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86
       -gencode arch=compute_89,code=sm_89 -gencode arch=compute_90,code=sm_90
       -gencode arch=compute_90,code=compute_90)
"$nvcc" -std=c++17 -O3 --use_fast_math -fatbin "${archs[@]}" -Xptxas -v \
  -o "$out/distillery.fatbin" "$here/src/main/cuda/distillery.cu" 2>> "$log"
if grep -E '[1-9][0-9]* bytes spill (stores|loads)' "$log" >/dev/null; then
  echo "cuda: register spills found (see $log):" >&2
  grep -B2 -E '[1-9][0-9]* bytes spill' "$log" >&2
  exit 1
fi
echo "cuda: distillery.fatbin ($(stat -c %s "$out/distillery.fatbin") bytes, $(grep -c 'Compiling entry function' "$log") kernel builds) with $("$nvcc" --version | tail -n 1), no spills (report: target/ptxas.log)"
