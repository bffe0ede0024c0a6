"""Two source trees of this project side by side in one process: the training step of each cell
and backend, bare and through Lightning ``fit``, alternated round by round, medians. For a change
that should not change speed (a refactor), or one that should.

The other tree is any checkout, for example the commit before a change:

    git worktree add /tmp/before 1412578
    python benchmarks/bench_trees.py /tmp/before

Both trees are imported in turn under the package's own name (each keeps its own modules once
imported), so every figure comes from the same process, the same torch and the same minute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from harness import BareStep, quiet_trainer, random_windows, seconds_per_call

HERE = Path(__file__).resolve().parents[1]
CONFIGS = {"B32 T64 H256": (32, 64, 256), "B64 T100 H256": (64, 100, 256)}
V, LR, CLIP = 65, 0.01, 5.0


def import_tree(root: Path):
    """The CharRNN class of the tree at ``root``, imported under ``torch_charrnn``."""
    for name in [m for m in sys.modules if m == "torch_charrnn" or m.startswith("torch_charrnn.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        import torch_charrnn

        assert Path(torch_charrnn.__file__).resolve().is_relative_to(root.resolve()), torch_charrnn.__file__
        return torch_charrnn.CharRNN
    finally:
        sys.path.remove(str(root))


class Windows(torch.utils.data.IterableDataset):
    def __init__(self, windows):
        self.windows = windows

    def __iter__(self):
        return iter(self.windows)


def fit_seconds(CharRNN, cell, bptt, B, T, H, n) -> float:
    """Seconds per step of ``Trainer.fit`` over ``n`` steps (set-up included, the same for both trees)."""
    torch.manual_seed(0)
    model = CharRNN(V, H, cell, lr=LR, bptt=bptt)
    loader = torch.utils.data.DataLoader(Windows(random_windows(B, T, n)), batch_size=None)
    trainer = quiet_trainer(accelerator="cpu", max_steps=n, gradient_clip_val=CLIP, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(model, loader)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other tree (a checkout of this repository)")
    parser.add_argument("--cells", nargs="*", default=["tanh", "gru", "lstm"])
    parser.add_argument("--backends", nargs="*", default=["manual", "fused"])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="per variant per round")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trees = {"other": import_tree(args.other), "this": import_tree(HERE)}
    print(
        f"this tree {HERE}, other {args.other.resolve()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds, medians (spread: min to max over rounds)\n"
    )
    print("| cell | config | step | other (ms) | this (ms) | this / other | rounds |")
    print("|---|---|---|---|---|---|---|")
    for cell in args.cells:
        for name in args.configs:
            B, T, H = CONFIGS[name]
            for bptt in args.backends:
                steps = {}
                for tree, CharRNN in trees.items():
                    torch.manual_seed(0)
                    model = CharRNN(V, H, cell, bptt=bptt)
                    batches = random_windows(B, T, 8)
                    bare = BareStep(model, torch.optim.Adagrad(model.parameters(), lr=LR), CLIP)
                    counter = iter(range(10**9))
                    steps[tree] = lambda bare=bare, batches=batches, counter=counter: bare(
                        batches[next(counter) % 8]
                    )
                n = max(2, int(args.seconds / seconds_per_call(steps["this"], 1)))
                for kind in ("bare", "fit"):
                    times = {tree: [] for tree in trees}
                    for _ in range(args.rounds):
                        for tree, CharRNN in trees.items():
                            if kind == "bare":
                                times[tree].append(seconds_per_call(steps[tree], n))
                            else:
                                times[tree].append(fit_seconds(CharRNN, cell, bptt, B, T, H, n))
                    ratios = sorted(t / o for t, o in zip(times["this"], times["other"], strict=True))
                    other, this = statistics.median(times["other"]), statistics.median(times["this"])
                    print(
                        f"| {cell} | {name} | {bptt}, {kind} | {other * 1e3:.2f} | {this * 1e3:.2f} "
                        f"| {this / other:.3f} | {ratios[0]:.3f} to {ratios[-1]:.3f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
