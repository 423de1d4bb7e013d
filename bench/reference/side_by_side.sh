#!/usr/bin/env bash
# Distillery against PyTorch on the machine at hand, both sides in one sitting, round by round.
#
#   bench/reference/side_by_side.sh [--rounds N] [--quick] [--steps-only] [--rows REGEX] [--paired]
#
# Needs bench/target/benchmarks.jar (./mvnw -B -q package -DskipTests) and JDK 25 (JAVA_HOME).
# PyTorch comes from the machine's local wheel cache into a venv (no network), or from Debian's
# python3-torch where it is installed; where both are there, the faster on config A is used.
# Both sides get the same threads (2) with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (the
# environment forces a slower OpenBLAS kernel with them); PyTorch gets tcmalloc
# (TCMALLOC_RELEASE_RATE=0), passive OpenMP waiting and denormals flushed to zero (the scripts set
# torch.set_flush_denormal), its best setup on these machines.
# Each round runs every row on both sides one after the other; the table has the medians over the
# rounds and the median of the rounds' ratios (PyTorch time / Distillery time: above 1 is Distillery
# faster), with their range. A row whose PyTorch times spread by more than 1.5x within a run, or
# whose torch does not use the threads it was given, or whose rounds' ratios differ by more than
# 1.25x, gets no ratio: a thrashing reference, or a machine whose neighbours took the cores between
# the two sides of a round, measures nothing. Rounds whose times moved by more than 1.5x on both
# sides alike (the neighbours came and went between rounds) keep their ratio, with a note. The training
# steps run in fp32 and in bf16 mixed precision (PyTorch: torch.autocast on the CPU; Distillery:
# -p precision=bf16, where the CPU has AMX or AVX512-BF16); the distillation step is config B
# against a dense bf16 teacher (T = 2, alpha 0.5), fp32 and bf16; the peak resident memory of a config B step is
# measured once per side (/usr/bin/time) and its ratio is ours over PyTorch's (the target's
# orientation, said beside it), and each fused-loss row gives the share of the copy
# bandwidth its bytes (student logits read, gradient written, teacher read) reach. The fused-loss
# rows are forward KL, and at 2048x32000 against a dense teacher also reverse KL and JSD(0.5) (PyTorch:
# TRL's generalized_jsd_loss form).
# Config L, B's model over 2,048 tokens, has a step row and a peak-memory row of its own: PyTorch with
# its fused attention (F.scaled_dot_product_attention), Distillery keeping none of attention's
# probabilities (recompute_attention); --quick leaves them out.
# --steps-only leaves out the loss rows; --rows keeps only the rows whose label matches REGEX
# (grep -E: 'distillation', 'bf16', 'peak RSS', ...).
# --paired measures the step rows with both sides warm at once instead (bench/reference/paired_steps.py:
# 2 steps of one side, then 2 of the other, 16 pairs a round, the order swapped every pair): a round's
# ratio is then the median of its pairs' ratios, each pair's two sides seconds apart, where a round of
# separate runs (PyTorch's 8 steps, then JMH's minute) spans minutes of the machine's drift.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=3
QUICK=0
STEPS_ONLY=0
ROWS_RE=""
PAIRED=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --steps-only) STEPS_ONLY=1; shift ;;
    --rows) ROWS_RE="$2"; shift 2 ;;
    --paired) PAIRED=1; shift ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "side_by_side.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

THREADS=2
JAVA="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}/bin/java"
JAR=bench/target/benchmarks.jar
[ -x "$JAVA" ] || { echo "side_by_side.sh: no java at $JAVA; set JAVA_HOME to a JDK 25" >&2; exit 1; }
[ -f "$JAR" ] || { echo "side_by_side.sh: $JAR is missing; build it first: ./mvnw -B -q package -DskipTests" >&2; exit 1; }
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- the PyTorch side
VENV="${DISTILLERY_TORCH_VENV:-$HOME/.cache/distillery/torch-venv}"
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  WHEEL=$(find / -xdev -name 'torch-2*.whl' 2>/dev/null | sort | tail -n 1 || true)
  if [ -n "$WHEEL" ]; then
    echo "setting up PyTorch from $WHEEL in $VENV (no network)" >&2
    LINKS=()
    while read -r dir; do LINKS+=(--find-links "$dir"); done < <(find / -xdev -name '*.whl' -printf '%h\n' 2>/dev/null | sort -u)
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --no-index "${LINKS[@]}" "torch==$(basename "$WHEEL" | cut -d- -f2)" numpy >&2
  fi
fi
CANDIDATES=()
"$VENV/bin/python" -c 'import torch' >/dev/null 2>&1 && CANDIDATES+=("$VENV/bin/python")
/usr/bin/python3 -c 'import torch' >/dev/null 2>&1 && CANDIDATES+=(/usr/bin/python3)
[ ${#CANDIDATES[@]} -gt 0 ] || { echo "side_by_side.sh: no PyTorch: no torch-2 wheel found and Debian's python3-torch is not installed" >&2; exit 1; }

TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
if [ ! -e "$TCMALLOC" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 || true
fi
torch_run() {   # python script args...: one PyTorch run in its best setup (Distillery sets its own threads)
  local py="$1"; shift
  local env=(OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE)
  [ -e "$TCMALLOC" ] && env+=(LD_PRELOAD="$TCMALLOC" TCMALLOC_RELEASE_RATE=0)
  env "${env[@]}" "$py" "$@"
}

PY=${CANDIDATES[0]}
if [ ${#CANDIDATES[@]} -gt 1 ]; then
  best=""
  for c in "${CANDIDATES[@]}"; do
    ms=$(torch_run "$c" bench/reference/pytorch_step.py A $THREADS 5 | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p')
    echo "PyTorch candidate $c: config A $ms ms/step" >&2
    if [ -z "$best" ] || awk "BEGIN{exit !($ms < $best)}"; then best=$ms; PY=$c; fi
  done
fi
TORCH=$("$PY" -c 'import torch; print(torch.__version__)')
BLAS=$("$PY" -c 'import torch; c=torch.__config__.show(); print("MKL" if "MKL" in c and "USE_MKL=ON" in c else "OpenBLAS" if "openblas" in c.lower() else "its BLAS")')

# ---------------------------------------------------------------- the rows
STEP_ROWS=("A fp32 ce" "B fp32 ce" "A bf16 ce" "B bf16 ce" "B fp32 distill" "B bf16 distill")
LOSS_ROWS=("2048x32000 dense-bf16" "4096x50257 dense-bf16" "1024x128256 dense-bf16" "2048x32000 top64" "4096x50257 top64" "1024x128256 top64"
           "2048x32000 dense-bf16 reverse-kl" "2048x32000 dense-bf16 jsd")
# config L (B's model over 2,048 tokens): PyTorch with its fused attention (F.scaled_dot_product_attention,
# flash attention on the CPU, the faster there), Distillery with none of attention's probabilities kept
# (-p attention=recompute); where the chosen torch has no fused attention (before 2.0), no L rows
LONG=0
if [ "$QUICK" = 0 ] && "$PY" -c 'import torch.nn.functional as F; F.scaled_dot_product_attention' >/dev/null 2>&1; then
  LONG=1
  STEP_ROWS+=("L fp32 ce long")
fi
if [ "$QUICK" = 1 ]; then LOSS_ROWS=("2048x32000 dense-bf16" "2048x32000 top64"); fi
if [ "$STEPS_ONLY" = 1 ]; then LOSS_ROWS=(); fi
# the loss rows at DistillLossBenchmark's own iterations (2 s); the step rows at TrainingStepBenchmark's
# (5 s warm-up, 10 s measured), which a step of a few hundred ms needs to average its noise
JMH=(-f 1 -wi 2 -i 5)

jmh_ms() {   # benchmark regex, params...: the JMH score in ms/op
  local out="$WORK/jmh.json"
  "$JAVA" -jar "$JAR" "$1" "${@:2}" "${JMH[@]}" -p threads=$THREADS -rf json -rff "$out" >"$WORK/jmh.log" 2>&1 \
    || { tail -n 20 "$WORK/jmh.log" >&2; return 1; }
  "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["primaryMetric"]["score"])' "$out"
}

wanted() {   # row label: whether --rows keeps it
  [ -z "$ROWS_RE" ] || grep -qE -- "$ROWS_RE" <<<"$1"
}

record() {   # row side value [flag]
  echo "$1|$2|$3|${4:-}" >>"$WORK/results"
}

torch_record() {   # row output-line
  local row="$1" line="$2"
  local ms min max thr
  ms=$(sed -n 's/.*median \([0-9.]*\) ms.*/\1/p' <<<"$line")
  min=$(sed -n 's/.*(min \([0-9.]*\),.*/\1/p' <<<"$line")
  max=$(sed -n 's/.*max \([0-9.]*\)).*/\1/p' <<<"$line")
  thr=$(sed -n 's/.*threads torch \([0-9]*\).*/\1/p' <<<"$line")
  local flag=""
  awk "BEGIN{exit !($max > 1.5 * $min)}" && flag="spread $min-$max ms"
  [ "$thr" = "$THREADS" ] || flag="torch used $thr threads, not $THREADS"
  record "$row" torch "$ms" "$flag"
}

paired_record() {   # row output-line of paired_steps.py: both sides' medians, and the pairs' median ratio as the round's
  local row="$1" line="$2"
  local flag="" thr
  thr=$(sed -n 's/.*threads torch \([0-9]*\).*/\1/p' <<<"$line")
  [ "$thr" = "$THREADS" ] || flag="torch used $thr threads, not $THREADS"
  record "$row" torch "$(sed -n 's/.*pytorch \([0-9.]*\) ms.*/\1/p' <<<"$line")" "$flag"
  record "$row" distillery "$(sed -n 's/.*distillery \([0-9.]*\) ms.*/\1/p' <<<"$line")"
  record "$row" ratio "$(sed -n 's/.*ratio \([0-9.]*\) (.*/\1/p' <<<"$line")"
}

COPY_GBS=$(awk "BEGIN{printf \"%.1f\", 2 * 1.073741824 / ($(jmh_ms 'MemoryBandwidthBenchmark.copy') / 1000)}")
: >"$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS" >&2
  for c in "${STEP_ROWS[@]}"; do
    set -- $c
    row="training step $1 $2, ms"
    [ "$3" = distill ] && row="distillation step $1 $2 (dense bf16 teacher), ms"
    torch_attention=explicit ours_attention=keep
    if [ "${4:-}" = long ]; then
      row="training step $1 $2, 2,048 tokens (no attention probabilities kept), ms"
      torch_attention=sdpa ours_attention=recompute
    fi
    wanted "$row" || continue
    if [ "$PAIRED" = 1 ]; then
      paired_record "$row" "$(torch_run "$PY" bench/reference/paired_steps.py --java "$JAVA" --jar "$JAR" --threads $THREADS --pairs 16 \
        --torch-attention $torch_attention --ours-attention $ours_attention "$1" "$2" "$3")"
      continue
    fi
    torch_record "$row" "$(torch_run "$PY" bench/reference/pytorch_step.py "$1" $THREADS 8 "$2" "$3" cpu $torch_attention)"
    record "$row" distillery "$(jmh_ms 'TrainingStepBenchmark.step' -p config="$1" -p precision="$2" -p loss="$3" -p attention=$ours_attention)"
  done
  for l in ${LOSS_ROWS[@]+"${LOSS_ROWS[@]}"}; do
    set -- $l
    divergence=${3:-forward-kl}
    row="fused loss $1 $2${3:+ $3}, ms"
    wanted "$row" || continue
    torch_record "$row" "$(torch_run "$PY" bench/reference/pytorch_loss.py "$1" "$2" $THREADS 6 cpu "$divergence")"
    record "$row" distillery "$(jmh_ms 'DistillLossBenchmark.fused' -p shape="$1" -p teacher="$2" -p divergence="$divergence")"
  done
done

# peak resident memory of a config B step (the whole process, 3 steps after 1 of warm-up), once per side,
# and of a config L step (attention as in its step row); Distillery with the collector and initial heap
# `java -jar trainer.jar` gives its JVM (ChildJvm)
rss_mb() { awk '/^[0-9]+$/ {v = $1} END {printf "%.0f", v / 1024}' "$WORK/rss"; }
MEMORY_ROWS=("B explicit keep")
[ "$LONG" = 1 ] && MEMORY_ROWS+=("L sdpa recompute")
for m in "${MEMORY_ROWS[@]}"; do
  set -- $m
  row="peak RSS of a config $1 step, MB"
  [ "$1" = L ] && row="peak RSS of a config L step, 2,048 tokens (no attention probabilities kept), MB"
  wanted "$row" || continue
  echo "peak memory, config $1" >&2
  torch_run /usr/bin/time -f %M -o "$WORK/rss" "$PY" bench/reference/pytorch_step.py "$1" $THREADS 3 fp32 ce cpu "$2" >/dev/null
  record "$row" torch "$(rss_mb)"
  /usr/bin/time -f %M -o "$WORK/rss" "$JAVA" --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate -Xmx8g -XX:+UseSerialGC -Xms32m \
    -cp "$JAR" dev.distillery.bench.StepProfile "$1" $THREADS 3 auto 1 fp32 cpu "$3" >/dev/null 2>&1
  record "$row" distillery "$(rss_mb)"
done

# ---------------------------------------------------------------- the table
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
echo
echo "$(date -u +%Y-%m-%d), $CPU, $(nproc) CPUs; $THREADS threads each side; copy bandwidth $COPY_GBS GB/s;"
echo "PyTorch $TORCH ($BLAS, $PY$( [ -e "$TCMALLOC" ] && echo ', tcmalloc')); medians of $ROUNDS rounds$( [ "$PAIRED" = 1 ] && echo '; steps paired (a round: 16 pairs of 2 steps a side)')"
echo
"$PY" - "$WORK/results" "$COPY_GBS" <<'PYEOF'
import statistics, sys
copy_gbs = float(sys.argv[2])
rows, flags = {}, {}
for line in open(sys.argv[1]):
    row, side, value, flag = line.rstrip("\n").split("|")
    rows.setdefault(row, {}).setdefault(side, []).append(float(value))
    if flag:
        flags.setdefault(row, []).append(flag)
def copy_share(row, ms):   # a fused-loss row: bytes moved / time against the copy bandwidth
    if not row.startswith("fused loss"):
        return ""
    n, v = (int(x) for x in row.split()[2].split("x"))
    teacher = 2 * n * v if "dense" in row else 0   # top-k: ids and logits are n * 64, negligible
    return f"{(8 * n * v + teacher) / (ms / 1000) / 1e9 / copy_gbs:.0%}"
print("| row | PyTorch | Distillery | PyTorch / Distillery | Distillery, share of copy bandwidth |")
print("|---|---:|---:|---:|---:|")
for row, sides in rows.items():
    # Each round's ratio pairs the two sides measured one after the other, so a machine whose speed
    # moves between rounds moves both; the row's ratio is the median of the rounds' ratios. Rounds
    # whose ratios disagree by more than 1.25x measured the machine, not the code; rounds whose times
    # spread by more than 1.5x on either side are named beside a ratio that survived that check.
    # memory is a target on ours over PyTorch's (<= 0.5x), so that row's ratio is the other way round
    memory = row.startswith("peak RSS")
    # a paired round brings its own ratio: the median of its pairs' (paired_steps.py)
    per_round = sides.get("ratio") or [d / t if memory else t / d for t, d in zip(sides["torch"], sides["distillery"])]
    moved = [f"{side} rounds {min(v):,.1f}-{max(v):,.1f}" for side, v in sides.items()
             if side != "ratio" and len(v) > 1 and max(v) > 1.5 * min(v)]
    if max(per_round) > 1.25 * min(per_round):
        flags.setdefault(row, []).append(f"rounds' ratios spread {min(per_round):.2f}-{max(per_round):.2f}x")
    t, d = statistics.median(sides["torch"]), statistics.median(sides["distillery"])
    if row in flags:
        ratio = "no ratio: " + "; ".join(sorted(set(flags[row])))
    else:
        ratio = f"{statistics.median(per_round):.2f}x" + (f" ({min(per_round):.2f}-{max(per_round):.2f})" if len(per_round) > 1 else "")
        if memory:
            ratio += " (Distillery / PyTorch)"
        if moved:
            ratio += "; the machine's speed moved: " + ", ".join(moved)
    print(f"| {row} | {t:,.1f} | {d:,.1f} | {ratio} | {copy_share(row, d)} |")
PYEOF
