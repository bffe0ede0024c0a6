"""Quality per minute, side by side: each contestant trains on the same corpus for the same wall-clock
time, back to back in one process, and its validation loss is taken after 1, 3 and 5 minutes.

Contestants:

- ``configs/X.yaml``: ``charrnn fit --config configs/X.yaml`` itself (LightningCLI, TensorBoard,
  checkpoints, the config's own validation: all of it counts against its time). Options after
  commas change it: ``configs/X.yaml,--model.hidden_size=384,--model.num_layers=2`` (how cells,
  sizes, depths, optimizers and schedules are compared at a fixed budget).
- ``nn.RNN``, ``nn.GRU``, ``nn.LSTM``: PyTorch's own module (one-hot input, ``nn.Linear`` output,
  dropout where CharRNN puts it) trained in a plain loop on the same streams (``CharDataModule``),
  state carried between windows and reset at each epoch; ``nn.LSTM+embedding`` reads an
  ``nn.Embedding(V, H)`` instead, as people write it. With ``--recipe`` the baselines are trained
  with the recipe of the race's (first) config: its hidden size, layers, dropout, initialisation
  (the one-hot baseline starts from the very weights CharRNN draws with the config's ``input_std``,
  ``init_std``, ``whh_scale``, ``forget_bias``, output layer included), batch, window, clipping,
  optimizer and rate, and its schedule (the same class: a ``WarmupCosineInTime`` ends
  its decay at the same minutes, timed on the baseline's own pace), options after its commas
  included. That is the comparison the project must win: a lead from the engine's speed, not
  from a better recipe. Without ``--recipe``: ``--layers`` of ``--hidden``, ``--dropout``, Adam
  ``--lr`` constant, norm clipping 5, ``--batch`` and ``--seq`` (a plain recipe, for context).

``--runs N`` races everyone N times (seeds ``--seed`` to ``--seed + N - 1``; configs get them as
``--seed_everything``), round by round, so that a slow spell of the machine falls on every
contestant alike; the table gives the median and the range over runs at each mark, and how far
the last mark is above the best one (``end - best``: more marks, ``--marks 1 2 3 4 5``, show
whether the last minutes were spent overfitting).

The clock counts training time from the first step; it stops while the race itself measures. The
measurement is the same for everyone: the mean cross-entropy over the whole validation split
(``CharDataModule``'s, 32 streams, windows of 100, state carried), in nats per character. A run that
ends before a mark (its ``max_steps``) is measured at its end and keeps that value.

    python benchmarks/race.py configs/tinyshakespeare.yaml nn.RNN            # the optimizers issue
    python benchmarks/race.py configs/tinyshakespeare_lstm.yaml nn.LSTM nn.LSTM+embedding --recipe --runs 2
    python benchmarks/race.py configs/tinyshakespeare_20min.yaml nn.LSTM --marks 1 5 10 20 \\
        --seq 64 --hidden 512 --layers 2 --dropout 0.25          # the same size and dropout

On a GPU (``--device cuda``; the configs then need ``--fit-args=--trainer.accelerator=gpu``) the
clock waits for the device before it reads a mark, so that the steps the host queued ahead count
as training time, and the validation windows live on the device.

    python benchmarks/race.py configs/gpu.yaml nn.RNN --recipe --marks 1 2 3 --device cuda \\
        "--fit-args=--trainer.accelerator=gpu" --corpus data/tinyshakespeare.txt   # no network
"""

from __future__ import annotations

import argparse
import inspect
import logging
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass

import lightning as L
import torch
import yaml
from harness import (
    EVAL_B,
    EVAL_T,
    BareStep,
    TorchRNN,
    eval_model,
    eval_windows,
    fit_with,
    sync,
    train_on_streams,
)
from lightning.pytorch.cli import instantiate_class

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.rnn.cells import CELLS
from torch_charrnn.rnn.memory import keep_freed_memory

INIT = ("input_std", "init_std", "whh_scale", "forget_bias")  # CharRNN's options that draw its weights


class Clock:
    """Training time since the first step, excluding the race's own measurements; records the
    validation loss at each mark."""

    def __init__(self, marks, measure, device="cpu"):
        self.marks, self.measure, self.device = list(marks), measure, device
        self.results: dict[float, float] = {}
        self.start, self.paused, self.steps = None, 0.0, 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def tick(self) -> bool:
        """Called before each step: measures at the marks passed; False once the last one is."""
        if self.start is None:
            self.start = time.perf_counter()
        if self.marks and self.elapsed() >= self.marks[0] * 60:
            sync(self.device)  # what the host queued before the mark is training time
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
        clock.measure = lambda: eval_model(cli.model, windows)
        return [RaceCallback(clock)]

    with tempfile.TemporaryDirectory() as root:
        cli = fit_with(["--config", path, "--trainer.default_root_dir", root, *extra], hook)
        clock.finish()
        generator = torch.Generator().manual_seed(0)
        return cli.model.sample_text(200, temperature=0.8, generator=generator)


@dataclass
class Recipe:
    """How a baseline is trained: the model's size, dropout and initialisation (CharRNN's options
    that draw the weights; None: the torch.nn modules' own), the batching, the clipping, and the
    optimizer and schedule as ``class_path``/``init_args`` dicts (schedule None: a constant rate)."""

    hidden: int
    layers: int
    dropout: float
    init: dict | None
    batch: int
    seq: int
    clip: float | None
    optimizer: dict
    schedule: dict | None
    cell: str = "tanh"

    @classmethod
    def plain(cls, args) -> Recipe:
        adam = {"class_path": "torch.optim.Adam", "init_args": {"lr": args.lr}}
        return cls(args.hidden, args.layers, args.dropout, None, args.batch, args.seq, 5.0, adam, None)

    @classmethod
    def of_config(cls, path: str, options: list[str]) -> Recipe:
        """The recipe ``charrnn fit --config path options`` trains with, read from the YAML and the
        ``--key=value`` options, with the model's, data's and ``charrnn fit``'s defaults."""
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        for option in options:
            key, _, value = option.removeprefix("--").partition("=")
            *parents, leaf = key.split(".")
            node = cfg
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = yaml.safe_load(value)
        model, data, trainer = (cfg.get(k) or {} for k in ("model", "data", "trainer"))
        defaults = {**_defaults(CharRNN), **_defaults(CharDataModule)}
        get = lambda section, key: section.get(key, defaults[key])  # noqa: E731
        optimizer = cfg.get("optimizer") or {  # none given: the model's own Adagrad
            "class_path": "torch.optim.Adagrad",
            "init_args": {"lr": get(model, "lr"), "eps": get(model, "eps")},
        }
        return cls(
            get(model, "hidden_size"),
            get(model, "num_layers"),
            get(model, "dropout"),
            {key: get(model, key) for key in INIT},
            get(data, "batch_size"),
            get(data, "seq_len"),
            trainer.get("gradient_clip_val", 5.0),
            optimizer,
            cfg.get("lr_scheduler"),
            get(model, "cell"),
        )

    def label(self, embedding: bool = False) -> str:
        size = f"{self.layers}x{self.hidden}" if self.layers > 1 else f"H{self.hidden}"
        drop = f" dropout {self.dropout:g}" if self.dropout else ""
        if self.init is not None and not embedding:  # the options that differ from CharRNN's own
            defaults = _defaults(CharRNN)
            drop += "".join(f" {k} {v:g}" for k, v in self.init.items() if v != defaults[k])
        lr = self.optimizer.get("init_args", {}).get("lr")
        optimizer = self.optimizer["class_path"].rsplit(".", 1)[-1] + (f" {lr:g}" if lr else "")
        schedule = self.schedule["class_path"].rsplit(".", 1)[-1] if self.schedule else "constant"
        return f"{size}{drop} B{self.batch} T{self.seq} {optimizer} {schedule}"


def _defaults(cls) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def run_baseline(kind, clock, windows, args, recipe: Recipe, seed):
    """PyTorch's module in a plain loop, trained with ``recipe`` on the same streams and carried
    state as charrnn fit, every epoch starting the streams from zero."""
    L.seed_everything(seed, verbose=False)
    data = CharDataModule(corpus=args.corpus, batch_size=recipe.batch, seq_len=recipe.seq)
    data.prepare_data()
    data.setup()
    kind, _, embedding = kind.partition("+")
    start = None
    if recipe.init is not None and not embedding:  # the same model: CharRNN's weights to start from
        cell = next(name for name, c in CELLS.items() if c.FUSED == kind)
        start = CharRNN(data.vocab_size, recipe.hidden, cell, recipe.layers, **recipe.init)
    model = TorchRNN(
        kind, data.vocab_size, recipe.hidden, recipe.layers, recipe.dropout, bool(embedding), start
    ).to(args.device)
    clock.measure = lambda: eval_model(model, windows)
    optimizer = instantiate_class(model.parameters(), recipe.optimizer)  # as LightningCLI builds them
    schedule = instantiate_class(optimizer, recipe.schedule) if recipe.schedule else None
    step = BareStep(model, optimizer, clip=recipe.clip, scheduler=schedule)
    train_on_streams(step, data, clock.tick, args.device)


def label_of(who: str, recipe: Recipe) -> str:
    if who.startswith("nn."):
        return f"{who} {recipe.label(embedding=who.endswith('+embedding'))}"
    path, *options = who.split(",")
    return " ".join([f"charrnn fit --config {path}", *options])


def race(who: str, args, recipe: Recipe, windows, seed: int) -> Clock:
    """One contestant, once: its clock holds the validation loss at each mark."""
    clock = Clock(args.marks, None, args.device)
    if who.startswith("nn."):
        run_baseline(who[3:], clock, windows, args, recipe, seed)
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
    parser.add_argument(
        "contestants",
        nargs="+",
        help="configs/X.yaml[,--option=value...], nn.RNN, nn.GRU, nn.LSTM (+embedding)",
    )
    parser.add_argument("--marks", type=float, nargs="+", default=[1, 3, 5], help="minutes")
    parser.add_argument("--runs", type=int, default=1, help="races of everyone, for the spread")
    parser.add_argument("--corpus", default="tinyshakespeare")
    parser.add_argument("--recipe", action="store_true", help="baselines take the first config's recipe")
    parser.add_argument("--batch", type=int, default=32, help="the baselines' batch size")
    parser.add_argument("--seq", type=int, default=50, help="the baselines' window")
    parser.add_argument("--hidden", type=int, default=256, help="the baselines' hidden size")
    parser.add_argument("--layers", type=int, default=1, help="the baselines' number of layers")
    parser.add_argument("--dropout", type=float, default=0.0, help="the baselines' dropout")
    parser.add_argument("--lr", type=float, default=2e-3, help="the baselines' Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fit-args", nargs="*", action="extend", default=[], help="extra charrnn fit options (repeatable)"
    )
    parser.add_argument("--device", default="cpu", help="where the baselines train and everyone is measured")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    windows = [tuple(t.to(args.device) for t in window) for window in eval_windows(args.corpus)]
    configs = [who for who in args.contestants if not who.startswith("nn.")]
    if args.recipe and not configs:
        parser.error("--recipe takes the recipe of a config in the race: name one")
    if args.recipe:
        path, *options = configs[0].split(",")
        recipe = Recipe.of_config(path, options)
    else:
        recipe = Recipe.plain(args)
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
            results[who].append(race(who, args, recipe, windows, args.seed + run))
    marks = " | ".join(f"{m:g} min" for m in args.marks)
    what = "median (min to max) over runs" if args.runs > 1 else "one run"
    print(f"\nval loss in nats/char, {what}\n")
    print(f"| contestant | {marks} | end - best | steps |\n|---|{'---|' * len(args.marks)}---|---|")
    for who, clocks in results.items():
        cells = " | ".join(spread([c.results[m] for c in clocks]) for m in args.marks)
        steps = "/".join(str(c.steps) for c in clocks)
        # how far the end is from the best mark, run by run: above 0 the last minutes were wasted
        wasted = spread([c.results[args.marks[-1]] - min(c.results.values()) for c in clocks])
        print(f"| {label_of(who, recipe)} | {cells} | {wasted} | {steps} |")
    print("\nbits/char = nats / ln 2 = nats x %.3f" % (1 / math.log(2)))


if __name__ == "__main__":
    main()
