"""The ``charrnn`` command: Lightning's CLI for fit/validate/test/predict, plus sample and gradcheck."""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

import torch
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from torch_charrnn.callbacks import TrainingMonitor
from torch_charrnn.data import CharDataModule
from torch_charrnn.errors import CharRNNError, DivergedError, require
from torch_charrnn.model import CharRNN
from torch_charrnn.rnn import PARAM_NAMES

TRAINER_DEFAULTS = {
    "gradient_clip_val": 5.0,
    "gradient_clip_algorithm": "norm",
    "max_epochs": 20,
    "log_every_n_steps": 10,
}

DESCRIPTION = """A character-level vanilla tanh RNN, trained with Lightning.

  charrnn fit [--config configs/X.yaml] [--model.hidden_size 512 ...]   train
  charrnn validate|test|predict --ckpt_path P                          evaluate
  charrnn sample --ckpt_path P [--prime TEXT] ...                       generate text
  charrnn gradcheck [--hidden_size 64 ...]                              check the BPTT

`charrnn fit --help` lists every option; `charrnn sample --help` and `charrnn gradcheck --help` theirs."""

# The windows are slices of one in-memory tensor: worker processes would only add overhead.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", "Your `IterableDataset` has `__len__` defined")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept."""


class CharRNNCLI(LightningCLI):
    """LightningCLI with the vocabulary linked from the data into the model, checkpoints kept
    (``last.ckpt`` and the best by ``val/bpc``) and the TensorBoard monitor always on."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/bpc",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{step}",
            }
        )
        # last.ckpt every N steps as well, so an interrupted run loses at most N steps.
        parser.add_lightning_class_args(ModelCheckpoint, "last")
        parser.set_defaults({"last.save_top_k": 0, "last.save_last": True, "last.every_n_train_steps": 200})
        parser.add_lightning_class_args(TrainingMonitor, "monitor")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        clip = config.trainer.gradient_clip_val
        require(
            clip is None or clip > 0,
            f"--trainer.gradient_clip_val must be positive, got {clip} (null turns clipping off)",
        )
        if config.data.val_fraction == 0:
            config.checkpoint.monitor = None  # no validation: keep the latest instead of the best

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path") == "last":
            kwargs["ckpt_path"] = find_last_checkpoint(Path(self.trainer.default_root_dir))
        return kwargs

    @rank_zero_only
    def after_fit(self) -> None:
        model, trainer = self.model, self.trainer
        generator = torch.Generator(model.device).manual_seed(0)
        text = "".join(chunk[0] for chunk in model.sample(300, temperature=0.8, generator=generator))
        print(f"\n--- sample (300 characters, temperature 0.8) ---\n{text}\n---")
        ckpt = trainer.checkpoint_callback
        log_dir = (
            trainer.loggers[0].log_dir if trainer.loggers else trainer.default_root_dir
        )  # no collective here
        print(f"logs:        {log_dir}   (tensorboard --logdir {Path(log_dir).parent})")
        if ckpt is not None:
            print(f"checkpoints: {ckpt.dirpath}")
            print(f"  best:      {ckpt.best_model_path or '(none yet: no validation ran)'}")
            print(f"  last:      {ckpt.last_model_path}")
            print(f"sample more: charrnn sample --ckpt_path {ckpt.last_model_path}")


def find_last_checkpoint(root: Path) -> str:
    """The newest ``last.ckpt`` under ``root`` (every run writes its own version folder)."""
    found = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CharRNNError(
            f"--ckpt_path last: no last.ckpt under {root.resolve()}. Pass the path of a checkpoint, or the "
            "--trainer.default_root_dir of the run to resume."
        )
    return str(found[-1])


def cli_main(args: list[str] | None = None, run: bool = True) -> CharRNNCLI:
    """Run Lightning's CLI in-process (``args`` as on the command line, after ``charrnn``)."""
    return CharRNNCLI(
        CharRNN,
        CharDataModule,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        parser_kwargs={"description": DESCRIPTION, "formatter_class": HelpFormatter},
        args=args,
        run=run,
    )


def gradcheck_main(argv: list[str]) -> int:
    from torch_charrnn.gradcheck import format_table, gradcheck

    parser = argparse.ArgumentParser(
        prog="charrnn gradcheck",
        description="Check the NumPy hand-written BPTT against torch autograd and finite differences "
        "(float64, unclipped). Exits 1 when any gradient disagrees beyond tolerance.",
    )
    parser.add_argument("--vocab_size", type=int, default=5, help="V (default: 5)")
    parser.add_argument("--hidden_size", type=int, default=4, help="H (default: 4)")
    parser.add_argument("--batch_size", type=int, default=2, help="B (default: 2)")
    parser.add_argument("--seq_len", type=int, default=6, help="T (default: 6)")
    parser.add_argument(
        "--scale",
        type=float,
        default=0.5,
        help="std of the random weights; 3 or more saturates tanh (default: 0.5)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max_fd_checks",
        type=int,
        default=500,
        help="finite-difference entries checked per tensor (default: 500)",
    )
    args = parser.parse_args(argv)
    for name in ("vocab_size", "hidden_size", "batch_size", "seq_len", "max_fd_checks"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.scale < 0:
        parser.error(f"--scale must be non-negative, got {args.scale}")
    rows = gradcheck(**vars(args))
    print(format_table(rows))
    bad = [f"{r.oracle}:{r.name}" for r in rows if not r.ok]
    summary = f"{len(rows) - len(bad)} of {len(rows)} gradients agree"
    print(f"\n{summary}" + (f"; disagreeing: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


def load_checkpoint(path: Path, device: str = "cpu") -> CharRNN:
    """Load a CharRNN checkpoint with ``weights_only=True``; any failure says what the file is not."""
    if not path.is_file():
        raise CharRNNError(f"checkpoint {path} does not exist (charrnn fit prints where it saves them)")
    data = path.read_bytes()  # read once: checked here, then loaded by Lightning
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a whole checkpoint
        raise CharRNNError(
            f"{path} is not a readable checkpoint (not a torch file, or truncated): {type(err).__name__}"
        ) from err
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    if not set(PARAM_NAMES) <= set(state) or not hparams.get("vocab"):
        raise CharRNNError(
            f"{path} is a checkpoint of another model, not a torch-charrnn CharRNN with a vocabulary"
        )
    return CharRNN.load_from_checkpoint(io.BytesIO(data), map_location=device, weights_only=True)


def sample_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="charrnn sample",
        description="Generate text from a checkpoint, streamed to stdout as it is generated. The hidden "
        "state is warmed up on --prime; without one, generation starts after a newline (or after the "
        "first character of the vocabulary if it has no newline). The vocabulary comes from the "
        "checkpoint: no corpus is needed.",
    )
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by charrnn fit")
    parser.add_argument("--prime", default="", help="text to start from (printed first)")
    parser.add_argument("--length", type=int, default=500, help="characters to generate (default: 500)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="softmax temperature; 0 is greedy (default: 1.0)"
    )
    parser.add_argument(
        "--top_k", type=int, default=None, help="sample only among the k most likely characters"
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same text (default: 0)")
    parser.add_argument("--num_samples", type=int, default=1, help="samples to generate, one after another")
    parser.add_argument("--device", default="cpu", help="torch device to sample on (default: cpu)")
    args = parser.parse_args(argv)
    if args.length < 0:
        parser.error(f"--length must be 0 or more, got {args.length}")
    if args.temperature < 0:
        parser.error(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
    if args.num_samples < 1:
        parser.error(f"--num_samples must be at least 1, got {args.num_samples}")
    if args.device == "cpu":
        torch.set_num_threads(1)  # one character at a time: threads only add synchronisation (measured)
    try:
        model = load_checkpoint(args.ckpt_path, args.device)
    except CharRNNError as err:
        parser.error(str(err))
    V = model.hparams.vocab_size
    if args.top_k is not None and not 1 <= args.top_k <= V:
        parser.error(f"--top_k must be between 1 and the vocabulary size {V}, got {args.top_k}")
    try:
        model.encode(args.prime)
    except CharRNNError as err:
        parser.error(f"--prime has {err}")
    model.eval()
    generator = torch.Generator(model.device).manual_seed(args.seed)
    out = sys.stdout
    for i in range(args.num_samples):
        if args.num_samples > 1:
            out.write(f"--- sample {i + 1} of {args.num_samples} ---\n")
        out.write(args.prime)
        for chunk in model.sample(args.length, args.prime, args.temperature, args.top_k, generator):
            out.write(chunk[0])
            out.flush()
        out.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``charrnn`` console script; ``argv`` defaults to the command line.

    A CharRNNError (bad input, divergence) ends the command with its message and a non-zero
    exit code, not a traceback.
    """
    words = sys.argv[1:] if argv is None else argv
    try:
        if words and words[0] == "gradcheck":
            return gradcheck_main(words[1:])
        if words and words[0] == "sample":
            return sample_main(words[1:])
        cli_main(argv)
    except CharRNNError as err:
        print(f"charrnn: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, DivergedError) else 2
    return 0
