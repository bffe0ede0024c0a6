"""Where Lightning's own time goes in a training step, block by block, at several shapes in one
process.

``bench_train.py`` gives the whole difference between a ``Trainer.fit`` step and its bare step;
this splits Lightning's part of it. Each block is timed around its call in every step of a fit
(``CharRNN``, the hand-written BPTT, Adagrad, clipping 5, no logger, bar or checkpoints, as
``bench_train.py``'s fits), and the shapes alternate fit by fit, so that each block can be set
against itself at a shape with no arithmetic to speak of (B1 T1 H1), where it runs warm, and at a
real one, where the step's arithmetic has run between two of its calls. The wrappers add well
under a microsecond to each block; they wrap Lightning's private loop classes, so a Lightning
release that renames them stops this script (with an AttributeError naming the one).

    python benchmarks/lightning_blocks.py                      # tanh, B1 T1 H1 and B32 T50 H256
    python benchmarks/lightning_blocks.py --cell lstm --configs "B1 T1 H1" "B32 T64 H256"
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict

import torch
from bench_train import RandomWindows
from harness import V, quiet_trainer
from lightning.pytorch.loops import fetchers, training_epoch_loop
from lightning.pytorch.loops.optimization import automatic
from lightning.pytorch.strategies import strategy
from lightning.pytorch.trainer.connectors.logger_connector import logger_connector

from torch_charrnn import CharRNN
from torch_charrnn.training.memory import keep_freed_memory

# label: (class, method); each runs once a training step
TIMED = {
    "step": (training_epoch_loop._TrainingEpochLoop, "advance"),
    "fetch": (fetchers._PrefetchDataFetcher, "__next__"),
    "transfer": (strategy.Strategy, "batch_to_device"),
    "results": (logger_connector._LoggerConnector, "on_batch_end"),
    "optimization": (automatic._AutomaticOptimization, "run"),
    "optimizer.step": (torch.optim.Adagrad, "step"),  # the closure (training_step, backward) runs inside
    "lightning training_step": (automatic._AutomaticOptimization, "_training_step"),
    "training_step": (CharRNN, "training_step"),
    "lightning backward": (strategy.Strategy, "backward"),
    "backward": (torch.Tensor, "backward"),
    "check": (CharRNN, "on_before_optimizer_step"),
    "clip": (CharRNN, "configure_gradient_clipping"),
}
# what each row of the table is, as sums and differences of the timed blocks
ROWS = {
    "the data fetcher": {"fetch": 1},
    "the batch transfer (a no-op on a CPU)": {"transfer": 1},
    "the logger connector's on_batch_end": {"results": 1},
    "around training_step": {"lightning training_step": 1, "training_step": -1},
    "around backward": {"lightning backward": 1, "backward": -1},
    "around the optimizer's step (closure, hooks)": {"optimization": 1, "optimizer.step": -1},
    "the rest of the loop's advance": {
        "step": 1,
        "optimization": -1,
        "fetch": -1,
        "transfer": -1,
        "results": -1,
    },
    "this project's check and clipping": {"check": 1, "clip": 1},
}


def wrap(times: dict[str, list[float]]) -> None:
    """Time every call of each TIMED method into ``times[label]``, in seconds."""
    # torch wraps an optimizer class's step in its profiling hook when the first one is built: let
    # it, so that the hook (which a bare step pays too) falls inside "optimizer.step"
    torch.optim.Adagrad([torch.zeros(1, requires_grad=True)])
    for label, (cls, name) in TIMED.items():
        inner = getattr(cls, name)

        def timed(*args, _inner=inner, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                times[_label].append(time.perf_counter() - start)

        timed.hooked = getattr(inner, "hooked", False)  # torch: hook a class's step only once
        setattr(cls, name, timed)


def combine(median: dict[str, float], parts: dict[str, int]) -> float:
    """A row's seconds: the sum of its blocks' medians, each with its sign."""
    return sum(sign * median[label] for label, sign in parts.items())


def fit(cell: str, B: int, T: int, H: int, steps: int) -> None:
    trainer = quiet_trainer(accelerator="cpu", devices=1, max_steps=steps, gradient_clip_val=5.0)
    trainer.fit(CharRNN(V, H, cell, lr=0.01), RandomWindows(B, T, steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="tanh")
    parser.add_argument("--configs", nargs="+", default=["B1 T1 H1", "B32 T50 H256"])
    parser.add_argument("--steps", type=int, default=1000, help="steps a fit (the first tenth warms up)")
    parser.add_argument("--rounds", type=int, default=2, help="fits per config, alternated")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*|.*no `val_dataloader`.*")
    keep_freed_memory()
    shapes = {name: tuple(int(part[1:]) for part in name.split()) for name in args.configs}
    per_round = {name: [] for name in shapes}  # per config: {row: median µs} for each round
    times: dict[str, list[float]] = defaultdict(list)
    wrap(times)
    for _ in range(args.rounds):
        for name, (B, T, H) in shapes.items():
            times.clear()
            fit(args.cell, B, T, H, args.steps)
            skip = args.steps // 10
            median = {label: statistics.median(values[skip:]) for label, values in times.items()}
            per_round[name].append({row: 1e6 * combine(median, parts) for row, parts in ROWS.items()})
    print(f"\nLightning's blocks, µs a step (median over steps; one figure per round), {args.cell}\n")
    print("| block | " + " | ".join(args.configs) + " |")
    print("|---|" + "---|" * len(args.configs))
    for row in ROWS:
        cells = [", ".join(f"{r[row]:.0f}" for r in per_round[name]) for name in args.configs]
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
