#!/usr/bin/env bash
# The GPU check, in parts of at most 7 minutes each (a GPU machine here runs one command for at most
# 10 minutes, and about 15 in all). Each part prints the environment first (torch, CUDA, Triton,
# Lightning, the device, the TF32 flags), keeps going past a failure, writes its full log and its
# tables under --out DIR, and ends with a summary: the tests passed, failed and skipped with their
# names, the gated table with each ratio against its gate, the steps that failed or ran out of time.
#
#   bash benchmarks/gpu_check.sh --part tests --out DIR       the CUDA tests, and 300 steps of
#                                                             charrnn fit --config configs/gpu.yaml
#   bash benchmarks/gpu_check.sh --part gate --out DIR        bench_gpu.py's gated table: charrnn fit
#        against a bare nn.* loop, every cell, B64 T100 H256 and B128 T100 H512, fp32 and bf16, 2 rounds
#   bash benchmarks/gpu_check.sh --part context --out DIR     the eager, cuDNN and compiled columns at
#                                                             B128 fp32, then the two reported configs
#   bash benchmarks/gpu_check.sh --part race FILE --out DIR   configs/gpu.yaml on the hand-written BPTT
#        against nn.RNN with its recipe, 1 and 2 minutes, on the corpus FILE (tinyshakespeare carried as
#        a file: the GPU machine has no network)
#   bash benchmarks/gpu_check.sh --cpu [--out DIR]            every part at a tiny size on the CPU: CI
#                                                             runs this, so the script keeps working
#
# Without a CUDA device a part runs at that tiny size and its summary says what was skipped and why.
# Exit code: 0 when every step of the part ran, 1 when one failed or ran out of its time.
set -uo pipefail
cd "$(dirname "$0")/.."

parts=() out="" race_corpus=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) parts=(tests gate context race) cpu=true ;;
    --part)
      parts=("${2:?--part needs a name: tests, gate, context or race FILE}")
      if [ "$2" = race ]; then race_corpus="${3:?--part race needs the corpus FILE}"; shift; fi
      shift ;;
    --out) out="${2:?--out needs a folder}"; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (--part tests|gate|context|race FILE, --out DIR, --cpu)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#parts[@]} -gt 0 ] || { echo "gpu_check.sh: name a part (--part tests|gate|context|race FILE) or --cpu" >&2; exit 2; }
if [ -z "$out" ]; then out=$(mktemp -d); fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

cuda=$(python -c "import torch; print(int(torch.cuda.is_available()))")
if [ "${cpu:-false}" = true ] || [ "$cuda" = 0 ]; then  # that each part runs, not what it measures
  device=cpu accelerator=cpu tiny=true
else
  device=cuda accelerator=gpu tiny=false
fi

environment() {
  python - "$device" <<'PY'
import importlib.metadata as md
import sys

import torch

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"

gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"# GPU check on {sys.argv[1]}: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"Triton {version('triton')}, Lightning {version('lightning')}, {gpu}")
print(f"# TF32: cuDNN {torch.backends.cudnn.allow_tf32}, cuBLAS {torch.backends.cuda.matmul.allow_tf32}, "
      f"float32 matmul precision {torch.get_float32_matmul_precision()} (bench_gpu.py sets both off)")
PY
}

# step PART NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output into PART.log and
# onto the screen, and records how it ended in PART.status
step() {
  local part=$1 name=$2 limit=$3
  shift 3
  echo "### $name" | tee -a "$out/$part.log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$out/$part.log"
  local rc=${PIPESTATUS[0]}
  echo "$name $rc" >> "$out/$part.status"
  echo
}

part_tests() {
  if [ "$tiny" = true ]; then steps=5; else steps=300; fi
  # the files that mark tests gpu: collecting the whole suite only to deselect it takes a while
  mapfile -t gpu_files < <(grep -l "pytest.mark.gpu" tests/test_*.py)
  step tests "the CUDA tests (pytest -m gpu)" 330 \
    python -m pytest -q -p no:cacheprovider -n 0 -m gpu -rA --junitxml "$out/tests.xml" "${gpu_files[@]}"
  local root="$out/fit"
  step tests "charrnn fit --config configs/gpu.yaml, $steps steps on the built-in corpus" 120 \
    charrnn fit --config configs/gpu.yaml --data.corpus builtin --trainer.accelerator "$accelerator" \
    --trainer.max_steps "$steps" --trainer.max_time null --trainer.enable_progress_bar false \
    --trainer.enable_model_summary false --trainer.default_root_dir "$root"
  step tests "the fit's last checkpoint: every step, finite weights" 60 python - "$root" "$steps" <<'PY'
import sys
from pathlib import Path

import torch

root, steps = Path(sys.argv[1]), int(sys.argv[2])
ckpt = torch.load(next(root.glob("**/last.ckpt")), map_location="cpu", weights_only=True)
finite = all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
print(f"global_step {ckpt['global_step']} of {steps}; final weights finite: {finite}")
sys.exit(0 if ckpt["global_step"] == steps and finite else 1)
PY
}

part_gate() {
  if [ "$tiny" = true ]; then
    args=(--dtype fp32 --configs "B2 T8 H16 L1" --steps 3 --warmup 2 --rounds 1)
  else
    args=()  # the gated configs, fp32 and bf16, 2 rounds
  fi
  step gate "bench_gpu.py: charrnn fit against a bare nn.* loop, the gated configs" 400 \
    python benchmarks/bench_gpu.py --device "$device" "${args[@]}"
}

part_context() {
  if [ "$tiny" = true ]; then
    context=(--dtype fp32 --configs "B2 T8 H16 L1" --steps 3 --warmup 2 --rounds 1 --context)
    reported=()
  else
    context=(--context --dtype fp32 --configs "B128 T100 H512" --rounds 1)  # eager, cuDNN, compiled
    reported=(--dtype fp32 --configs "B50 T50 H512 L3" "B256 T128 H1024 L2" --rounds 1)
  fi
  step context "bench_gpu.py --context: kernel by kernel, cuDNN and compiled beside it" 240 \
    python benchmarks/bench_gpu.py --device "$device" "${context[@]}"
  if [ ${#reported[@]} -gt 0 ]; then
    step context "bench_gpu.py: the reported configs" 160 python benchmarks/bench_gpu.py --device "$device" "${reported[@]}"
  fi
}

part_race() {
  local corpus=$race_corpus
  if [ -z "$corpus" ]; then  # --cpu: a corpus of its own, small enough for a few steps
    corpus="$out/corpus.txt"
    python -c "from torch_charrnn.data.corpus import builtin_text; open('$corpus', 'w').write(builtin_text()[:80000])"
  fi
  local config=configs/gpu.yaml,--model.bptt=manual,--data.corpus=$corpus marks=(1 2)  # race.py's --corpus is its own
  if [ "$tiny" = true ]; then
    config+=,--model.hidden_size=16,--data.batch_size=4,--data.seq_len=16 marks=(0.03)
  fi
  step race "race.py: configs/gpu.yaml (bptt manual) against nn.RNN with its recipe" 400 \
    python benchmarks/race.py "$config" nn.RNN --recipe --marks "${marks[@]}" --device "$device" \
    --corpus "$corpus" "--fit-args=--trainer.accelerator=$accelerator" "--fit-args=--trainer.enable_progress_bar=false"
}

summary() {
  python - "$out" "$1" "$tiny" <<'PY'
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, part, tiny = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "true"
print(f"## Summary of the {part} part (logs: {out / (part + '.log')})\n")
if tiny:
    print("On the CPU at a tiny size: that every step runs, not what it measures (no CUDA device).\n")
steps = [line.rsplit(" ", 1) for line in (out / f"{part}.status").read_text().splitlines()]
for name, rc in steps:
    verdict = {"0": "ran", "124": "ran out of its time", "137": "killed after its time"}.get(rc, f"failed ({rc})")
    print(f"- {name}: {verdict}")
xml = out / "tests.xml"
if part == "tests" and xml.exists():
    cases = ET.parse(xml).getroot().iter("testcase")
    passed, failed, skipped = [], [], {}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif (skip := case.find("skipped")) is not None:
            skipped.setdefault(skip.get("message", "skipped"), []).append(name)
        else:
            passed.append(name)
    print(f"\ntests: {len(passed)} passed, {len(failed)} failed, {sum(map(len, skipped.values()))} skipped")
    for name in failed:
        print(f"  FAILED {name}")
    for why, names in skipped.items():
        print(f"  skipped ({why}): {len(names)}")
if part in ("gate", "context"):
    rows = [line for line in (out / f"{part}.log").read_text().splitlines() if re.match(r"\| \w+ \| B\d", line)]
    if rows:
        print("\n| cell | config | dtype | fit vs nn.* | gate |\n|---|---|---|---|---|")
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        print(f"| {cells[0]} | {cells[1]} | {cells[2]} | {cells[5]} | {cells[-1]} |")
    missed = [r for r in rows if "missed" in r]
    if part == "gate":
        print(f"\ngate: {len(rows) - len(missed)} of {len(rows)} rows met" + (" (tiny: not a measurement)" if tiny else ""))
sys.exit(0 if all(rc == "0" for _, rc in steps) else 1)
PY
}

status=0
for part in "${parts[@]}"; do
  case "$part" in tests|gate|context|race) ;; *) echo "gpu_check.sh: unknown part $part" >&2; exit 2 ;; esac
  rm -f "$out/$part.log" "$out/$part.status"
  environment | tee "$out/$part.log"
  echo
  "part_$part"
  summary "$part" | tee "$out/$part-summary.md" || status=1
  echo
done
exit $status
