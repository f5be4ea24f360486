#!/usr/bin/env bash
# One prepared device check: speed, UNet calls and memory of every method at full size (cold edit, preparation and warm
# re-edit; DragDiffusion and GoodDrag in fp16 and bf16, eager and torch.compile; FastDrag and SolidDrag in fp16), and
# the suite's device-relevant tests, on whatever accelerator the machine has. Every step has a timeout and the whole run a budget (default 450 s: under 8 minutes on an H100/H200);
# a summary is always written and printed.
#
#   scripts/device_check.sh --prepare                 # here, with a package registry: fetch the wheels the GPU machine
#                                                     # lacks (diffusers) into .whl/ and copy the golden fixtures into
#                                                     # .golden/ (both git-ignored; carry them: carry=[".whl", ".golden"])
#   scripts/device_check.sh                           # on the device machine: cuda, full-size SD-1.5 (random weights)
#   scripts/device_check.sh --budget 560 --only fp16-compile,bf16-compile   # a second call for what did not fit
#   scripts/device_check.sh --budget 120 --only fastdrag                    # the one-step methods alone (≈ 1 min)
#   scripts/device_check.sh --device cpu --arch tiny --quick --out /tmp/dc   # the CPU path (tested in the suite)
#
# Rows (--only takes a comma list; default: all of these in this order, most wanted first):
#   fp16          DragDiffusion and GoodDrag, paper defaults (LoRA 80/70 steps, ≤ 80 drag steps / AlDD 7×10×3),
#                 --warmup, cold + prepare + warm
#   fastdrag      FastDrag and SolidDrag (the one-step methods), paper defaults (10 DDIM steps, 7 inverted, no LoRA),
#                 fp16, --warmup, cold + prepare + two warm re-edits (warp + denoising only); its rows are added to
#                 the fp16 row's JSON (one table, side by side; and the 8 files a device call brings back)
#   tests         DRAGKIT_TEST_DEVICE=$DEVICE pytest -m device: the tests marked device-relevant (half precision,
#                 compile, host syncs, prepared images, memory)
#   bf16          reduced steps (REDUCED below: LoRA 20, drag 20, AlDD 2×10×3), --warmup, cold + prepare + warm
#   fp16-compile  REDUCED, --compile (inductor; on cpu: dynamo's eager backend), no warmup: the cold edit includes
#                 the compilation of every graph (LoRA step, inversion, drag, denoising), prepare and warm run compiled
#   bf16-compile  the same in bf16
#   sdxl          (opt-in, --sdxl) SDXL architecture at 1024², fp16, paper defaults, cold only
# On cpu, fp32 replaces fp16 and bf16 (fp32, fastdrag in fp32, fp32-compile).
#
# Sizing (docs/performance.md "Speed" and "Device check"): a paper-default SD-1.5 512² edit is ≈ 0.8 PFLOP with the
# LoRA's checkpointing recompute (GoodDrag's 210 drag steps: ≈ 0.9), ≈ 4.5–10 s at the 6–25 % of the 990 TFLOP/s peak
# an eager UNet reaches; the fp16 row (model build ≈ 20 s, warmups, cold + prepare + warm of both methods) ≈ 60–120 s;
# the fastdrag row ≈ 30–40 s (model build ≈ 20 s; an edit is 14 UNet forwards + 1 partial for SolidDrag, ≈ 15 TFLOP,
# ≈ 0.2–0.3 s each at that utilisation: `dragkit bench speed --flops`); the tests ≈ 60–150 s (146 s on a 2-core CPU at 1 thread); bf16 runs a quarter of the LoRA and drag steps (≈ 40 s:
# bf16 and fp16 run at the same rate on Hopper, so per-step times carry over). Compilation does not depend on the step
# count (≈ 5 graph variants per method and dtype, assumed ≈ 1 min each with inductor), so the compile rows run REDUCED
# steps and get what is left of the budget: fp16-compile is expected to finish at least DragDiffusion, bf16-compile
# not to fit. A row that does not fit is reported as timed out or skipped, with the rows it finished (the benchmark
# writes its JSON after every row); run it alone in a second call with --only.
#
# Options: --device DEV (default cuda), --arch sd15|tiny (default sd15), --size N (default 512), --out DIR (default
# $OUT, else docs/gpu), --budget SECONDS (default 450), --only ROWS, --quick (short edits, and the compile rows
# DragDiffusion alone without reference attention: a smoke test of the script itself), --no-tests, --sdxl,
# --compile-backend B (default inductor on cuda, eager on cpu).
# Writes DIR/env.json, DIR/bench_<arch>_<row>.json (rows of dragkit bench speed), DIR/tests.log, DIR/steps.json and
# DIR/summary.md (8 files at most: what a device call brings back).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda ARCH=sd15 SIZE=512 OUTDIR="${OUT:-docs/gpu}" QUICK=0 TESTS=1 SDXL=0 PREPARE=0 BUDGET=450 ONLY="" BACKEND=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift ;;
    --arch) ARCH=$2; shift ;;
    --size) SIZE=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --compile-backend) BACKEND=$2; shift ;;
    --quick) QUICK=1 ;;
    --no-tests) TESTS=0 ;;
    --sdxl) SDXL=1 ;;
    --no-sdxl) SDXL=0 ;;  # the default now; kept for old command lines
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

START=$SECONDS RESERVE=20 MIN_STEP=30  # seconds kept for the summary; the least a step is started with
mkdir -p "$OUTDIR"
rm -f "$OUTDIR"/bench_*.json "$OUTDIR"/tests.log "$OUTDIR"/steps.json
PY=python3
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
[ -d .golden ] && export DRAGKIT_SHARED="$PWD/.golden-root" && mkdir -p .golden-root && ln -sfn ../.golden .golden-root/golden
LOGS=$(mktemp -d)

STEPS=()  # one JSON object per step: name, outcome (ok, failed (exit N), timed out, skipped), limit_s, seconds
step() {  # step NAME SECONDS COMMAND...: run with a timeout inside the budget, record the outcome, never abort
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - (SECONDS - START) - RESERVE ))
  if [ "$left" -lt "$MIN_STEP" ]; then
    STEPS+=("{\"name\": \"$name\", \"outcome\": \"skipped\", \"limit_s\": 0, \"seconds\": 0}")
    echo "== $name: skipped, ${left}s left of the ${BUDGET}s budget"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s, $(( SECONDS - START ))s into the run)"
  local began=$SECONDS log="$LOGS/step${#STEPS[@]}.log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]} took=$(( SECONDS - began )) outcome
  case $rc in
    0) outcome=ok ;;
    124|137) outcome="timed out" ;;
    *) outcome="failed (exit $rc)" ;;
  esac
  STEPS+=("{\"name\": \"$name\", \"outcome\": \"$outcome\", \"limit_s\": $limit, \"seconds\": $took}")
}

summary() {
  local IFS=,
  printf '{"budget_s": %s, "elapsed_s": %s, "steps": [%s]}\n' "$BUDGET" "$(( SECONDS - START ))" "${STEPS[*]}" \
    > "$OUTDIR/steps.json"
  $PY - "$OUTDIR" "$ARCH" "$SIZE" "$LOGS" <<'EOF'
import json, sys
from pathlib import Path
out, arch, size, logs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
steps = json.loads((out / "steps.json").read_text())
lines = ["# Device check", "", f"{arch} at {size}², budget {steps['budget_s']} s, elapsed {steps['elapsed_s']} s", ""]
env = out / "env.json"
if env.exists():
    e = json.loads(env.read_text())
    lines += [f"- {k}: {v}" for k, v in e.items()] + [""]
lines += ["## Steps", ""]
for s in steps["steps"]:
    took = f" ({s['seconds']} s of {s['limit_s']} s)" if s["outcome"] != "skipped" else ""
    lines.append(f"- {s['name']}: {s['outcome']}{took}")
lines.append("")
try:
    from dragkit.benchmark.speed import markdown, warm_summary
except Exception as exc:  # torch or the package missing: the steps above say why
    markdown = None
    lines += [f"(tables unavailable: {exc})", ""]
for f in sorted(out.glob("bench_*.json"), key=lambda f: f.stat().st_mtime):
    try:
        rows = json.loads(f.read_text())
    except ValueError as exc:  # cut off mid-write by a timeout
        lines += [f"## {f.stem[6:]}", "", f"(unreadable: {exc})", ""]
        continue
    if rows and markdown:
        lines += [f"## {f.stem[6:]}", "", markdown(rows), ""] + [f"- {w}" for w in warm_summary(rows)] + [""]
tests = out / "tests.log"
if tests.exists():
    tail = [l for l in tests.read_text().splitlines() if l.strip()][-12:]
    lines += ["## Tests", "", "```", *tail, "```", ""]
for i, s in enumerate(steps["steps"]):  # what a failed or timed-out step printed last
    log = logs / f"step{i}.log"
    if s["outcome"] not in ("ok", "skipped") and log.exists():
        tail = log.read_text(errors="replace").splitlines()[-15:]
        lines += [f"## {s['name']}: {s['outcome']}, last lines", "", "```", *tail, "```", ""]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
  rm -rf "$LOGS"
}
trap summary EXIT
trap 'exit 143' TERM INT  # killed from outside: still write the summary

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  step install 90 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/dragkit-site .whl/*.whl
  export PYTHONPATH="/tmp/dragkit-site:${PYTHONPATH:-}"
fi

step environment 60 $PY - "$OUTDIR" <<'EOF'
import json, os, platform, sys
from pathlib import Path
import torch
info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "cpus": os.cpu_count()}
for name in ("diffusers", "transformers", "peft", "triton"):
    try:
        info[name] = __import__(name).__version__
    except Exception as exc:
        info[name] = f"missing ({type(exc).__name__})"
Path(sys.argv[1], "env.json").write_text(json.dumps(info, indent=1))
print(info)
EOF

# The rows' methods: the LoRA-and-optimisation methods (their step cuts, REDUCED and --quick, are about LoRA and drag
# steps) and the one-step methods (no LoRA, no optimisation: always paper defaults, cheap enough for any budget).
FOUNDING=(--method dragdiffusion --method gooddrag)
ONESTEP=(--method fastdrag --method soliddrag)
# Step counts: the main rows run paper defaults; REDUCED cuts the LoRA and the drag to a quarter (per-step times carry
# over); --quick cuts everything to a smoke test of the script.
REDUCED=(--set lora_steps=20 --set optimization_steps=20 --set drag_denoise_steps=2)
FULL=()
if [ "$QUICK" = 1 ]; then
  FULL=(--set lora_steps=2 --set optimization_steps=3 --set num_inference_steps=10 --set drag_denoise_steps=1
        --set trackings_per_denoise=2)
  REDUCED=("${FULL[@]}")
fi
COMPILED=("${FOUNDING[@]}" "${REDUCED[@]}")
if [ "$QUICK" = 1 ]; then  # tracing is what a compile row costs on the CPU (~20 s a method at 1 thread, ~60 s more
  # with reference attention): the smoke test compiles one method without it
  COMPILED=(--method dragdiffusion --set lora_steps=2 --set optimization_steps=3 --set num_inference_steps=10
            --set reference_attention=false)
fi
if [ -z "$BACKEND" ]; then
  BACKEND=inductor
  [ "$DEVICE" = cpu ] && BACKEND=eager  # inductor on the CPU compiles for many minutes
fi
if [ "$DEVICE" = cpu ]; then
  DEFAULT_ROWS=fp32,fastdrag,tests,fp32-compile
  ONESTEP_DTYPE=fp32
else
  DEFAULT_ROWS=fp16,fastdrag,tests,bf16,fp16-compile,bf16-compile
  ONESTEP_DTYPE=fp16
fi
ROWS=${ONLY:-$DEFAULT_ROWS}
[ "$SDXL" = 1 ] && [ -z "$ONLY" ] && ROWS="$ROWS,sdxl"
BENCH=($PY -m dragkit bench speed --arch "$ARCH" --device "$DEVICE" --size "$SIZE" --warm)

for row in ${ROWS//,/ }; do
  dt=${row%-compile}
  case $row in
    tests)
      [ "$TESTS" = 1 ] || continue
      step "tests on $DEVICE" 180 env DRAGKIT_TEST_DEVICE="$DEVICE" $PY -m pytest -q -p no:cacheprovider \
        --durations=8 -o log_cli=false -m device tests > "$OUTDIR/tests.log" 2>&1
      tail -3 "$OUTDIR/tests.log" ;;
    fp16|fp32)
      step "bench $ARCH $dt" 180 "${BENCH[@]}" "${FOUNDING[@]}" --dtype "$dt" --warmup "${FULL[@]}" \
        --json "$OUTDIR/bench_${ARCH}_${dt}.json" ;;
    fastdrag)
      step "bench $ARCH $ONESTEP_DTYPE fastdrag soliddrag" 90 "${BENCH[@]}" "${ONESTEP[@]}" --dtype "$ONESTEP_DTYPE" \
        --warmup --reedits 2 --json "$OUTDIR/bench_${ARCH}_${ONESTEP_DTYPE}.json" --append ;;
    bf16)
      step "bench $ARCH bf16 (reduced steps)" 100 "${BENCH[@]}" "${FOUNDING[@]}" --dtype bf16 --warmup "${REDUCED[@]}" \
        --json "$OUTDIR/bench_${ARCH}_bf16.json" ;;
    fp16-compile|bf16-compile|fp32-compile)
      step "bench $ARCH $dt compile $BACKEND (reduced steps)" 300 "${BENCH[@]}" --dtype "$dt" --compile "$BACKEND" \
        "${COMPILED[@]}" --json "$OUTDIR/bench_${ARCH}_${dt}_compile.json" ;;
    sdxl)
      step "bench sdxl fp16 1024" 150 $PY -m dragkit bench speed --arch sdxl --device "$DEVICE" --size 1024 --warmup \
        --dtype fp16 "${FULL[@]}" --json "$OUTDIR/bench_sdxl_fp16.json" ;;
    *) echo "device_check.sh: unknown row $row (fp16, fastdrag, bf16, fp32, tests, fp16-compile, bf16-compile, fp32-compile, sdxl)" >&2 ;;
  esac
done
