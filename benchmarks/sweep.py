"""A small hyperparameter sweep on tinyshakespeare: which whh_scale, lr, hidden size, batch,
window, optimizer and schedule learn fastest for this model?

Every run trains on the same number of characters through Lightning ``fit`` (the product's own
path, float32, clipping 5; Adagrad unless the row names another optimizer) and then reports the
validation loss, so runs compare by how much they learn per character; the wall time and chars/s
are reported too, because a larger model that learns more per character can still lose on a
fixed time budget. A schedule (``cosine``) is WarmupCosine over the run's own steps, 200 of
warmup, down to 0: what a fixed-budget config does.

    python benchmarks/sweep.py --chars 5000000 > sweep.md
    python benchmarks/sweep.py --chars 4000000 --only 14 15 16 17 18 19 20   # optimizers, schedules
"""

from __future__ import annotations

import argparse
import math
import warnings

import torch
from harness import train_for_chars

BASE = {"hidden_size": 256, "batch_size": 64, "seq_len": 100, "lr": 0.01, "whh_scale": 0.01}
VARIANTS = [
    {},
    {"whh_scale": 0.5},
    {"whh_scale": 1.0},
    {"lr": 0.003},
    {"lr": 0.03},
    {"lr": 0.1},
    {"hidden_size": 512},
    {"batch_size": 32},
    {"seq_len": 50},
    {"seq_len": 200},
    # more updates per character won above: the second round
    {"batch_size": 32, "seq_len": 50},
    {"batch_size": 16, "seq_len": 50},
    {"batch_size": 32, "seq_len": 50, "whh_scale": 0.5},
    {"batch_size": 32, "seq_len": 50, "hidden_size": 512},
    # optimizers and schedules, at the tinyshakespeare config's shape (rows 14-20)
    {"batch_size": 32, "seq_len": 50, "optimizer": "RMSprop", "lr": 1e-3},
    {"batch_size": 32, "seq_len": 50, "optimizer": "Adam", "lr": 1e-3},
    {"batch_size": 32, "seq_len": 50, "optimizer": "Adam", "lr": 2e-3},
    {"batch_size": 32, "seq_len": 50, "optimizer": "Adam", "lr": 3e-3},
    {"batch_size": 32, "seq_len": 50, "optimizer": "Adam", "lr": 2e-3, "schedule": "cosine"},
    {"batch_size": 32, "seq_len": 50, "optimizer": "Adam", "lr": 3e-3, "schedule": "cosine"},
    {"batch_size": 32, "seq_len": 50, "optimizer": "Adam", "lr": 5e-3, "schedule": "cosine"},
]


def optimizer_label(cfg: dict) -> str:
    return cfg.get("optimizer", "Adagrad") + (" + cosine" if cfg.get("schedule") == "cosine" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="tinyshakespeare")
    parser.add_argument("--chars", type=int, default=5_000_000, help="training characters per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, nargs="*", help="run only these rows of VARIANTS (0-based)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_float32_matmul_precision("high")
    print(f"training characters per run: {args.chars:,}; base: {BASE}\n")
    print("| H | B | T | optimizer | lr | whh_scale | val loss (nats) | val bpc | time (s) | chars/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, variant in enumerate(VARIANTS):
        if args.only is not None and i not in args.only:
            continue
        r = train_for_chars(args.corpus, args.chars, args.seed, **{**BASE, **variant})
        print(
            f"| {r['hidden_size']} | {r['batch_size']} | {r['seq_len']} | {optimizer_label(r)} | {r['lr']} "
            f"| {r['whh_scale']} "
            f"| {r['val_loss']:.3f} | {r['val_loss'] / math.log(2):.3f} "
            f"| {r['seconds']:.0f} | {r['chars_per_s']:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
