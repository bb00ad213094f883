#!/usr/bin/env bash
# LEAF on a GPU: the checks and measurements that need CUDA, offline, in under 8 minutes, one table.
#
#   scripts/gpu_check.sh [--probe] [--out DIR] [--cpu-rehearsal]
#
# Runs, each under its own time limit (120 + 210 + 120 s at most):
#   1. the gpu-marked tests: leaf predict on CUDA (pinned batches, bf16 autocast + channels_last, CPU
#      parity) and the tiny transformers teacher in bf16 on CUDA (tests/test_predict.py,
#      tests/test_gpu_teacher.py, and any other test file marked gpu);
#   2. benchmarks/measure_costs.py --device cuda: student training/evaluation images/s, written as a
#      costs file for `leaf estimate-cost --costs` ($OUT/cuda_costs.json);
#   3. benchmarks/bench_predict.py --device cuda: leaf predict end to end against the forward bound
#      ($OUT/bench_predict.json);
# then prints one table (also saved as $OUT/table.md).
#
# Needs Python with torch (CUDA), torchvision, timm and transformers -- the usual preinstalled stack
# -- and LEAF's other dependencies (numpy, polars, pyarrow, pyyaml, jsonschema, pillow, safetensors,
# tqdm, scipy, scikit-image, pytest). No network is used. Missing ones are installed from ./.whl
# (`pip install --no-index --find-links .whl`) when that folder exists -- fill it on a machine with
# PyPI access: `pip download --only-binary=:all: --python-version 3.12 --platform
# manylinux2014_x86_64 -d .whl <the packages --probe lists>` -- otherwise every step that needs a
# missing package is reported as skipped, naming it. --probe prints the environment and what is
# missing, and exits. --cpu-rehearsal runs the same steps on the CPU in smoke-test sizes (the gpu
# tests then skip), to check the script itself on a machine without a GPU. PYTHON=... picks the
# interpreter (default python3).
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=""
PROBE=0
DEVICE=cuda
QUICK=""
COST_MODELS="resnet18 resnet50 convnext_tiny convnext_base convnext_large"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --probe) PROBE=1 ;;
        --cpu-rehearsal) DEVICE=cpu; QUICK=--quick; COST_MODELS="resnet18" ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-$(mktemp -d /tmp/leaf_gpu_check.XXXXXX)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STATUS="$OUT/status.tsv"
: > "$STATUS"

# module -> pip package, for everything the three steps import.
MODULES="torch:torch torchvision:torchvision timm:timm transformers:transformers numpy:numpy scipy:scipy \
polars:polars pyarrow:pyarrow yaml:pyyaml jsonschema:jsonschema PIL:pillow safetensors:safetensors \
tqdm:tqdm skimage:scikit-image pytest:pytest"

missing_packages() {
    "$PY" - "$MODULES" <<'EOF'
import importlib.util, sys
missing = [pip for mod, pip in (m.split(":") for m in sys.argv[1].split()) if importlib.util.find_spec(mod) is None]
print(" ".join(missing))
EOF
}

echo "== environment"
"$PY" - <<'EOF' || { echo "gpu_check: $PY cannot import torch; nothing to check" >&2; exit 2; }
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    print(f"  GPU {i}: {torch.cuda.get_device_name(i)}")
EOF
MISSING=$(missing_packages)
if [[ -n "$MISSING" && -d .whl ]]; then
    echo "installing from .whl: $MISSING"
    "$PY" -m pip install --quiet --no-index --find-links .whl $MISSING || echo "gpu_check: some wheels were not in .whl"
    MISSING=$(missing_packages)
fi
echo "missing Python packages: ${MISSING:-none}"
[[ $PROBE == 1 ]] && exit 0
if [[ $DEVICE == cuda ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device; these checks need one" >&2
    exit 2
fi

# step NAME LIMIT_S NEEDED_PACKAGES -- COMMAND...: runs COMMAND unless a needed package is missing.
step() {
    local name=$1 limit=$2 needs=$3; shift 4
    local lacking=""
    for pkg in $needs; do [[ " $MISSING " == *" $pkg "* ]] && lacking+="$pkg "; done
    if [[ -n "$lacking" ]]; then
        echo "== $name: skipped (missing: $lacking)"
        printf '%s\tskipped\t0\tmissing %s\n' "$name" "$lacking" >> "$STATUS"
        return
    fi
    echo "== $name (limit ${limit} s)"
    local start=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    local took=$((SECONDS - start))
    tail -n 5 "$OUT/$name.log"
    case $rc in
        0) printf '%s\tok\t%s\t\n' "$name" "$took" >> "$STATUS" ;;
        124|137) printf '%s\ttimed out\t%s\tover %s s\n' "$name" "$took" "$limit" >> "$STATUS" ;;
        *) printf '%s\tfailed (exit %s)\t%s\tsee %s\n' "$name" "$rc" "$took" "$OUT/$name.log" >> "$STATUS" ;;
    esac
}

LEAF_DEPS="numpy scipy polars pyarrow pyyaml jsonschema pillow safetensors tqdm timm torchvision"
GPU_TESTS=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
step gpu_tests 120 "$LEAF_DEPS pytest scikit-image transformers" -- \
    "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs $GPU_TESTS
step measure_costs 210 "$LEAF_DEPS" -- \
    "$PY" benchmarks/measure_costs.py --device $DEVICE $QUICK --models $COST_MODELS --out "$OUT/cuda_costs.json"
step bench_predict 120 "$LEAF_DEPS" -- \
    "$PY" benchmarks/bench_predict.py --device $DEVICE $QUICK --json "$OUT/bench_predict.json"

"$PY" - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = [("check", "status", "seconds", "figures")]
for line in (out / "status.tsv").read_text().splitlines():
    name, status, took, note = (line.split("\t") + [""] * 4)[:4]
    figures = note
    if name == "gpu_tests" and (out / "gpu_tests.log").exists():
        summary = [l for l in (out / "gpu_tests.log").read_text().splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
        figures = summary[-1].strip("= ") if summary else note
    if name == "measure_costs" and (out / "measure_costs.log").exists():
        measured = re.findall(r"^\s*(\S+): train\s+([\d.]+) img/s, eval\s+([\d.]+) img/s",
                              (out / "measure_costs.log").read_text(), re.M)
        figures = "; ".join(f"{m}: train {float(t):.0f} / eval {float(e):.0f} img/s" for m, t, e in measured)
    if name == "bench_predict" and (out / "bench_predict.json").exists():
        b = json.loads((out / "bench_predict.json").read_text())
        figures = f"loader {b['loader_images_per_s']:.0f} img/s ({b['workers']} workers); " + "; ".join(
            f"{m}: end to end {r['end_to_end_images_per_s']:.0f} of bound {r['bound_images_per_s']:.0f} img/s "
            f"({r['ratio']:.2f})" for m, r in b["models"].items())
    rows.append((name, status, took, figures))
print("\n| " + " | ".join(rows[0]) + " |\n|---|---|---|---|")
for r in rows[1:]:
    print("| " + " | ".join(r) + " |")
print(f"\nlogs and JSON: {out}")
EOF
! grep -qv "	ok	" "$STATUS"
