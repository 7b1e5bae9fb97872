#!/usr/bin/env bash
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
# One bounded check of medtransfer on a GPU machine, run from the repository root:
#
#     bash benchmarks/gpu_check.sh          # needs .whl/ (the wheels of the packages the machine lacks)
#
# Steps, most important first; each runs under `timeout` and within a total budget (BUDGET_S,
# default 380 s), and the next one starts whatever the last one returned:
#   sanity      nvidia-smi, versions, `import medtransfer, medtransfer.cli`, CUDA present
#   pytest      every test that exercises CUDA (tests needing Keras skip where it is missing)
#   demo-run    the shipped demo study trained on the GPU through the CLI (`medtransfer run demo`)
#   demo-analyze, demo-check   its analysis on the GPU; every run and the analysis really used it
#   similarity  benchmarks/similarity.py: cca on float64 / float32 GPU tensors vs the CPU float64 result
#   throughput  benchmarks/train_throughput.py: ResNet50 images/s, 224 and 112 px, batch 128,
#               fp32 / bf16 autocast, channels-last on / off
#   compile     the same with torch.compile (bf16, channels-last)
# Logs go to $OUT/<step>.log (OUT defaults to ./gpu-out); $OUT/summary.txt has one line per step:
# its exit code (124: timed out, "skipped": no time left), seconds, and its log's last line.
# Local dry run on the CPU (tiny sizes): DEVICE=cpu QUICK=1 with the first line replaced.

set -u -o pipefail
export PYTHONUNBUFFERED=1 KERAS_BACKEND=torch MEDTRANSFER_QUIET=1
OUT=${OUT:-$PWD/gpu-out}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
BUDGET_S=${BUDGET_S:-380}
DEMO_DIR=${DEMO_DIR:-/tmp/medtransfer-gpu-demo}  # 1.5 GB of checkpoints: kept out of $OUT
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
BEGAN=$(date +%s)
{
    echo "medtransfer GPU check $(date -u +%FT%TZ) device=$DEVICE quick=$QUICK budget=${BUDGET_S}s"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' + local changes')"
} | tee "$SUMMARY"

# step NAME LIMIT_S COMMAND...: run it under timeout (capped by the budget left), log to
# $OUT/NAME.log and stdout, and add one line to the summary.
step() {
    local name=$1 limit=$2 began rc left last
    shift 2
    left=$((BUDGET_S - ($(date +%s) - BEGAN)))
    if ((left < 20)); then
        printf '%-13s rc=skipped  (no time left in the %ss budget)\n' "$name" "$BUDGET_S" | tee -a "$SUMMARY"
        return
    fi
    ((limit > left)) && limit=$left
    began=$(date +%s)
    echo "=== $name (limit ${limit}s, $(date -u +%T)): $*" | tee "$OUT/$name.log"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    rc=$?
    last=$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-160)
    printf '%-13s rc=%-3s %4ss  %s\n' "$name" "$rc" "$(($(date +%s) - began))" "$last" | tee -a "$SUMMARY"
}

sanity() {
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    python3 - "$DEVICE" <<'EOF'
import importlib, sys
import torch
import medtransfer, medtransfer.cli  # noqa: F401 - the package and every command module import
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version())
for name in ("numpy", "scipy", "sklearn", "pandas", "h5py", "pydantic", "typer", "rich", "typing_extensions"):
    module = importlib.import_module(name)
    print(f"  {name} {getattr(module, '__version__', '?')} ({module.__file__})")
if sys.argv[1].startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("CUDA NOT AVAILABLE to torch")
    print("GPU:", torch.cuda.get_device_name(0), "| bf16:", torch.cuda.is_bf16_supported(),
          "| memory", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1), "GiB")
print("sanity ok")
EOF
}

demo_check() {
    python3 - "$DEMO_DIR" "$DEVICE" "$OUT/demo" <<'EOF'
import json, shutil, sys
from pathlib import Path
import numpy as np
import pandas as pd
study, device, keep = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
metrics = sorted(study.glob("runs/**/metrics.json"))
devices = {json.loads(m.read_text()).get("device") for m in metrics if m.parent.name != "probe"}
auc = pd.read_csv(study / "results" / "auc.csv")
sim = pd.read_csv(study / "analysis" / "similarity.csv")
report = (study / "report.html").read_text()
print(auc.groupby(["source", "strategy"])["auc"].agg(["mean", "std", "count"]).round(3).to_string())
print((study / "results" / "table2.md").read_text())
keep.mkdir(parents=True, exist_ok=True)
for name in ("results/auc.csv", "results/table2.md", "analysis/similarity.csv", "analysis/prediction_similarity.csv",
             "analysis/correlation.csv"):
    shutil.copy(study / name, keep / Path(name).name)
problems = []
from medtransfer.study.config import StudyConfig
from medtransfer.study.expand import expand
expected = len(expand(StudyConfig.from_yaml(study / "study.resolved.yaml")))
if len(auc) != expected or auc["auc"].isna().any():
    problems.append(f"expected {expected} runs with an AUC, got {len(auc)} ({auc['auc'].isna().sum()} without)")
if not all(str(d).startswith(device) for d in devices):
    problems.append(f"runs trained on {sorted(map(str, devices))}, expected {device}")
if sim.empty or not np.isfinite(sim["mean"]).all():
    problems.append("analysis/similarity.csv empty or not finite")
if f" s on {device}" not in report:
    problems.append(f"report.html does not say the analysis ran on {device}")
print(f"{len(metrics)} metrics files, run devices {sorted(map(str, devices))}, {len(sim)} similarity rows")
if problems:
    sys.exit("demo check FAILED: " + "; ".join(problems))
print("demo check ok")
EOF
}

export -f sanity demo_check
export OUT DEVICE DEMO_DIR

if [ "$QUICK" = 1 ]; then
    SIM_ARGS=(--sizes 2000x16 3000x64 --repeats 1)
    TP_ARGS=(--size 32 --batch 4 --steps 1 --rounds 1 --threads 2)
    TP_GRID=(--amp off bf16 --channels-last on)
    TP_COMPILE=()  # compiling on a small CPU takes minutes: not in the quick run
else
    SIM_ARGS=(--sizes 20000x64 50000x512 50000x2048 --repeats 3)
    TP_ARGS=(--size 224 112 --batch 128 --steps 4 --rounds 3)
    TP_GRID=(--amp off bf16 --channels-last on off)
    TP_COMPILE=(--size 224 112 --batch 128 --steps 4 --rounds 3 --budget-s 45)
fi

rm -rf "$DEMO_DIR"
step sanity 60 bash -c sanity
step pytest 150 python3 -m pytest -p no:cacheprovider -q -rs --durations=10 --junitxml="$OUT/pytest.xml" \
    tests/similarity/test_torch.py tests/data/test_augment.py tests/test_cuda.py
step demo-run 200 python3 -m medtransfer.cli run demo --out "$DEMO_DIR" --device "$DEVICE"
step demo-analyze 120 python3 -m medtransfer.cli analyze "$DEMO_DIR" --device "$DEVICE"
step demo-check 30 bash -c demo_check
step similarity 120 python3 benchmarks/similarity.py --device "$DEVICE" "${SIM_ARGS[@]}"
step throughput 120 python3 benchmarks/train_throughput.py --device "$DEVICE" "${TP_ARGS[@]}" "${TP_GRID[@]}" \
    --compile off --budget-s 90
if ((${#TP_COMPILE[@]})); then
    step compile 150 python3 benchmarks/train_throughput.py --device "$DEVICE" "${TP_COMPILE[@]}" --amp bf16 \
        --channels-last on --compile on --candidates ours ours+augment
else
    printf '%-13s rc=skipped  (quick run)\n' compile | tee -a "$SUMMARY"
fi

echo "=== digest"
{
    grep -h "passed\|failed\|error" "$OUT/pytest.log" | tail -n 3
    grep -h "FAILED\|Error" "$OUT/pytest.log" | head -n 20
    grep -h "metrics files\|demo check" "$OUT/demo-check.log"
    grep -h "x .*reference\|^cca" "$OUT/similarity.log"
    grep -h "size=\|FAILED\|skipped" "$OUT/throughput.log" "$OUT/compile.log"
    echo "total $(($(date +%s) - BEGAN)) s"
} 2>/dev/null | tee "$OUT/digest.txt"
echo "=== summary"
cat "$SUMMARY"
