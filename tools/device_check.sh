#!/usr/bin/env bash
# The GPU host check, in one command: the webgpu backend's parity and speed on a real GPU, and the
# tensor-parallel CPU scaling, each beside PyTorch on the same machine. For a bare host with no Node.js
# and no network: `npm run device:bundle` makes the git-ignored .device/ it needs (carry it), and
# DEVELOPING.md ("Checking on a GPU host") gives the exact run.
#
#   bash tools/device_check.sh [--out DIR] [--dry-run] [--deadline S] [--perturb NAME=ULPS] [--allow-stale-bundle]
#
#   --out DIR     where device_check.log and device_check.json go (default: $OUT, else ./device-check-out)
#   --dry-run     the rehearsal on a machine without a GPU (Mesa's llvmpipe through Dawn's OpenGL ES):
#                 a small model (3 layers of width 64) for the parity check, ViT-L's first 2 layers for
#                 the benchmarks, batch 2 at most, one repetition; a CPU adapter is accepted
#   --deadline S  the whole run ends within S seconds (default 530; dry run 3600): each step's timeout is
#                 cut to what is left, and a step that no time is left for is skipped, saying so
#   --perturb NAME=ULPS  the reference is made with weight NAME moved by ULPS units in the last place
#                 (tools/make_reference.py --perturb): the parity checks must then fail (a test of the test)
#
# Steps (each with its own timeout; a failed step is logged with why, and the next ones still run):
#   setup         node, node_modules and dist from .device/; Debian's Vulkan loader and GL dispatch
#                 libraries where the system has none (unpacked into a private folder); NVIDIA's Vulkan
#                 ICD and EGL vendor file pointed at where no other is found
#   host          the GPU (nvidia-smi), Python, torch, transformers
#   adapter       the WebGPU adapter Dawn offers and its limits
#   test_webgpu   npm run test:webgpu's suites on that adapter (compiled JavaScript, jest)
#   weights       the model, generated here from the seed (ViT-L/14-336 + mlp2x_gelu)    } in the background,
#   reference     its float64 truth: PyTorch on the CPU through tools/make_reference.py } beside test_webgpu
#   check_webgpu  llava-vision check --reference on webgpu: every hidden state, pooler_output, features
#                 and projected against the truth, within 4x PyTorch fp32's own error
#   gpu_batches   the largest batch that fits on webgpu, and the per-image time up to it
#   bench_webgpu  npm run bench -- --backend webgpu --batch <that batch>
#   torch_cuda    the same weights in PyTorch fp32 (TF32 off) on CUDA, batch 1 and that batch
#   cpu_scaling   npm run bench -- --threads 1,2,4,8,16 --vs-torch (wasm, tensor-parallel, clipped to the
#                 cores), PyTorch CPU at the same thread counts
#   torch_cpu     PyTorch fp32 on every core, batch 1 and 8
#   check_wasm    the parity check on wasm with every core: the CPU's ratios beside the GPU's
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUTDIR=${OUT:-}
DRY_RUN=0
DEADLINE_S=
ALLOW_STALE=0
PERTURB=
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUTDIR=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --deadline) DEADLINE_S=$2; shift 2 ;;
    --allow-stale-bundle) ALLOW_STALE=1; shift ;;
    --perturb) PERTURB=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$OUTDIR" ] || OUTDIR=$ROOT/device-check-out
[ -n "$DEADLINE_S" ] || DEADLINE_S=$([ $DRY_RUN = 1 ] && echo 3600 || echo 530)
mkdir -p "$OUTDIR" || exit 1
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/llava-device-check.XXXXXX")
BUNDLE=$ROOT/.device
LOG=$OUTDIR/device_check.log
START=$(date +%s)
DEADLINE=$((START + DEADLINE_S))
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
export ROOT WORK BUNDLE DRY_RUN PERTURB

say() { printf '%s device_check: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# A step's outcome: one line of steps.tsv (name, status, seconds, why).
record() {
  local reason=${4//$'\t'/ }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${reason//$'\n'/ }" >>"$WORK/steps.tsv"
  say "$1: $2 after $3 s${4:+ — $4}"
}
status_of() { awk -F'\t' -v n="$1" '$1 == n { s = $2 } END { print s }' "$WORK/steps.tsv" 2>/dev/null; }

# run_step NAME TIMEOUT FUNCTION [ARGS...]: the function in a child bash under `timeout`, its output in the
# log and in $WORK/NAME.out. Exit 0: ok; 3: skipped (the function wrote why to $WORK/NAME.reason); 124/137:
# timed out; else failed, with $WORK/NAME.reason or the last line of output as the reason.
run_step() {
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - $(date +%s)))
  if [ "$left" -lt 15 ]; then
    record "$name" skipped 0 "no time left before the overall deadline (--deadline $DEADLINE_S)"
    return 3
  fi
  [ "$limit" -le "$left" ] || limit=$left
  say "=== $name (timeout $limit s)"
  local t0 rc seconds reason
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" bash -c '"$@"' _ "$@" 2>&1 | tee "$WORK/$name.out"
  rc=${PIPESTATUS[0]}
  seconds=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  reason=$(cat "$WORK/$name.reason" 2>/dev/null)
  # Else the first error line of the output (a stack trace's last line is only Node's version), else its last line.
  [ -n "$reason" ] || reason=$(grep -v '^[[:space:]]' "$WORK/$name.out" | grep -m 1 -E '[A-Za-z]*Error\b|\berror\b|FAIL' | cut -c1-400)
  [ -n "$reason" ] || reason=$(grep -v '^[[:space:]]*$' "$WORK/$name.out" | tail -n 1 | cut -c1-400)
  case $rc in
    0) record "$name" ok "$seconds" "" ;;
    3) record "$name" skipped "$seconds" "$reason" ;;
    124 | 137) record "$name" timeout "$seconds" "timed out after $limit s; last output: $reason" ;;
    *) record "$name" failed "$seconds" "exit code $rc: $reason" ;;
  esac
  return "$rc"
}
skip() { echo "$2" >"$WORK/$1.reason"; record "$1" skipped 0 "$2"; }
export -f say record

# ------------------------------------------------------------------------------------------------ setup

# The tree that came (tracked files, untracked ones git does not ignore, .device/) against the 64 MiB limit.
print_budget() {
  local tree carried
  carried=$(du -sb "$BUNDLE" 2>/dev/null | cut -f1)
  tree=$(du -sb --exclude=node_modules --exclude=dist --exclude=generated --exclude=.device \
    --exclude=device-check-out --exclude=.git . | cut -f1)
  say "budget: tree $((tree / 1024)) KiB + .device $((${carried:-0} / 1024)) KiB = $(((tree + ${carried:-0}) / 1024)) KiB of 65536 KiB (64 MiB)"
}

# xz -dc, or Python's lzma where xz is missing.
unxz_to() {
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"; else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1" >"$2"; fi
}

setup() {
  [ -f "$BUNDLE/manifest.json" ] || { echo "no .device/manifest.json: run npm run device:bundle and carry .device" >"$WORK/setup.reason"; return 1; }
  print_budget
  mkdir -p "$WORK/bin"
  unxz_to "$BUNDLE/node.xz" "$WORK/bin/node" && chmod +x "$WORK/bin/node" || return 1
  "$WORK/bin/node" --version || { echo "the carried node does not run here" >"$WORK/setup.reason"; return 1; }
  # node_modules and dist come from the bundle; a checkout's own (a development one) is left alone.
  if [ -e node_modules ] && [ ! -e node_modules/.device-bundle ]; then
    echo "this checkout has its own node_modules (run the check in a fresh clone or copy)" >"$WORK/setup.reason"
    return 1
  fi
  rm -rf node_modules dist
  for part in runtime native sharp; do
    [ -f "$BUNDLE/$part.tar.xz" ] || continue
    unxz_to "$BUNDLE/$part.tar.xz" "$WORK/$part.tar" && tar -xf "$WORK/$part.tar" -C "$ROOT" && rm -f "$WORK/$part.tar" || return 1
  done
  # dist/ must be the tree's own: the bundle names the sources it was compiled from.
  if ! "$WORK/bin/node" dist/tools/device/bundle.js --verify; then
    if [ "$ALLOW_STALE" = 1 ]; then echo "device_check: going on with a stale bundle (--allow-stale-bundle)"
    else echo "the bundle was built from other sources than this tree's: rerun npm run device:bundle (or --allow-stale-bundle)" >"$WORK/setup.reason"; return 1; fi
  fi
}

# Debian's Vulkan loader / GL dispatch libraries for those the system lacks, and the NVIDIA driver's
# Vulkan ICD and EGL vendor files where the loaders would find none. Runs in this shell: it exports.
setup_gpu_libraries() {
  local deb pkg lib sysroot=$WORK/sysroot unpacked=()
  for deb in "$BUNDLE"/debs/*.deb; do
    [ -f "$deb" ] || continue
    pkg=$(basename "$deb" | cut -d_ -f1)
    case $pkg in
      libvulkan1) lib=libvulkan.so.1 ;;
      libegl1) lib=libEGL.so.1 ;;
      libglvnd0) lib=libGLdispatch.so.0 ;;
      libgles2) lib=libGLESv2.so.2 ;;
      libopengl0) lib=libOpenGL.so.0 ;;
      *) continue ;;
    esac
    if ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$lib "; then continue; fi
    dpkg-deb -x "$deb" "$sysroot" 2>/dev/null || dpkg -x "$deb" "$sysroot" || { say "could not unpack $deb"; continue; }
    unpacked+=("$pkg")
  done
  if [ ${#unpacked[@]} -gt 0 ]; then
    export LD_LIBRARY_PATH=$sysroot/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    GPU_LIBS=${unpacked[*]}
    say "carried libraries in use (the system has none): ${unpacked[*]}"
  else
    say "GPU libraries: the system's"
  fi
  local f
  if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] &&
    ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json \
      $(timeout 10 find /usr/local/nvidia /usr/lib /opt -maxdepth 6 -name 'nvidia_icd*.json' 2>/dev/null | head -n 1); do
      if [ -f "$f" ]; then export VK_DRIVER_FILES=$f VK_ICD_FILENAMES=$f; say "Vulkan ICD: $f"; break; fi
    done
  fi
  if [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] &&
    ! ls /usr/share/glvnd/egl_vendor.d/*.json /etc/glvnd/egl_vendor.d/*.json >/dev/null 2>&1; then
    f=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    if [ -f "$f" ]; then export __EGL_VENDOR_LIBRARY_FILENAMES=$f; say "EGL vendor: $f"; fi
  fi
  # Dawn is built against libstdc++ from GCC 12 or newer.
  lib=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 \(libc6,x86-64\)/ { print $NF; exit }')
  if [ -n "$lib" ] && ! grep -q GLIBCXX_3.4.30 "$lib"; then say "warning: $lib has no GLIBCXX_3.4.30: Dawn will not load"; fi
}

# Python with torch: $LLAVA_VISION_PYTHON, else python3 on the PATH, else Debian's.
find_python() {
  local p
  for p in "${LLAVA_VISION_PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$p" ] && command -v "$p" >/dev/null && "$p" -c 'import torch, numpy' 2>/dev/null && { command -v "$p"; return; }
  done
}

# ------------------------------------------------------------------------------------------------ steps

host() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$WORK/nvidia_smi.txt"
  else echo "nvidia-smi: not on this machine"; fi
  echo "cores: $(nproc), memory: $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
  [ -n "$PYTHON" ] || { echo "no Python with torch and numpy (set LLAVA_VISION_PYTHON)" >"$WORK/host.reason"; return 1; }
  "$PYTHON" - >"$WORK/host.json" <<'EOF'
import json, os, platform, torch
d = {"python": platform.python_version(), "executable": os.path.realpath(__import__("sys").executable),
     "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cores": os.cpu_count(),
     "blas": "generic" if "BLAS_INFO=generic" in torch.__config__.show() else "optimized",
     "cuda": torch.cuda.is_available()}
if d["cuda"]:
    d["gpu"] = torch.cuda.get_device_name()
    d["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
for name in ("transformers", "PIL", "numpy"):
    try:
        d[name] = __import__(name).__version__
    except ImportError:
        pass
print(json.dumps(d))
EOF
  local rc=$?
  cat "$WORK/host.json"
  return $rc
}

adapter() {
  node dist/tools/device/adapter.js >"$WORK/adapter.json"
  local rc=$?
  cat "$WORK/adapter.json"
  [ $rc = 0 ] || { node -p 'require(process.argv[1]).reason' "$WORK/adapter.json" >"$WORK/adapter.reason" 2>/dev/null; return 1; }
  if [ "$DRY_RUN" = 0 ] && [ "$(node -p 'require(process.argv[1]).cpu' "$WORK/adapter.json")" = true ]; then
    echo "only a CPU adapter on a GPU host: $(node -p 'require(process.argv[1]).adapter' "$WORK/adapter.json")" >"$WORK/adapter.reason"
    return 1
  fi
}

test_webgpu() {
  local pattern=()
  # Without libvips (left out of the bundle to fit its budget) JPEG/WebP/TIFF images cannot be decoded:
  # the image suite's cases that read one are left out by name, and the log says which.
  if node -e 'process.exit(require("sharp").leftOutOfDeviceBundle ? 0 : 1)' 2>/dev/null; then
    local names
    names=$(node -e '
      const fs = require("fs"), path = require("path"), dir = "test/fixtures/cases";
      const out = fs.readdirSync(dir).filter((c) => {
        const f = path.join(dir, c, "case.json");
        return fs.existsSync(f) && (JSON.parse(fs.readFileSync(f, "utf8")).images || []).some((i) => /\.(jpe?g|webp|tiff?)$/i.test(i.file || ""));
      });
      console.log(out.join("|"));')
    echo "test_webgpu: sharp (libvips) is not in the bundle: the image suite's cases with JPEG/WebP/TIFF files are left out: ${names//|/, }"
    echo "$names" >"$WORK/test_webgpu.excluded"
    [ -n "$names" ] && pattern=(--testNamePattern "^(?!.*\\b(?:$names) from image files)")
  fi
  LLAVA_VISION_BACKEND=webgpu node node_modules/jest/bin/jest.js -c tools/device/jest.config.js --ci "${pattern[@]}"
}

weights() {
  node dist/tools/device/make_model.js --size "$([ "$DRY_RUN" = 1 ] && echo small || echo full)" | tee "$WORK/model.json"
}

reference() {
  [ -n "$PYTHON" ] || { echo "no Python with torch" >"$WORK/reference.reason"; return 1; }
  local tower llava
  tower=$(node -p 'require(process.argv[1]).towerDir' "$WORK/model.json") || return 1
  llava=$(node -p 'require(process.argv[1]).llavaDir' "$WORK/model.json") || return 1
  "$PYTHON" tools/make_reference.py --llava "$llava" --vision-tower "$tower" \
    ${PERTURB:+--perturb "$PERTURB"} test/fixtures/images/astronaut.png --out "$WORK/reference.safetensors" |
    tee "$WORK/reference.json"
}

# check BACKEND [THREADS]
check() {
  local tower llava
  tower=$(node -p 'require(process.argv[1]).towerDir' "$WORK/model.json") || return 1
  llava=$(node -p 'require(process.argv[1]).llavaDir' "$WORK/model.json") || return 1
  node bin/llava-vision.js check --reference "$WORK/reference.safetensors" --model "$llava" --vision-tower "$tower" \
    --backend "$1" ${2:+--threads "$2"} --json >"$WORK/check_$1.json"
  local rc=$?
  node -e '
    const r = require(process.argv[1]);
    for (const t of r.tensors)
      console.log(`${t.ok ? "ok  " : "FAIL"} ${t.name.padEnd(20)} max|err| ${t.comparison ? t.comparison.maxAbsErr.toExponential(2) : "-"}  PyTorch fp32 ${t.torchErr === null ? "-" : t.torchErr.toExponential(2)}  ratio ${t.ratio === null ? "-" : t.ratio.toFixed(2)}${t.problem ? "  " + t.problem : ""}`);
    console.log(`check on ${r.backend}: ${r.ok ? "every tensor within" : "FAILED, first " + r.firstFailure + ","} the bound ${r.bound}x`);
    const first = r.tensors.find((t) => t.name === r.firstFailure);
    const ratio = first && first.ratio !== null ? ` (${first.ratio.toFixed(1)}x the PyTorch fp32 error, bound ${r.bound}x)` : "";
    if (!r.ok) require("fs").writeFileSync(process.argv[2], `first failing tensor: ${r.firstFailure}${ratio}\n`);
  ' "$WORK/check_$1.json" "$WORK/check_$1.reason" 2>/dev/null
  return $rc
}
check_webgpu() { check webgpu; }
check_wasm() { check wasm "$(nproc)"; }

# The benchmarks' shapes: ViT-L whole on the host; its first 2 layers in the dry run (a scalar: the
# steps run in child shells, which arrays do not reach).
BENCH_LAYERS=
[ "$DRY_RUN" = 1 ] && BENCH_LAYERS=2
export BENCH_LAYERS
layers_arg() { [ -z "$BENCH_LAYERS" ] || echo "--layers $BENCH_LAYERS"; }

gpu_batches() {
  local cap=()
  [ "$DRY_RUN" = 1 ] && cap=(--max-batch 2 --reps 1)
  node dist/tools/device/gpu_batches.js $(layers_arg) "${cap[@]}" >"$WORK/gpu_batches.json" || return 1
  node -e '
    const r = require(process.argv[1]);
    for (const b of r.runs) console.log(`batch ${b.batch}: ${b.perImageS.toFixed(4)} s/image (first ${b.firstS.toFixed(2)} s)`);
    console.log(`largest batch: ${r.largestBatch} (${r.stoppedBecause})`);' "$WORK/gpu_batches.json"
}

largest_batch() { node -p 'require(process.argv[1]).largestBatch || 1' "$WORK/gpu_batches.json" 2>/dev/null || echo 1; }

bench_webgpu() {
  local reps=3
  [ "$DRY_RUN" = 1 ] && reps=1
  node dist/tools/bench.js --backend webgpu --batch "$(largest_batch)" --reps "$reps" $(layers_arg) --json >"$WORK/bench_webgpu.json" || return 1
  node dist/tools/bench.js --from-json "$WORK/bench_webgpu.json"
}

# torch_peer NAME DEVICE THREADS BATCH...: tools/bench_torch.py on the benchmarks' weights, one line of JSON per batch.
torch_peer() {
  local name=$1 device=$2 threads=$3 tower llava batch modes
  shift 3
  [ -n "$PYTHON" ] || { echo "no Python with torch" >"$WORK/$name.reason"; return 1; }
  if [ "$device" = cuda ] && ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "torch.cuda.is_available() is False here" >"$WORK/$name.reason"
    return 3
  fi
  read -r tower llava < <(node -e '
    const { weightsFor } = require("./dist/tools/bench.js");
    const g = weightsFor(process.cwd(), "F32", process.argv[1] ? Number(process.argv[1]) : undefined);
    console.log(g.towerDir, g.llavaDir);' "$BENCH_LAYERS") || return 1
  : >"$WORK/$name.json"
  for batch in "$@"; do
    modes=llava
    [ "$batch" = 1 ] && modes=llava,full
    OMP_NUM_THREADS=$threads "$PYTHON" tools/bench_torch.py --tower "$tower" --llava "$llava" --device "$device" \
      --threads "$threads" --batch "$batch" --reps "$([ "$DRY_RUN" = 1 ] && echo 1 || echo 5)" --modes "$modes" |
      tee -a "$WORK/$name.json"
    [ "${PIPESTATUS[0]}" = 0 ] || return 1
  done
}
torch_cuda() { torch_peer torch_cuda cuda 1 1 "$(largest_batch)"; }
torch_cpu() { torch_peer torch_cpu cpu "$(nproc)" 1 "$([ "$DRY_RUN" = 1 ] && echo 2 || echo 8)"; }

# One round before PyTorch's runs and one after (--reps 1): two timed forwards per thread count, each
# round also replaying the GEMM ceilings (the longest step: it runs last but the cheap ones).
cpu_scaling() {
  local cores n list=()
  cores=$(nproc)
  for n in 1 2 4 8 16 32 64; do [ "$n" -le "$cores" ] && list+=("$n"); done
  [ "${list[-1]}" = "$cores" ] || list+=("$cores")
  LLAVA_VISION_PYTHON=$PYTHON node dist/tools/bench.js --threads "$(
    IFS=,
    echo "${list[*]}"
  )" --vs-torch --reps 1 $(layers_arg) --json >"$WORK/cpu_scaling.json" || return 1
  node dist/tools/bench.js --from-json "$WORK/cpu_scaling.json"
}

export -f layers_arg setup host adapter test_webgpu weights reference check check_webgpu check_wasm gpu_batches largest_batch \
  bench_webgpu torch_peer torch_cuda torch_cpu cpu_scaling print_budget unxz_to

# -------------------------------------------------------------------------------------------------- run

say "$( [ $DRY_RUN = 1 ] && echo 'DRY RUN (small model, CPU adapter accepted)' || echo 'GPU host run'), deadline $DEADLINE_S s, results in $OUTDIR"
say "tree $ROOT, work $WORK, $(nproc) cores, $(uname -sr)"
: >"$WORK/steps.tsv"
export PATH=$WORK/bin:$PATH ALLOW_STALE

run_step setup 120 setup
NODE_OK=$([ "$(status_of setup)" = ok ] && echo 1 || echo 0)
GPU_LIBS=
[ $NODE_OK = 1 ] && setup_gpu_libraries
printf '{"node": "%s", "carried_libraries": "%s", "vk_driver_files": "%s", "egl_vendor_files": "%s", "sharp": %s}\n' \
  "$([ $NODE_OK = 1 ] && node --version)" "$GPU_LIBS" "${VK_DRIVER_FILES:-}" "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" \
  "$([ -f "$BUNDLE/sharp.tar.xz" ] && echo true || echo false)" >"$WORK/setup.json"
export PYTHON
PYTHON=$(find_python)
run_step host 60 host

if [ $NODE_OK = 1 ]; then
  run_step adapter 60 adapter
else
  skip adapter "setup failed"
fi
GPU_OK=$([ "$(status_of adapter)" = ok ] && echo 1 || echo 0)

# The model and its truth are CPU work: made in the background while the GPU runs the suites.
if [ $NODE_OK = 1 ]; then
  (
    if run_step weights 120 weights; then run_step reference 300 reference; else skip reference "weights failed"; fi
  ) >"$WORK/background.log" 2>&1 &
  BACKGROUND=$!
else
  skip weights "setup failed"
  skip reference "setup failed"
  BACKGROUND=
fi

if [ $GPU_OK = 1 ]; then run_step test_webgpu 240 test_webgpu; else skip test_webgpu "no WebGPU adapter (adapter step)"; fi

if [ -n "$BACKGROUND" ]; then
  wait "$BACKGROUND"
  say "=== background steps (weights, reference), as they ran:"
  cat "$WORK/background.log"
fi

if [ $GPU_OK = 1 ] && [ "$(status_of reference)" = ok ]; then run_step check_webgpu 180 check_webgpu
else skip check_webgpu "needs the adapter and the reference (adapter: $(status_of adapter), reference: $(status_of reference))"; fi
if [ $GPU_OK = 1 ]; then
  run_step gpu_batches 150 gpu_batches
  run_step bench_webgpu 240 bench_webgpu
else
  skip gpu_batches "no WebGPU adapter"
  skip bench_webgpu "no WebGPU adapter"
fi
if [ $NODE_OK = 1 ]; then
  run_step torch_cuda 120 torch_cuda
  run_step cpu_scaling 300 cpu_scaling
  run_step torch_cpu 120 torch_cpu
else
  for s in torch_cuda cpu_scaling torch_cpu; do skip $s "setup failed"; done
fi
if [ "$(status_of reference)" = ok ]; then run_step check_wasm 180 check_wasm; else skip check_wasm "no reference"; fi

say "=== results"
SUMMARIZE_PY=$(command -v python3 || echo "$PYTHON")
if [ -n "$SUMMARIZE_PY" ]; then
  "$SUMMARIZE_PY" tools/device/summarize.py --work "$WORK" --out "$OUTDIR/device_check.json" --started "$START" \
    --deadline "$DEADLINE_S" --dry-run "$DRY_RUN" || say "summarize.py failed: the step outputs stay in $WORK"
else
  say "no python3 for the summary: the step outputs stay in $WORK"
fi
# The benchmarks' own reports beside them (npm run bench -- --from-json FILE renders their tables).
for f in gpu_batches.json bench_webgpu.json cpu_scaling.json; do [ -s "$WORK/$f" ] && cp "$WORK/$f" "$OUTDIR/$f"; done
# The step outputs stay in the work folder; the unpacked node and libraries go.
rm -rf "$WORK/bin" "$WORK/sysroot" "$WORK"/*.tar
say "done in $(($(date +%s) - START)) s: $OUTDIR/device_check.log, $OUTDIR/device_check.json (step outputs: $WORK)"
# Exit code 1 when a step failed or timed out (skipped steps say why in the summary).
! awk -F'\t' '$2 == "failed" || $2 == "timeout" { bad = 1 } END { exit !bad }' "$WORK/steps.tsv"
