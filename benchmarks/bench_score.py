"""``charrnn score`` against ``charrnn sample``, per character, in one process: the surprisal of
every character of a file (one stream, the state carried) and the generation of as many
characters (batch 1), on the same weights, one thread as both commands set, alternated round by
round, medians.

    python benchmarks/bench_score.py                        # tinyshakespeare (1 MB), every cell, H=256
    python benchmarks/bench_score.py --ckpt_path last.ckpt  # a trained model's weights instead
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from torch_charrnn import CharRNN
from torch_charrnn.data.corpus import fetch_tinyshakespeare
from torch_charrnn.data.encoded import encode
from torch_charrnn.inference.checkpoint import checkpoint_weights, read_checkpoint
from torch_charrnn.inference.sampling import generate
from torch_charrnn.inference.scoring import surprisal


def rates(weights, cell, ids: torch.Tensor) -> tuple[float, float]:
    """Characters per second of scoring ``ids`` and of sampling as many."""
    start = time.perf_counter()
    surprisal(weights, cell, ids)
    scored = (len(ids) - 1) / (time.perf_counter() - start)
    state = tuple(
        weights["W_hy"].new_zeros(len(weights["layers"]), 1, weights["W_hy"].shape[0]) for _ in cell.STATE
    )
    start = time.perf_counter()
    for chunk in generate(weights, cell, state, ids[:1], len(ids) - 1, torch.Generator().manual_seed(0)):
        chunk.cpu()
    return scored, (len(ids) - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="the text to score (default: tinyshakespeare)")
    parser.add_argument("--ckpt_path", type=Path, help="a checkpoint (default: random weights per cell)")
    parser.add_argument("--cells", nargs="*", default=["tanh", "gru", "lstm"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as charrnn score and charrnn sample set on a CPU
    text = (args.file or fetch_tinyshakespeare()).read_text(encoding="utf-8")
    models = []
    if args.ckpt_path:
        checkpoint = read_checkpoint(args.ckpt_path)
        weights, cell = checkpoint_weights(checkpoint)
        models.append((args.ckpt_path.name, weights, cell, checkpoint["hyper_parameters"]["vocab"]))
    else:
        vocab = "".join(sorted(set(text)))
        for name in args.cells:
            torch.manual_seed(0)
            model = CharRNN(len(vocab), args.hidden, name, vocab=vocab).requires_grad_(False)
            models.append((f"{name} H{args.hidden}", model.weights(), model.cell, vocab))
    print(f"torch {torch.__version__}, 1 thread, {len(text):,} characters, {args.rounds} rounds, medians\n")
    print("| model | score chars/s | sample chars/s | score / sample | rounds |\n|---|---|---|---|---|")
    for label, weights, cell, vocab in models:
        ids = encode(text, vocab)
        runs = [rates(weights, cell, ids) for _ in range(args.rounds)]
        ratios = sorted(s / g for s, g in runs)
        score, sample = (statistics.median(column) for column in zip(*runs, strict=True))
        print(
            f"| {label} | {score:,.0f} | {sample:,.0f} | {score / sample:.2f}x "
            f"| {ratios[0]:.2f}x to {ratios[-1]:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
