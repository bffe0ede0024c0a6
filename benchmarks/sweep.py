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
import time
import warnings

import lightning as L
import torch

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.training.schedules import WarmupCosine

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


def run(corpus: str, chars: int, seed: int, **cfg) -> dict:
    L.seed_everything(seed, verbose=False)
    data = CharDataModule(corpus=corpus, batch_size=cfg["batch_size"], seq_len=cfg["seq_len"])
    model = CharRNN(
        data.vocab_size,
        cfg["hidden_size"],
        cfg.get("cell", "tanh"),
        lr=cfg["lr"],
        whh_scale=cfg["whh_scale"],
        forget_bias=cfg.get("forget_bias", 0.0),
        vocab=data.vocab,
    )
    steps = max(1, chars // (cfg["batch_size"] * cfg["seq_len"]))
    if cfg.get("optimizer", "Adagrad") != "Adagrad":
        model.configure_optimizers = lambda: optimizers(model, cfg, steps)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        gradient_clip_val=5.0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    evaluator = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    val = evaluator.validate(model, data, verbose=False)[0]["val/loss"]
    return {
        **cfg,
        "steps": steps,
        "seconds": seconds,
        "chars_per_s": steps * cfg["batch_size"] * cfg["seq_len"] / seconds,
        "val_loss": val,
    }


def optimizer_label(cfg: dict) -> str:
    return cfg.get("optimizer", "Adagrad") + (" + cosine" if cfg.get("schedule") == "cosine" else "")


def optimizers(model, cfg: dict, steps: int):
    """What ``--optimizer X --optimizer.lr ... [--lr_scheduler WarmupCosine ...]`` gives the model."""
    optimizer = getattr(torch.optim, cfg["optimizer"])(model.parameters(), lr=cfg["lr"])
    if cfg.get("schedule") != "cosine":
        return optimizer
    schedule = WarmupCosine(optimizer, total_steps=steps, warmup_steps=min(200, steps - 1))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


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
        r = run(args.corpus, args.chars, args.seed, **{**BASE, **variant})
        print(
            f"| {r['hidden_size']} | {r['batch_size']} | {r['seq_len']} | {optimizer_label(r)} | {r['lr']} "
            f"| {r['whh_scale']} "
            f"| {r['val_loss']:.3f} | {r['val_loss'] / math.log(2):.3f} "
            f"| {r['seconds']:.0f} | {r['chars_per_s']:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
