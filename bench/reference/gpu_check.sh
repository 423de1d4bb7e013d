#!/usr/bin/env bash
# The checks a machine with a CUDA GPU can make that this project's CI cannot, from the jars built
# here (trainer/target/trainer.jar with the CUDA kernels compiled in, bench/target/benchmarks.jar),
# with no network and no Maven on the GPU machine:
#   1. trainer.jar selftest --device cuda: every CUDA kernel against the CPU kernels, the whole
#      Kernels contract against float64, and NCCL (a group of one rank) where libnccl loads;
#   2. CudaDistillLossBenchmark: the fused loss on the device at the LM-head shapes, with a
#      device-to-device copy of the same traffic as the bandwidth yardstick;
#   3. TrainingStepBenchmark -p device=cuda: the training step (configs A and B, fp32 and bf16) and
#      the distillation step (config B, dense bf16 teacher) on the device; without --quick also
#      config L (B's model over 2,048 tokens) in bf16 with no attention probabilities kept, beside
#      PyTorch's fused attention (F.scaled_dot_product_attention);
#   4. StepProfile on the device: config B's step kernel by kernel (each call's GPU time), fp32 and bf16;
#   5. where python3 has torch with CUDA: PyTorch eager on the same GPU for rows 2 and 3
#      (pytorch_loss.py, pytorch_step.py with device cuda), and one table of medians and ratios.
#   6. with --demo: trainer.jar demo --quick --device cuda, the whole pipeline on the device.
# Each step's output goes to OUT (default gpu-check/) and the tables to stdout; the exit status is
# the selftest's (0: every check passed), else the demo's. --quick runs one size per kernel and
# one benchmark shape. Environment: PYTHON (default python3) for the PyTorch side.
#
#   bench/reference/gpu_check.sh [--quick] [--demo] [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
quick=0
demo=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --demo) demo=1; shift ;;
    *) break ;;
  esac
done
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
shapes=(2048x32000 4096x50257 1024x128256)
[ $quick = 1 ] && shapes=(2048x32000)
"$java" -jar bench/target/benchmarks.jar CudaDistillLossBenchmark -p shape="$(IFS=,; echo "${shapes[*]}")" -f 1 -wi 2 -i 5 -w 500ms -r 500ms \
  -rf csv -rff "$out/cuda-loss.csv" 2>&1 | tee "$out/cuda-loss.txt" | grep -E '^(Benchmark|CudaDistillLossBenchmark)' || true

echo "== TrainingStepBenchmark -p device=cuda" >&2
# config precision loss [attention: keep (ours) and explicit (PyTorch's) unless "recompute" (ours) and sdpa (PyTorch's)]
steps=("A fp32 ce" "A bf16 ce" "B fp32 ce" "B bf16 ce" "B fp32 distill" "B bf16 distill" "L bf16 ce recompute")
[ $quick = 1 ] && steps=("A fp32 ce" "B bf16 distill")
for s in "${steps[@]}"; do
  set -- $s
  "$java" -jar bench/target/benchmarks.jar TrainingStepBenchmark -p device=cuda -p config=$1 -p precision=$2 -p loss=$3 -p attention=${4:-keep} \
    -f 1 -wi 2 -i 5 -w 500ms -r 500ms -rf csv -rff "$out/step-$1-$2-$3.csv" > "$out/step-$1-$2-$3.txt" 2>&1 \
    || echo "TrainingStepBenchmark $s failed: see $out/step-$1-$2-$3.txt" >&2
done

echo "== StepProfile on the device" >&2
for prec in fp32 bf16; do
  "$java" --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate -cp bench/target/benchmarks.jar \
    dev.distillery.bench.StepProfile B 1 10 auto 10 $prec cuda > "$out/profile-B-$prec.txt" 2>&1 \
    || echo "StepProfile B $prec failed: see $out/profile-B-$prec.txt" >&2
  grep -v WARNING "$out/profile-B-$prec.txt" | head -14
done

if [ $quick = 0 ]; then
  echo "== GenerationBenchmark on the device: one sequence, and 32 decoded together (tokens drawn on the device)" >&2
  "$java" -jar bench/target/benchmarks.jar GenerationBenchmark -p device=cuda -p model=demo-teacher,gpt2-vocab,llama3-vocab -p batch=1,32 \
    -p temperature=0.7 -f 1 -wi 2 -i 3 -w 500ms -r 500ms -rf csv -rff "$out/generation.csv" > "$out/generation.txt" 2>&1 \
    || echo "GenerationBenchmark failed: see $out/generation.txt" >&2
  grep -E '^(Benchmark|GenerationBenchmark)' "$out/generation.txt" || true
fi

# JMH's csv (CRLF lines): the score is the fifth field of the row that names the method and ends with the params.
jmh_ms() { [ -f "$1" ] && tr -d '\r' < "$1" | grep -F ".$2\"" | grep -E ",$3\$" | head -1 | cut -d, -f5; }
py="${PYTHON:-python3}"
torch_cuda=0
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && torch_cuda=1
[ $torch_cuda = 1 ] || echo "gpu_check: $py has no torch with CUDA: the PyTorch column stays empty" >&2
torch_ms() { [ $torch_cuda = 1 ] && "$py" "$@" 2>>"$out/pytorch.err" | tee -a "$out/pytorch.txt" | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p'; }
row() {  # label, ours (ms), pytorch (ms)
  local ratio="-"
  [ -n "$2" ] && [ -n "$3" ] && ratio=$(awk -v a="$2" -v b="$3" 'BEGIN {printf "%.2fx", b / a}')
  printf '| %-34s | %12s | %12s | %7s |\n' "$1" "${2:--}" "${3:--}" "$ratio"
}

echo "== side by side" >&2
{
  echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); PyTorch eager: $([ $torch_cuda = 1 ] && "$py" -c 'import torch; print(torch.__version__)' || echo none)"
  printf '| %-34s | %12s | %12s | %7s |\n' row "Distillery ms" "PyTorch ms" speedup
  for shape in "${shapes[@]}"; do
    for teacher in dense-bf16 top64; do
      row "fused loss $shape $teacher" "$(jmh_ms "$out/cuda-loss.csv" fused "$shape,$teacher")" "$(torch_ms bench/reference/pytorch_loss.py "$shape" "$teacher" 1 20 cuda)"
    done
  done
  for s in "${steps[@]}"; do
    set -- $s
    torch_attention=explicit
    [ "${4:-}" = recompute ] && torch_attention=sdpa
    row "step $1 $2 $3${4:+ $4}" "$(jmh_ms "$out/step-$1-$2-$3.csv" step "$2,[0-9]+")" \
      "$(torch_ms bench/reference/pytorch_step.py $1 1 20 $2 $3 cuda $torch_attention)"
  done
} | tee "$out/side-by-side.txt"

if [ $demo = 1 ]; then
  echo "== demo --quick --device cuda" >&2
  start=$(date +%s)
  if ! "$java" -jar trainer/target/trainer.jar demo --quick --device cuda --work "$out/demo" > "$out/demo.txt" 2>&1; then
    echo "demo failed: see $out/demo.txt" >&2
    if [ "$status" = 0 ]; then status=1; fi
  fi
  echo "demo: $(( $(date +%s) - start )) s"
  grep -E '^\|' "$out/demo.txt" | tail -5 || true
fi

exit $status
