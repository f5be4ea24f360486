#!/usr/bin/env bash
# One prepared device check: speed and memory of both methods at full size, and the suite's quick tests, on whatever
# accelerator the machine has. Every step has a timeout; a summary is always written and printed.
#
#   scripts/device_check.sh --prepare                 # here, with a package registry: fetch the wheels the GPU machine
#                                                     # lacks (diffusers) into .whl/ and copy the golden fixtures into
#                                                     # .golden/ (both git-ignored; carry them: carry=[".whl", ".golden"])
#   scripts/device_check.sh                           # on the device machine: cuda, full-size SD-1.5 (random weights)
#   scripts/device_check.sh --device cpu --arch tiny --quick --out /tmp/dc   # the CPU path (tested in the suite)
#
# Options: --device DEV (default cuda), --arch sd15|tiny (default sd15), --size N (default 512), --out DIR (default
# $OUT, else docs/gpu), --quick (short edits: a smoke test of the script itself), --no-tests, --no-sdxl.
# Writes DIR/env.json, DIR/bench_<name>.json (rows of scripts/benchmark.py), DIR/tests.log and DIR/summary.md.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda ARCH=sd15 SIZE=512 OUTDIR="${OUT:-docs/gpu}" QUICK=0 TESTS=1 SDXL=1 PREPARE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift ;;
    --arch) ARCH=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    --quick) QUICK=1 ;;
    --no-tests) TESTS=0 ;;
    --no-sdxl) SDXL=0 ;;
    --prepare) PREPARE=1 ;;
    *) echo "device_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$PREPARE" = 1 ]; then
  rm -rf .whl .golden && mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d .whl "diffusers==$(python3 -c 'import diffusers; print(diffusers.__version__)')" \
    || exit 1
  shared="${DRAGKIT_SHARED:-../shared}"
  [ -d "$shared/golden" ] && cp -r "$shared/golden" .golden
  du -sh .whl .golden 2>/dev/null
  exit 0
fi

mkdir -p "$OUTDIR"
PY=python3
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dragkit-site .whl/*.whl
  export PYTHONPATH="/tmp/dragkit-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
[ -d .golden ] && export DRAGKIT_SHARED="$PWD/.golden-root" && mkdir -p .golden-root && ln -sfn ../.golden .golden-root/golden

STATUS=()  # one "name: ok|failed (rc)|timed out" line per step
step() {  # step NAME SECONDS COMMAND...: run with a timeout, record the outcome, never abort the script
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  case $rc in
    0) STATUS+=("$name: ok") ;;
    124|137) STATUS+=("$name: timed out after ${limit}s") ;;
    *) STATUS+=("$name: failed (exit $rc)") ;;
  esac
}

summary() {
  $PY - "$OUTDIR" "${STATUS[@]}" <<'EOF'
import json, sys
from pathlib import Path
out, status = Path(sys.argv[1]), sys.argv[2:]
sys.path.insert(0, "scripts")
lines = ["# Device check", ""]
env = out / "env.json"
if env.exists():
    e = json.loads(env.read_text())
    lines += [f"- {k}: {v}" for k, v in e.items()] + [""]
lines += ["## Steps", ""] + [f"- {s}" for s in status] + [""]
try:
    from benchmark import markdown
except Exception as exc:  # torch or the package missing: the steps above say why
    markdown = None
    lines.append(f"(tables unavailable: {exc})")
for f in sorted(out.glob("bench_*.json")):
    rows = json.loads(f.read_text())
    if rows and markdown:
        lines += [f"## {f.stem[6:]}", "", markdown(rows), ""]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
}
trap summary EXIT

step environment 120 $PY - "$OUTDIR" <<'EOF'
import json, platform, sys
from pathlib import Path
import torch
info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"}
for name in ("diffusers", "transformers", "peft"):
    try:
        info[name] = __import__(name).__version__
    except Exception as exc:
        info[name] = f"missing ({type(exc).__name__})"
Path(sys.argv[1], "env.json").write_text(json.dumps(info, indent=1))
print(info)
EOF

SHORT=()
if [ "$QUICK" = 1 ]; then
  SHORT=(--set lora_steps=2 --set optimization_steps=3 --set num_inference_steps=10 --set drag_denoise_steps=1
         --set trackings_per_denoise=2)
fi
BENCH=($PY scripts/benchmark.py --arch "$ARCH" --device "$DEVICE" --size "$SIZE" --warmup "${SHORT[@]}")
DTYPES=(fp16 bf16)
[ "$DEVICE" = cpu ] && DTYPES=(fp32)
for dt in "${DTYPES[@]}"; do
  step "bench $ARCH $dt" 120 "${BENCH[@]}" --dtype "$dt" --json "$OUTDIR/bench_${ARCH}_${dt}.json"
done
if [ "$SDXL" = 1 ] && [ "$ARCH" = sd15 ]; then
  step "bench sdxl fp16 1024" 150 $PY scripts/benchmark.py --arch sdxl --device "$DEVICE" --size 1024 --warmup \
    --dtype fp16 "${SHORT[@]}" --json "$OUTDIR/bench_sdxl_fp16.json"
fi
if [ "$TESTS" = 1 ]; then
  step tests 90 $PY -m pytest -q -x -p no:cacheprovider tests/test_primitives.py tests/test_editor_story.py \
    tests/test_sdxl.py tests/test_golden_dragdiffusion.py -o log_cli=false > "$OUTDIR/tests.log" 2>&1
  tail -3 "$OUTDIR/tests.log"
fi
