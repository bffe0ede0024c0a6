"""Where the time of a real ``charrnn fit`` step goes, beyond the step itself: the run, as the
config has it, against a bare step of the same model, optimizer, schedule and clipping, paired
step by step in one process.

Every 50 steps of the run, 50 bare steps run on a twin of the model with its own optimizer and
schedule (``bench_train.Paired``): a forward with the state carried, the loss, ``zero_grad``,
``backward``, ``clip_grad_norm_``, the optimizer's and the schedule's ``step``. Each step of the run
is timed from one ``on_train_batch_start`` to the next, less the bare steps inside, so it holds
everything the run does per step (loading the window, Lightning's loop and hooks, logging, the
progress bar, the monitor, validation and checkpoints when they come), and the machine's drift hits
both alike. The median ratio is the steady per-step overhead; the ratio of means counts the
occasional work too (validation, checkpoints, the monitor's figures, written metrics).

Variants are the config with options added; they run in turn, ``--rounds`` times, and each figure
is the median over rounds:

    python benchmarks/bench_overhead.py configs/tinyshakespeare.yaml
    python benchmarks/bench_overhead.py configs/tinyshakespeare.yaml --steps 3000 \\
        --variant "no bar=--trainer.enable_progress_bar=false"
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
import warnings

import torch
from harness import BareStep, Paired, fit_with
from lightning.pytorch.cli import instantiate_class

from torch_charrnn import CharRNN

DEFAULT_VARIANTS = {
    "as configured": "",
    "bar at every step, metrics every 10 steps, monitor every 500": "--trainer.log_every_n_steps=10 "
    "--trainer.callbacks+=TQDMProgressBar --trainer.callbacks.refresh_rate=1 --monitor.every_n_steps=500",
    "bar, metrics, monitor and validation off": "--trainer.enable_progress_bar=false "
    "--trainer.log_every_n_steps=1000000 --monitor.every_n_steps=1000000 --monitor.sample_length=0 "
    "--trainer.limit_val_batches=0",
}


def bare_twin(cli) -> BareStep:
    """The step a plain PyTorch loop would run, on a twin of the run's model (same weights), with
    the optimizer and schedule the run's config names (or CharRNN's own Adagrad when it names none)."""
    model, config = cli.model, cli.config_init[cli.subcommand]
    hparams = {k: v for k, v in model.hparams.items() if not k.startswith("_")}  # LightningCLI's own
    twin = CharRNN(**hparams).to(model.device)
    twin.load_state_dict(model.state_dict())
    optimizer_init, scheduler_init = config.get("optimizer"), config.get("lr_scheduler")
    optimizer = (
        instantiate_class(twin.parameters(), optimizer_init)
        if optimizer_init
        else twin.configure_optimizers()
    )
    scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
    return BareStep(twin, optimizer, cli.trainer.gradient_clip_val, scheduler)


def run(config: str, steps: int, extra: list[str]) -> tuple[float, float, float, float]:
    paired = []

    def hook(cli):
        paired.append(Paired(bare_twin(cli)))
        return paired

    with tempfile.TemporaryDirectory() as root:
        args = ["--config", config, "--trainer.default_root_dir", root]
        fit_with([*args, f"--trainer.max_steps={steps}", "--trainer.max_time=null", *extra], hook)
    return paired[0].ratios()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="a charrnn fit config, e.g. configs/tinyshakespeare.yaml")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--variant",
        action="append",
        metavar="NAME=OPTIONS",
        help="a variant to time: a name, '=', and charrnn fit options (repeatable; default: the "
        "config as it is, with the bar, metrics and monitor as frequent as they used to be, and with "
        "all of them and validation off)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    variants = dict(v.split("=", 1) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    results = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, options in variants.items():
            results[name].append(run(args.config, args.steps, shlex.split(options)))
    print(
        f"\n{args.config}, {args.steps} steps a run, {args.rounds} rounds, medians over rounds; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| variant | run step (ms, median) | bare step (ms, median) | overhead: median step | mean |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        lightning, bare, median, mean = (statistics.median(column) for column in zip(*rows, strict=True))
        print(
            f"| {name} | {lightning * 1e3:.2f} | {bare * 1e3:.2f} | {100 * (median - 1):+.1f}% "
            f"| {100 * (mean - 1):+.1f}% |"
        )


if __name__ == "__main__":
    main()
