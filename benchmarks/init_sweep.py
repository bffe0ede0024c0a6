"""How the cells should start: PyTorch's U(-1/sqrt(H), 1/sqrt(H)) (the baseline to beat)
against an LSTM forget-gate bias, each at two Adagrad learning rates; (``--input-std``) how
loud layer 0's character rows should start, for every cell; and (``--init-std``) how large the
output layer's weights should start.

Every run trains on the same characters of tinyshakespeare through Lightning ``fit`` (float32,
clipping 5, Adagrad) and reports the validation loss, so the variants compare by how much they
learn per character. Set $CHARRNN_CACHE to a folder holding tinyshakespeare.txt to run offline.

    python benchmarks/init_sweep.py --chars 1000000

``--input-std`` trains each cell at the 5-minute configs' shape (H=256, B=32, T=64, Adam 3e-3,
200 steps of warmup and a cosine over the run) with ``--model.input_std`` unset (the cell's own
init) and at each value given:

    python benchmarks/init_sweep.py --chars 1638400 --seeds 0 --input-std 0.3 1 2 3

``--init-std`` trains each cell at the gated configs' shape (two layers of 384, dropout 0.3,
``input_std`` 2, B=32, T=64, Adam 3e-3, 200 steps of warmup and a cosine over the run) with
``--model.init_std`` (the std of the output layer's W_hy) at CharRNN's default and at each value:

    python benchmarks/init_sweep.py --chars 1638400 --seeds 0 --init-std 0.03 0.1 0.3
"""

from __future__ import annotations

import argparse
import math
import warnings

from harness import train_for_chars

BASE = {"hidden_size": 128, "batch_size": 32, "seq_len": 50, "whh_scale": 0.01}
VARIANTS = [
    {"cell": "gru", "lr": 0.01},
    {"cell": "gru", "lr": 0.03},
    {"cell": "lstm", "lr": 0.01, "forget_bias": 0.0},
    {"cell": "lstm", "lr": 0.01, "forget_bias": 1.0},
    {"cell": "lstm", "lr": 0.03, "forget_bias": 0.0},
    {"cell": "lstm", "lr": 0.03, "forget_bias": 1.0},
]


INPUT_SHAPE = {"hidden_size": 256, "batch_size": 32, "seq_len": 64, "whh_scale": 0.01}
INPUT_RECIPE = {"optimizer": "Adam", "lr": 3e-3, "schedule": "cosine"}


OUTPUT_SHAPE = {**INPUT_SHAPE, "hidden_size": 384, "num_layers": 2, "dropout": 0.3, "input_std": 2.0}


def sweep_std(args, option: str, values: list, base: dict, default: str) -> None:
    """Each cell at ``base`` with ``option`` left at ``default`` and set to each of ``values``."""
    print(f"training characters per run: {args.chars:,}; base: {base}; seeds {args.seeds}\n")
    print(f"| cell | {option} | val loss (nats), mean over seeds | val bpc |\n|---|---|---|---|")
    for cell in ("tanh", "gru", "lstm"):
        for std in [None, *values]:
            cfg = {**base, "cell": cell, **({} if std is None else {option: std})}
            runs = [train_for_chars(args.corpus, args.chars, seed, **cfg) for seed in args.seeds]
            val = sum(r["val_loss"] for r in runs) / len(runs)
            label = default if std is None else f"{std:g}"
            print(f"| {cell} | {label} | {val:.3f} | {val / math.log(2):.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="tinyshakespeare")
    parser.add_argument("--chars", type=int, default=1_000_000, help="training characters per run")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--input-std", type=float, nargs="*", help="sweep input_std instead, every cell")
    parser.add_argument("--init-std", type=float, nargs="*", help="sweep the output layer's init_std instead")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.input_std is not None:
        sweep_std(args, "input_std", args.input_std, {**INPUT_SHAPE, **INPUT_RECIPE}, "the cell's own")
        return
    if args.init_std is not None:
        sweep_std(args, "init_std", args.init_std, {**OUTPUT_SHAPE, **INPUT_RECIPE}, "0.01 (default)")
        return
    print(f"training characters per run: {args.chars:,}; base: {BASE}; seeds {args.seeds}\n")
    print("| cell | lr | forget_bias | val loss (nats), mean over seeds | val bpc | chars/s |")
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        runs = [train_for_chars(args.corpus, args.chars, seed, **{**BASE, **variant}) for seed in args.seeds]
        val = sum(r["val_loss"] for r in runs) / len(runs)
        speed = sum(r["chars_per_s"] for r in runs) / len(runs)
        print(
            f"| {variant['cell']} | {variant['lr']} | {variant.get('forget_bias', '')} | {val:.3f} "
            f"| {val / math.log(2):.3f} | {speed:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
