#!/usr/bin/env bash
# Dependency floors (issue 22): install the lowest versions pyproject.toml declares into a fresh venv and run the fast
# test tier (-m "not slow") against them. A floor that fails here is raised in pyproject.toml; README "Set-up" states
# the tested range.
#
#   scripts/check_floors.sh                      # venv in /tmp/dragkit-floors (re-used when it exists)
#   FLOORS_VENV=DIR TORCH=2.13.0 scripts/check_floors.sh -x -q    # pytest options after the script's name
#
# torch: PyPI's Linux wheels of torch carry the CUDA runtime as dependencies (torch 2.1.0: a 670 MB wheel plus
# ≈ 2.5 GB of nvidia-* wheels; without them `import torch` fails: "libcublas.so.*[0-9] not found"), and PyPI has no
# CPU-only build. So torch is taken at $TORCH (default: the CPU build this machine's pip finds, 2.13.0+cpu from
# /opt/wheels) and the floors of everything else are checked against it; torch's own floor is the oldest release
# with a CPU wheel your index serves (set TORCH=… where one is reachable, e.g. with --index-url of PyTorch's CPU index).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLOORS_VENV:-/tmp/dragkit-floors}
TORCH=${TORCH:-2.13.0}
# The declared minimums (pyproject.toml [project] dependencies), pinned exactly; read from pyproject so they cannot
# drift apart. torch is pinned to $TORCH (see above).
mapfile -t FLOORS < <(python3 - "$TORCH" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for d in deps:
    name, op, version = re.match(r"^([A-Za-z0-9_.\-]+)\s*(>=|==)?\s*([^,;\s]*)", d).groups()
    print(f"torch=={sys.argv[1]}" if name == "torch" else f"{name}=={version}" if op else name)
EOF
)
echo "floors: ${FLOORS[*]}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --no-compile --disable-pip-version-check)
START=$SECONDS
# one resolve for all of them (pip refuses a set that cannot be installed together: that is a finding too); the
# test extra's tools unpinned (the web app, Ray and the browser tests skip without theirs); --no-deps for
# dragkit itself (its declared deps are the floors above)
"${PIP[@]}" "${FLOORS[@]}" pytest hypothesis matplotlib
"${PIP[@]}" --no-deps -e .
echo "installed in $(( SECONDS - START )) s"
"$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
  | grep -iE '^(torch|diffusers|transformers|accelerate|peft|safetensors|pillow|numpy|tqdm|huggingface.hub|tokenizers) '
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$VENV/bin/python" -m pytest -m "not slow" -p no:cacheprovider "${@:--q}"
