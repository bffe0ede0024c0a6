#!/usr/bin/env bash
# What a machine with a GPU should check, in one command sized for about 8 minutes on one GPU: the CUDA
# tests; bench_gpu.py, charrnn fit's own path against a bare nn.* loop for every cell (fp32 and
# bf16 at B64 T100 H256 and B128 T100 H512, the gated configs, 2 rounds; once in fp32 at B128 with
# the eager, cuDNN and compiled variants beside it, and at the two reported configs);
# and a short charrnn fit --config configs/gpu.yaml on the built-in corpus (the GPU machine has no
# network). --kernels adds bench_train.py's rows (each backend alone and through Trainer.fit);
# --race FILE races configs/gpu.yaml on the hand-written BPTT against nn.RNN with its recipe on the
# corpus FILE (tinyshakespeare, carried as a file: the machine has no network), 1, 2 and 3 minutes.
#
#   bash benchmarks/gpu_check.sh [--kernels] [--race FILE]   # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --cpu         # the same parts on the CPU at a tiny size: CI runs
#                                              # this, so the script keeps working between GPU sessions
set -euo pipefail
cd "$(dirname "$0")/.."
kernels=false
if [ "${1:-}" = "--cpu" ]; then  # that every part runs, not what it measures: as little time as will do
  device=cpu accelerator=cpu rounds=1 steps=5 budget=0.1 kernels=true
  configs=("B1 T20 H75")
  gpu_gated=(--dtype fp32 --configs "B2 T8 H16 L1" --steps 3 --warmup 2 --rounds 1 --context)
  gpu_context=()
  gpu_reported=()
else
  device=cuda accelerator=gpu rounds=2 steps=300 budget=0.5
  while [ $# -gt 0 ]; do
    case "$1" in
      --kernels) kernels=true ;;
      --race) race_corpus="$2"; shift ;;
      *) echo "gpu_check.sh: unknown option $1 (--cpu, --kernels, --race FILE)" >&2; exit 2 ;;
    esac
    shift
  done
  configs=("B64 T100 H256" "B128 T100 H512")
  gpu_gated=()  # the gated configs, fp32 and bf16, 2 rounds
  gpu_context=(--context --dtype fp32 --configs "B128 T100 H512" --rounds 1)  # eager, cuDNN, compiled
  gpu_reported=(--dtype fp32 --configs "B50 T50 H512 L3" "B256 T128 H1024 L2" --rounds 1)
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

python -c "import torch; d = torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device'; \
print(f'# GPU check: torch {torch.__version__}, CUDA {torch.version.cuda}, {d}, device $device\n')"

echo "## The CUDA tests (tests marked gpu)"
echo
if [ "$device" = cuda ]; then
  python -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -n 1
else  # they skip without a CUDA device, and the whole suite runs them right after in CI
  echo "skipped on the CPU: they run, and skip, in the whole suite"
fi
echo

echo "## bench_gpu.py: charrnn fit against a bare nn.* loop"
echo
python benchmarks/bench_gpu.py --device "$device" "${gpu_gated[@]}"
if [ ${#gpu_context[@]} -gt 0 ]; then
  echo; python benchmarks/bench_gpu.py --device "$device" "${gpu_context[@]}"
fi
if [ ${#gpu_reported[@]} -gt 0 ]; then
  echo; python benchmarks/bench_gpu.py --device "$device" "${gpu_reported[@]}"
fi
echo

if [ "$kernels" = true ]; then
  echo "## bench_train.py, fp32 then bf16"
  python benchmarks/bench_train.py --device "$device" --dtype fp32 bf16 --configs "${configs[@]}" --budget "$budget" \
    --rounds "$rounds" --no-memory --no-numpy --no-autograd
  echo
fi

echo "## charrnn fit --config configs/gpu.yaml, $steps steps on the built-in corpus"
echo
start=$(date +%s.%N)
charrnn fit --config configs/gpu.yaml --data.corpus builtin --trainer.accelerator "$accelerator" \
  --trainer.max_steps "$steps" --trainer.max_time null --trainer.enable_progress_bar false \
  --trainer.enable_model_summary false --trainer.default_root_dir "$root" > "$root/fit.log" 2>&1 \
  || { tail -n 20 "$root/fit.log"; exit 1; }
end=$(date +%s.%N)
python - "$root" "$start" "$end" "$steps" <<'PY'
import sys
from pathlib import Path

import torch

root, start, end, steps = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ckpt = torch.load(next(root.glob("**/last.ckpt")), map_location="cpu", weights_only=True)
assert ckpt["global_step"] == steps, ckpt["global_step"]
print("| steps | wall, start to end (s) | final weights finite |\n|---|---|---|")
finite = all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
print(f"| {steps} | {end - start:.1f} | {finite} |")
PY

if [ -n "${race_corpus:-}" ]; then
  echo
  echo "## race.py: configs/gpu.yaml (bptt manual) against nn.RNN with its recipe, 1, 2 and 3 minutes"
  echo
  python benchmarks/race.py configs/gpu.yaml,--model.bptt=manual nn.RNN --recipe --marks 1 2 3 --device cuda \
    --corpus "$race_corpus" "--fit-args=--trainer.accelerator=gpu" "--fit-args=--trainer.enable_progress_bar=false"
fi
