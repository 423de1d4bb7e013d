#!/usr/bin/env bash
# The checks a machine with a CUDA GPU can make that this project's CI cannot, from the jars built
# here (trainer/target/trainer.jar with the CUDA kernels compiled in, bench/target/benchmarks.jar),
# with no network and no Maven on the GPU machine:
#   1. trainer.jar selftest --device cuda: every CUDA kernel against the CPU kernels, the whole
#      Kernels contract against float64, and NCCL (a group of one rank) where libnccl loads;
#   2. CudaDistillLossBenchmark: the fused loss on the device at the LM-head shapes, with a
#      device-to-device copy of the same traffic as the bandwidth yardstick.
# Each step's output goes to OUT (default gpu-check/) and the tables to stdout; the exit status is
# the selftest's (0: every check passed). --quick runs one size per kernel and one benchmark shape.
#
#   bench/reference/gpu_check.sh [--quick] [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
out="${1:-gpu-check}"
mkdir -p "$out"

java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
if ! "$java" -version >/dev/null 2>&1; then
  echo "gpu_check: no java (set JAVA_HOME to a JDK 25)" >&2
  exit 2
fi
for jar in trainer/target/trainer.jar bench/target/benchmarks.jar; do
  [ -f "$jar" ] || { echo "gpu_check: $jar is missing: build it where Maven runs (./mvnw -B package -DskipTests)" >&2; exit 2; }
done

{ date -u; "$java" -version 2>&1 | head -1; if command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi; } | tee "$out/machine.txt"

echo "== selftest --device cuda" >&2
status=0
"$java" -jar trainer/target/trainer.jar selftest --device cuda $([ $quick = 1 ] && echo --quick) \
  | tee "$out/selftest.txt" || status=$?

echo "== CudaDistillLossBenchmark" >&2
shapes=()
[ $quick = 1 ] && shapes=(-p shape=2048x32000)
"$java" -jar bench/target/benchmarks.jar CudaDistillLossBenchmark "${shapes[@]}" -f 1 -wi 2 -i 5 -w 1 -r 1 \
  -rf json -rff "$out/cuda-loss.json" 2>&1 | tee "$out/cuda-loss.txt" | grep -E '^(Benchmark|CudaDistillLossBenchmark)'

exit $status
