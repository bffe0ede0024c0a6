"""Per step, not per minute: a config's model trained for the same number of steps by CharRNN's
hand-written BPTT and by PyTorch's own module, so that a difference in how much each learns per
step (the starting point, the parametrisation) shows apart from their speeds.

Every contestant trains ``--steps`` windows of the config's batch and length from the same seed
on the same streams (``CharDataModule``, the state carried, reset at each epoch), with the
config's hidden size, layers, dropout and init options, optimizer and rate, clipping,
its warmup and a step-based cosine over the steps (``WarmupCosine``), in one plain loop, then
reports the validation loss (race.py's measurement). Contestants:

- ``charrnn``: CharRNN as the config draws it;
- ``nn``: the cell's ``nn.*`` module + ``nn.Linear`` from the very weights CharRNN draws (race.py's
  one-hot baseline);
- after colons, changes: ``:init_std=X`` draws ``W_hy`` ~ N(0, X²) (both), ``:own-output`` leaves
  ``nn.Linear`` at its own init (``nn``).

    L=configs/tinyshakespeare_lstm.yaml
    python benchmarks/per_step.py $L --steps 800 charrnn:init_std=0.01 nn:init_std=0.01 \\
        nn:own-output charrnn
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning as L
import torch
from harness import BareStep, TorchRNN, eval_model, eval_windows, train_on_streams
from lightning.pytorch.cli import instantiate_class
from race import Recipe

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.training.schedules import WarmupCosine


def build(who: str, recipe: Recipe, cell: str, vocab_size: int) -> torch.nn.Module:
    name, *options = who.split(":")
    init = dict(recipe.init)
    for option in options:
        if option.startswith("init_std="):
            init["init_std"] = float(option.removeprefix("init_std="))
    model = CharRNN(vocab_size, recipe.hidden, cell, recipe.layers, dropout=recipe.dropout, **init)
    if name == "charrnn":
        return model
    kind = model.cell.FUSED
    module = TorchRNN(kind, vocab_size, recipe.hidden, recipe.layers, recipe.dropout, start_from=model)
    if "own-output" in options:
        module.out.reset_parameters()
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("contestants", nargs="+", help="charrnn or nn, then :init_std=X, :own-output")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--corpus", default="tinyshakespeare")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    recipe = Recipe.of_config(args.config, [])
    cell = recipe.cell
    warmup = ((recipe.schedule or {}).get("init_args") or {}).get("warmup_steps", 0)
    windows = eval_windows(args.corpus)
    print(f"{args.config} ({cell}): {recipe.label()}, {args.steps} steps, seeds {args.seeds}\n")
    print("| contestant | val loss (nats) per seed | seconds |\n|---|---|---|")
    for who in args.contestants:
        losses, seconds = [], 0.0
        for seed in args.seeds:
            L.seed_everything(seed, verbose=False)
            data = CharDataModule(corpus=args.corpus, batch_size=recipe.batch, seq_len=recipe.seq)
            data.prepare_data()
            data.setup()
            model = build(who, recipe, cell, data.vocab_size)
            optimizer = instantiate_class(model.parameters(), recipe.optimizer)  # the config's
            schedule = WarmupCosine(optimizer, args.steps, warmup_steps=min(warmup, args.steps - 1))
            step = BareStep(model, optimizer, clip=recipe.clip, scheduler=schedule)
            done, start = iter(range(args.steps + 1)), time.perf_counter()
            train_on_streams(step, data, lambda: next(done) < args.steps)  # noqa: B023
            seconds += time.perf_counter() - start
            losses.append(eval_model(model, windows))
        print(f"| {who} | {', '.join(f'{v:.3f}' for v in losses)} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
