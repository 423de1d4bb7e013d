#!/usr/bin/env bash
# One folder that runs this project's GPU checks on a CUDA machine with no JDK, Maven or network:
# a JDK 25 runtime image (jlink, packed as runtime.tar.xz and unpacked on first run), the jars built
# here, the gpu-tagged JUnit tests with JUnit's console launcher, gpu_check.sh and the PyTorch
# scripts beside it, and run.sh, which puts the CUDA libraries' folders on the loader's path and
# runs them all. Build the jars first (./mvnw -B package -DskipTests, with nvcc, so that the jar
# carries the CUDA kernels).
#
#   bench/reference/gpu_bundle.sh [--slim] OUT      # then, on the GPU machine: OUT/run.sh [--quick] [--demo] [LOGS]
#
# --slim leaves out the bundled OpenBLAS and the tokenizer and tiktoken natives (about 30 MB): the
# selftest's CPU reference then uses the machine's libopenblas.so.0 or the Vector-API GEMM.
set -euo pipefail
cd "$(dirname "$0")/../.."
slim=0
if [ "${1:-}" = "--slim" ]; then slim=1; shift; fi
out="${1:?usage: gpu_bundle.sh [--slim] OUT}"
java_home="${JAVA_HOME:?set JAVA_HOME to a JDK 25}"
for f in trainer/target/trainer.jar bench/target/benchmarks.jar kernels/target/distillery-kernels-0.1.0-SNAPSHOT-tests.jar; do
  [ -f "$f" ] || { echo "gpu_bundle: $f is missing: build it first (./mvnw -B package -DskipTests)" >&2; exit 2; }
done
unzip -l trainer/target/trainer.jar | grep -q 'dev/distillery/cuda/distillery.fatbin' \
  || { echo "gpu_bundle: trainer.jar has no CUDA kernels (built without nvcc)" >&2; exit 2; }

rm -rf "$out"
mkdir -p "$out/trainer/target" "$out/bench/target" "$out/bench/reference" "$out/tests"
cp trainer/target/trainer.jar "$out/trainer/target/"
cp bench/target/benchmarks.jar "$out/bench/target/"
cp bench/reference/gpu_check.sh bench/reference/pytorch_loss.py bench/reference/pytorch_step.py "$out/bench/reference/"
cp kernels/target/distillery-kernels-0.1.0-SNAPSHOT-tests.jar "$out/tests/kernels-tests.jar"

# JUnit's console launcher, the version of the platform that the build's JUnit 5.x comes with (1.x)
junit=$(sed -n 's|.*<junit.version>5\.\(.*\)</junit.version>.*|1.\1|p' pom.xml)
./mvnw -B -q dependency:copy -Dartifact="org.junit.platform:junit-platform-console-standalone:$junit" -DoutputDirectory="$out/tests" \
  -Dmdep.stripVersion=true
mv "$out/tests/junit-platform-console-standalone.jar" "$out/tests/junit-console.jar"

if [ $slim = 1 ]; then
  for jar in "$out/trainer/target/trainer.jar" "$out/bench/target/benchmarks.jar"; do
    zip -q -d "$jar" 'org/bytedeco/openblas/*' 'native/lib/*' 'com/knuddels/jtokkit/*.tiktoken' >/dev/null 2>&1 || true
  done
fi

# The modules the jars use (jdeps) plus what JMH's forks and the console launcher need.
modules=$("$java_home/bin/jdeps" --multi-release 25 --ignore-missing-deps --print-module-deps \
  "$out/trainer/target/trainer.jar" "$out/bench/target/benchmarks.jar" 2>/dev/null | tail -1)
"$java_home/bin/jlink" --add-modules "$modules,java.naming,jdk.zipfs" --strip-debug --no-man-pages --no-header-files \
  --output "$out/runtime" 2>&1 | grep -v 'incubator modules' || true
tar -C "$out" -cJf "$out/runtime.tar.xz" runtime
rm -rf "$out/runtime"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# gpu-tagged JUnit tests, then gpu_check.sh (selftest --device cuda, device benchmarks, StepProfile,
# PyTorch beside them; --demo adds the quick demo on the device), with the runtime image this folder
# carries. Logs and tables: LOGS (gpu-run/).
set -u
cd "$(dirname "$0")"
flags=()
while [ "${1:-}" = "--quick" ] || [ "${1:-}" = "--demo" ]; do flags+=("$1"); shift; done
out="${1:-gpu-run}"
mkdir -p "$out"
runtime="${TMPDIR:-/tmp}/distillery-runtime"
[ -x "$runtime/runtime/bin/java" ] || { mkdir -p "$runtime" && tar -C "$runtime" -xJf runtime.tar.xz; }
export JAVA_HOME="$runtime/runtime" PATH="$runtime/runtime/bin:$PATH"
for lib in libcuda.so.1 libcublas.so.13 libnccl.so.2; do
  ldconfig -p 2>/dev/null | grep -q "$lib " && continue
  dir=$(find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -1)
  [ -n "$dir" ] && export LD_LIBRARY_PATH="$(dirname "$dir")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
echo "== gpu-tagged tests"
java --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:-UseProfiledLoopPredicate -jar tests/junit-console.jar execute \
  -cp trainer/target/trainer.jar:tests/kernels-tests.jar --include-tag gpu --scan-classpath tests/kernels-tests.jar \
  --details=summary --disable-banner --disable-ansi-colors > "$out/gpu-tests.txt" 2>&1
tests=$?
grep -E 'tests (successful|failed|aborted)' "$out/gpu-tests.txt"
echo "== gpu_check.sh"
bench/reference/gpu_check.sh "${flags[@]}" "$out/check"
check=$?
exit $(( tests != 0 ? tests : check ))
RUN
chmod +x "$out/run.sh"
du -sh "$out" | sed 's/^/gpu_bundle: /'
