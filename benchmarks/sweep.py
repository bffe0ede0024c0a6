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

At a fixed wall-clock budget instead (``--minutes``): a config and its neighbours, each trained by
``charrnn fit --config`` for the same minutes of training (race.py's clock: the measurements do
not count) and measured as race.py measures. The config runs as it is, then with each ``--vary``
option set to each of its other values, one option at a time (``--rows`` adds combinations). A
``WarmupCosineInTime`` schedule is given the budget as its ``minutes``, so every run decays fully.

    python benchmarks/sweep.py --minutes 5 --config configs/tinyshakespeare_lstm.yaml \\
        --vary model.hidden_size=256,512 model.dropout=0,0.3 optimizer.init_args.lr=0.002,0.005 \\
        --rows "model.num_layers=2,model.hidden_size=256"
"""

from __future__ import annotations

import argparse
import logging
import math
import warnings

import torch
import yaml
from harness import EVAL_B, EVAL_T, eval_windows, train_for_chars
from race import Clock, run_config

from torch_charrnn.rnn.memory import keep_freed_memory

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


def neighbours(vary: list[str], rows: list[str]) -> list[list[str]]:
    """The runs of a wall-clock sweep as lists of ``--key=value`` options: none (the config as it
    is), each ``key=v1,v2`` option at each value alone, then each row's combination."""
    runs = [[]]
    for option in vary:
        key, _, values = option.partition("=")
        runs += [[f"--{key}={value}"] for value in values.split(",")]
    runs += [[f"--{pair}" for pair in row.split(",")] for row in rows]
    return runs


def sweep_in_time(args) -> None:
    with open(args.config) as f:
        schedule = (yaml.safe_load(f).get("lr_scheduler") or {}).get("class_path", "")
    budget = ["--trainer.max_time=null", "--trainer.max_steps=-1", "--trainer.enable_progress_bar=false"]
    if schedule.endswith("WarmupCosineInTime"):
        budget.append(f"--lr_scheduler.init_args.minutes={args.minutes:g}")
    windows = eval_windows(args.corpus)
    print(
        f"{args.config}, {args.minutes:g} minutes of training each; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; val: {len(windows)} windows of {EVAL_B}x{EVAL_T}\n"
    )
    print("| options | val loss (nats) | val bpc | steps |\n|---|---|---|---|")
    for options in neighbours(args.vary, args.rows):
        clock = Clock([args.minutes], None)
        run_config(args.config, clock, windows, [*options, *budget, "--seed_everything", str(args.seed)])
        loss = clock.results[args.minutes]
        label = " ".join(options) or "(the config as it is)"
        print(f"| {label} | {loss:.3f} | {loss / math.log(2):.3f} | {clock.steps} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="tinyshakespeare")
    parser.add_argument("--chars", type=int, default=5_000_000, help="training characters per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, nargs="*", help="run only these rows of VARIANTS (0-based)")
    parser.add_argument("--minutes", type=float, help="a wall-clock budget per run, instead of --chars")
    parser.add_argument("--config", default="configs/tinyshakespeare_lstm.yaml", help="with --minutes")
    parser.add_argument("--vary", nargs="*", default=[], help="key=v1,v2: each value alone (--minutes)")
    parser.add_argument("--rows", nargs="*", default=[], help="k1=v1,k2=v2: a combination (--minutes)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    keep_freed_memory()  # as charrnn fit does, from the first run
    if args.minutes is not None:
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        sweep_in_time(args)
        return
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
