"""Quality per minute, side by side: each contestant trains on the same corpus for the same wall-clock
time, back to back in one process, and its validation loss is taken after 1, 3 and 5 minutes.

Contestants:

- ``configs/X.yaml``: ``charrnn fit --config configs/X.yaml`` itself (LightningCLI, TensorBoard,
  checkpoints, the config's own validation: all of it counts against its time). Options after
  commas change it: ``configs/X.yaml,--model.hidden_size=384,--model.num_layers=2`` (how cells,
  sizes, depths, optimizers and schedules are compared at a fixed budget).
- ``nn.RNN``, ``nn.GRU``, ``nn.LSTM``: PyTorch's own module (``--layers`` of ``--hidden``, one-hot
  input, ``nn.Linear`` output, ``--dropout`` where CharRNN puts it) trained in a plain loop with
  Adam ``--lr`` constant and norm clipping 5, on the same streams (``CharDataModule``, ``--batch``,
  ``--seq``), state carried between windows and reset at each epoch: the baseline the project must
  beat.

``--runs N`` races everyone N times (seeds ``--seed`` to ``--seed + N - 1``; configs get them as
``--seed_everything``), round by round, so that a slow spell of the machine falls on every
contestant alike; the table gives the median and the range over runs at each mark.

The clock counts training time from the first step; it stops while the race itself measures. The
measurement is the same for everyone: the mean cross-entropy over the whole validation split
(``CharDataModule``'s, 32 streams, windows of 100, state carried), in nats per character. A run that
ends before a mark (its ``max_steps``) is measured at its end and keeps that value.

    python benchmarks/race.py configs/tinyshakespeare.yaml nn.RNN            # the optimizers issue
    python benchmarks/race.py configs/tinyshakespeare_lstm.yaml nn.LSTM --seq 64 --runs 3
    python benchmarks/race.py configs/tinyshakespeare_20min.yaml nn.LSTM --marks 1 5 10 20 \\
        --seq 64 --hidden 384 --layers 2 --dropout 0.25          # the same size and dropout
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch
from harness import EVAL_B, EVAL_T, BareStep, TorchRNN, eval_windows, fit_with, val_loss

from torch_charrnn import CharDataModule
from torch_charrnn.training.memory import keep_freed_memory


class Clock:
    """Training time since the first step, excluding the race's own measurements; records the
    validation loss at each mark."""

    def __init__(self, marks, measure):
        self.marks, self.measure = list(marks), measure
        self.results: dict[float, float] = {}
        self.start, self.paused, self.steps = None, 0.0, 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def tick(self) -> bool:
        """Called before each step: measures at the marks passed; False once the last one is."""
        if self.start is None:
            self.start = time.perf_counter()
        while self.marks and self.elapsed() >= self.marks[0] * 60:
            self._record(self.marks.pop(0))
        self.steps += bool(self.marks)
        return bool(self.marks)

    def finish(self) -> None:
        """The run ended before its marks: it keeps its final loss."""
        while self.marks:
            self._record(self.marks.pop(0))

    def _record(self, mark) -> None:
        began = time.perf_counter()
        self.results[mark] = self.measure()
        print(f"  {mark:g} min: val {self.results[mark]:.4f} nats/char ({self.steps} steps)", flush=True)
        self.paused += time.perf_counter() - began


class RaceCallback(L.Callback):
    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.clock.tick():
            trainer.should_stop = True
            return -1  # Lightning: skip the rest of this epoch


def run_config(path, clock, windows, extra):
    """``charrnn fit --config path`` with the race's clock in its trainer; returns its sample."""

    def hook(cli):
        clock.measure = lambda: _eval_model(cli.model, windows)
        return [RaceCallback(clock)]

    with tempfile.TemporaryDirectory() as root:
        cli = fit_with(["--config", path, "--trainer.default_root_dir", root, *extra], hook)
        clock.finish()
        generator = torch.Generator().manual_seed(0)
        return cli.model.sample_text(200, temperature=0.8, generator=generator)


def _eval_model(model, windows):
    was_training = model.training
    model.eval()
    loss = val_loss(lambda x, s: model(x, s), windows)
    model.train(was_training)
    return loss


def run_baseline(kind, clock, windows, args, seed):
    """PyTorch's module in a plain loop: Adam at a constant ``lr``, clipping at 5, the same streams
    and carried state as charrnn fit, every epoch starting the streams from zero."""
    L.seed_everything(seed, verbose=False)
    data = CharDataModule(corpus=args.corpus, batch_size=args.batch, seq_len=args.seq)
    data.prepare_data()
    data.setup()
    model = TorchRNN(kind, data.vocab_size, args.hidden, args.layers, args.dropout)
    clock.measure = lambda: _eval_model(model, windows)
    step = BareStep(model, torch.optim.Adam(model.parameters(), lr=args.lr), clip=5.0)
    while clock.marks:
        step.state = None  # every epoch starts the streams from zero
        for batch in data.splits["train"]:
            if not clock.tick():
                break
            step(batch)


def label_of(who: str, args) -> str:
    if who.startswith("nn."):
        size = f"{args.layers}x{args.hidden}" if args.layers > 1 else f"H{args.hidden}"
        drop = f" dropout {args.dropout:g}" if args.dropout else ""
        return f"{who} {size}{drop} B{args.batch} T{args.seq} Adam {args.lr:g} constant"
    path, *options = who.split(",")
    return " ".join([f"charrnn fit --config {path}", *options])


def race(who: str, args, windows, seed: int) -> Clock:
    """One contestant, once: its clock holds the validation loss at each mark."""
    clock = Clock(args.marks, None)
    if who.startswith("nn."):
        run_baseline(who[3:], clock, windows, args, seed)
        return clock
    path, *options = who.split(",")
    sample = run_config(path, clock, windows, [*options, "--seed_everything", str(seed), *args.fit_args])
    print("  sample: " + sample.replace("\n", "\n          "), flush=True)
    return clock


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} ({min(values):.3f} to {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contestants", nargs="+", help="configs/X.yaml, nn.RNN, nn.GRU or nn.LSTM")
    parser.add_argument("--marks", type=float, nargs="+", default=[1, 3, 5], help="minutes")
    parser.add_argument("--runs", type=int, default=1, help="races of everyone, for the spread")
    parser.add_argument("--corpus", default="tinyshakespeare")
    parser.add_argument("--batch", type=int, default=32, help="the baselines' batch size")
    parser.add_argument("--seq", type=int, default=50, help="the baselines' window")
    parser.add_argument("--hidden", type=int, default=256, help="the baselines' hidden size")
    parser.add_argument("--layers", type=int, default=1, help="the baselines' number of layers")
    parser.add_argument("--dropout", type=float, default=0.0, help="the baselines' dropout")
    parser.add_argument("--lr", type=float, default=2e-3, help="the baselines' Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-args", nargs="*", default=[], help="extra charrnn fit options for configs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    windows = eval_windows(args.corpus)
    kept = keep_freed_memory()  # charrnn fit keeps it anyway; from the start, the baselines too
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; freed memory kept: {kept}; "
        f"marks {args.marks} min; "
        f"{args.runs} run(s); val: {len(windows)} windows of {EVAL_B}x{EVAL_T}\n"
    )
    results = {who: [] for who in args.contestants}
    for run in range(args.runs):
        for who in args.contestants:
            print(f"{who} (run {run + 1} of {args.runs}, seed {args.seed + run})", flush=True)
            results[who].append(race(who, args, windows, args.seed + run))
    marks = " | ".join(f"{m:g} min" for m in args.marks)
    what = "median (min to max) over runs" if args.runs > 1 else "one run"
    print(f"\nval loss in nats/char, {what}\n")
    print(f"| contestant | {marks} | steps |\n|---|{'---|' * len(args.marks)}---|")
    for who, clocks in results.items():
        cells = " | ".join(spread([c.results[m] for c in clocks]) for m in args.marks)
        steps = "/".join(str(c.steps) for c in clocks)
        print(f"| {label_of(who, args)} | {cells} | {steps} |")
    print("\nbits/char = nats / ln 2 = nats x %.3f" % (1 / math.log(2)))


if __name__ == "__main__":
    main()
