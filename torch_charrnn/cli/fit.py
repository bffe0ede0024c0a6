"""``charrnn fit|validate|test|predict``: Lightning's CLI around CharRNN and CharDataModule.

Beyond LightningCLI itself: the vocabulary linked from the data into the model, the rules for
resuming from a checkpoint (``resume_config``), one version folder per run even for runs started
together, one ``last.ckpt`` per run, checkpoints written so that they never tear, and errors as
one ``charrnn: error:`` line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

import lightning as L
import torch
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from torch_charrnn.cli.flags import with_flags
from torch_charrnn.cli.launch import (
    PEER_LOST,
    Launch,
    close_process_group,
    end_with_watcher,
    launch_for,
    peer_lost,
    stall_timeout,
    supervise,
    supervised,
)
from torch_charrnn.cli.outputs import check_folder
from torch_charrnn.cli.parser import refusal
from torch_charrnn.cli.resume import (
    RecordOptimizer,
    check_vocabulary,
    refuse_new_lr_under_schedule,
    resume_config,
    resume_optimizer,
)
from torch_charrnn.cli.usage import DESCRIPTION
from torch_charrnn.cli.versions import claim_version, find_last_checkpoint
from torch_charrnn.data.datamodule import CharDataModule
from torch_charrnn.errors import CharRNNError, Interrupted, RunError
from torch_charrnn.inference.checkpoint import read_checkpoint
from torch_charrnn.rnn.memory import keep_freed_memory
from torch_charrnn.training.callbacks import (
    MemoryCheck,
    ParameterSummary,
    StallMargin,
    StepBar,
    TrainingMonitor,
)
from torch_charrnn.training.guard import step_overflowed
from torch_charrnn.training.interrupts import StopOnSignal
from torch_charrnn.training.module import CharRNN
from torch_charrnn.training.saving import AtomicCheckpointIO, LastCheckpoint, last_checkpoint

# Per-step costs of the run that are not the step (benchmarks/bench_overhead.py): metrics are
# written every 50 steps, Lightning's default, and the progress bar redrawn every 10, since each
# written step and each redraw costs Lightning a share of a small model's step.
TRAINER_DEFAULTS = {
    "gradient_clip_val": 5.0,
    "gradient_clip_algorithm": "norm",
    "max_epochs": 20,
    "log_every_n_steps": 50,
}
PROGRESS_BAR_REFRESH_RATE = 10

# Not ours, and read by newcomers as problems: (message, module) of each warning silenced. The test
# suite silences the same ones (tests/conftest.py), so that what is left in its summary is ours.
FOREIGN_WARNINGS = (
    # a deprecation inside Lightning 2.6 itself
    (r".*isinstance\(treespec, LeafSpec\)", r"lightning\.pytorch\."),
    # a resumed run writes into a version folder of its own, by design (see cli/versions.claim_version)
    ("The dirpath has changed from", r"lightning\.pytorch\.callbacks\."),
    # the windows are slices of one in-memory tensor: worker processes would only add overhead
    (".*does not have many workers.*", ""),
    ("Your `IterableDataset` has `__len__` defined", ""),
    # Lightning's own all_gather (the carried state of every process, into a checkpoint) calls a torch
    # function that torch has deprecated: said at every checkpoint of a multi-process run, by each process
    (r"torch\.distributed\.nn\.functional\.all_gather is deprecated", ""),
)
for message, module in FOREIGN_WARNINGS:
    warnings.filterwarnings("ignore", message, module=module)
# and two log records: Lightning's advertisement for its cloud services, and its note that it found
# our model summary (``ParameterSummary``, which instantiate_trainer adds) in place of its own
FOREIGN_LOG_LINES = (
    "\N{ELECTRIC LIGHT BULB} Tip:",
    "Trainer already configured with model summary callbacks",
)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith(FOREIGN_LOG_LINES)
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept."""


class CLIParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one ``charrnn: error:`` line (exit code 2) naming the
    subcommand's help, as the other subcommands' are (``cli/parser.py``), instead of its usage."""

    def error(self, message: str, ex: Exception | None = None):
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())
        words = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "").split()
        command = f"charrnn {words[-1]}" if len(words) > 1 else "charrnn"  # in-process, prog is argv[0]'s
        raise refusal(message, command) from ex


class CharRNNCLI(LightningCLI):
    """LightningCLI with the vocabulary linked from the data into the model, ``last.ckpt`` and the
    best checkpoint by ``val/bpc`` kept, the TensorBoard monitor always on, and the resume rules
    of ``cli/resume.py``."""

    checkpoint: dict | None = None  # the one passed with --ckpt_path, read once
    resume_changes: (
        tuple[str, ...] | list[str]
    ) = ()  # options that differ from the checkpoint's: "--model.lr a -> b"

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")
        parser.link_arguments("data.unit", "model.unit", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/bpc",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best-{step}",
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last")
        parser.add_lightning_class_args(TrainingMonitor, "monitor")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """Lightning's trainer, with a progress bar redrawn every PROGRESS_BAR_REFRESH_RATE steps
        unless it is turned off (``--trainer.enable_progress_bar=false``) or the user gave their own
        (``--trainer.callbacks+=TQDMProgressBar --trainer.callbacks.refresh_rate=1``), and the model
        summary without a FLOPs column (``ParameterSummary``), unless turned off or given."""
        config = self.config_init[self.subcommand].trainer
        callbacks = config.callbacks if isinstance(config.callbacks, list) else [config.callbacks]
        callbacks = [c for c in callbacks if c is not None]
        if config.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(StepBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE))
        if config.enable_model_summary is not False and not any(
            isinstance(c, ModelSummary) for c in callbacks
        ):
            callbacks.append(ParameterSummary())  # Lightning's, without a FLOPs column of zeros
        return super().instantiate_trainer(**{**kwargs, "callbacks": callbacks})

    def parse_arguments(self, parser, args) -> None:
        self._args = args  # parsed again without defaults to tell what the user gave
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand") or "") or None
        for option, folder in output_folders(config) if config is not None else ():
            check_folder(Path(folder), option)  # first: before the seed, the model or the corpus

    def _parse_ckpt_path(self) -> None:
        """Replaces Lightning's, which lays every hyperparameter of the checkpoint over the command
        line (Lightning-AI/pytorch-lightning#20801): see ``resume_config``.

        Lightning's only private name the package relies on besides TensorBoardLogger's version
        (``cli/versions.py``): LightningCLI has no public hook between parsing the command line and
        instantiating the classes in which the checkpoint is read. Tested with Lightning 2.6 (2.6.6);
        ``tests/test_layout.py`` fails if LightningCLI stops calling it there."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config.get(f"{subcommand}.ckpt_path") if subcommand else None
        if not ckpt_path:
            return
        config = self.config[subcommand]
        if ckpt_path == "last":
            config.ckpt_path = ckpt_path = find_last_checkpoint(Path(config.trainer.default_root_dir or "."))
        self.checkpoint = read_checkpoint(ckpt_path)
        given = self.parser.parse_args(self._args, defaults=False)[subcommand]
        self.resume_changes = resume_config(config, given, self.checkpoint, ckpt_path)
        if "optimizer" in config:  # fit: the optimizer and schedule follow the same rule
            keep, changes = resume_optimizer(given, self.checkpoint, ckpt_path)
            self.resume_changes += changes
            if keep:
                self.config = self.parser.parse_object({subcommand: keep}, self.config)
        refuse_new_lr_under_schedule(self.resume_changes, self.checkpoint, ckpt_path)

    @staticmethod
    def configure_optimizers(lightning_module, optimizer, lr_scheduler=None):
        """LightningCLI's, with the schedule stepped every training step (``interval: step``): runs
        here are budgeted in steps (``max_steps``) and time, not epochs."""
        if lr_scheduler is None or isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return LightningCLI.configure_optimizers(lightning_module, optimizer, lr_scheduler)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}

    def fit(self, model, **kwargs) -> None:
        try:
            self.trainer.fit(model, **kwargs)
        except CharRNNError as err:
            raise self.named(err)  # noqa: B904 - the same error, its message in flags
        except RuntimeError as error:  # torch.optim's own overflow is a divergence too
            if self.trainer.world_size > 1 and peer_lost(error):
                if os.environ.get("CHARRNN_TRACEBACK") == "1":
                    traceback.print_exc()
                if supervised():  # another rank's end: the watcher says which
                    raise SystemExit(PEER_LOST) from error
                said = str(error).strip().splitlines()[0]
                raise RunError(  # started by torchrun or SLURM: its own report names the rank
                    f"rank {self.trainer.global_rank}: another process of the run ended or stopped "
                    f"answering ({said}); the launcher's report names it. The checkpoints written are "
                    "intact: run the same launch command with `ckpt_path` last."
                ) from error
            failed = step_overflowed(error, self.trainer) or self.out_of_memory(error)
            if failed is None:
                raise
            raise self.named(failed) from error

    def out_of_memory(self, error: RuntimeError) -> RunError | None:
        """An allocation that failed mid-run (CPU or CUDA) as one line: what the run holds by the
        estimate, the options to lower, and the checkpoint to resume from."""
        error = out_of_memory_in(error)
        if error is None:
            return None
        said = str(error)
        estimate = self.memory_check.footprint
        holds = f" The run holds {estimate.summary()}, by the estimate." if estimate else ""
        last = last_checkpoint(self.trainer).last_model_path
        resume = (
            f"The checkpoints are intact, the last at {last}: resume with `ckpt_path` last."
            if last
            else "No checkpoint was written yet."
        )
        torch_said = said.strip().splitlines()[0]
        return RunError(
            f"out of memory at step {self.trainer.global_step} on {self.model.device} ({torch_said})."
            f"{holds} Lower `batch_size`, `seq_len` or `hidden_size`. {resume}"
        )

    def named(self, err: CharRNNError) -> CharRNNError:
        """``err`` with its argument names as flags: with --optimizer, `lr` is --optimizer.lr."""
        err.args = (with_flags(str(err), optimizer=self.config.fit.get("optimizer") is not None),)
        return err

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        check_trainer_options(config.trainer)
        if self.subcommand == "fit" and (launch := launch_for(config.trainer)) is not None:
            raise launch  # before anything is built: the ranks build their own (cli/launch.py)
        strategy = config.trainer.get("strategy")
        if getattr(strategy, "class_path", "").endswith(".DDPStrategy"):  # torch's 30 minutes is ours
            strategy.init_args.timeout = stall_timeout(config.trainer)
        if config.data.val_fraction == 0:
            config.checkpoint.monitor = None  # no validation: keep the latest instead of the best

    def after_instantiate_classes(self) -> None:
        if self.checkpoint is not None:
            ckpt_path = self.config[self.subcommand].ckpt_path
            check_vocabulary(self.model.hparams.vocab, self.checkpoint, ckpt_path)
            if self.resume_changes and rank_zero_only.rank == 0:
                print(f"charrnn: resuming {ckpt_path} with {', '.join(self.resume_changes)}", file=sys.stderr)
        if "optimizer" in self.config[self.subcommand]:
            self.trainer.callbacks.append(RecordOptimizer(self.config[self.subcommand]))
        self.memory_check = MemoryCheck()
        self.trainer.callbacks.append(self.memory_check)
        self.trainer.callbacks.append(StopOnSignal())
        if supervised():  # the processes wait for each other up to the strategy's timeout
            timeout = self.config[self.subcommand].trainer.strategy.init_args.timeout
            self.trainer.callbacks.append(StallMargin(timeout.total_seconds()))
        if type(self.trainer.strategy.checkpoint_io) is L.pytorch.plugins.TorchCheckpointIO:
            read = {self.config[self.subcommand].ckpt_path: self.checkpoint} if self.checkpoint else {}
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO(preloaded=read)
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and rank_zero_only.rank == 0:
                claim_version(logger)

    @rank_zero_only
    def after_fit(self) -> None:
        model, trainer = self.model, self.trainer
        generator = torch.Generator(model.device).manual_seed(0)
        text = model.sample_text(300, temperature=0.8, generator=generator)
        print(f"\n--- sample (300 characters, temperature 0.8) ---\n{text}\n---")
        if trainer.fast_dev_run:
            print("fast_dev_run: a trial run, so Lightning wrote no logs and no checkpoints")
            return
        log_dir = trainer.loggers[0].log_dir if trainer.loggers else trainer.default_root_dir
        print(f"logs:        {log_dir}   (tensorboard --logdir {Path(log_dir).parent})")
        best = next(c for c in trainer.callbacks if type(c) is ModelCheckpoint)
        last = last_checkpoint(trainer)
        print(f"checkpoints: {last.dirpath}")
        print(f"  best:      {best.best_model_path or '(none yet: no validation ran)'}")
        if not last.last_model_path:  # limit_train_batches 0, max_epochs 0: nothing trained
            print("  last:      (none: no training step ran)")
            return
        print(f"  last:      {last.last_model_path}")
        print(f"sample more: charrnn sample --ckpt_path {last.last_model_path}")


def output_folders(config) -> list[tuple[str, str]]:
    """The folders a run writes in that the user named, each with its flag: the root folder, each
    logger's ``save_dir`` and the checkpoints' ``dirpath`` (none named: the working folder)."""
    trainer = config.trainer
    folders = [("--trainer.default_root_dir", trainer.default_root_dir or ".")]
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    for logger in loggers:
        save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
        if save_dir:
            folders.append(("--trainer.logger.init_args.save_dir", save_dir))
    for key in ("checkpoint", "last"):
        if config.get(key) is not None and config[key].get("dirpath"):
            folders.append((f"--{key}.dirpath", config[key].dirpath))
    return folders


def out_of_memory_in(error: BaseException) -> BaseException | None:
    """The allocation failure behind ``error``, itself or one it was raised while handling: an
    out-of-memory error inside a CUDA graph's capture surfaces as the capture's own error."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error):
            return error
        error = error.__cause__ or error.__context__
    return None


# Trainer options that must be positive, and the hint each error gives (Lightning itself takes a
# 0 for the last two and then divides by it, deep in its loop).
POSITIVE_TRAINER_OPTIONS = {
    "gradient_clip_val": "null turns clipping off",
    "check_val_every_n_epoch": "null: validate every `val_check_interval` training steps, across epochs",
    "val_check_interval": "a number of training steps, or a fraction of an epoch up to 1.0",
}


def check_trainer_options(trainer) -> None:
    """The trainer options that Lightning would fail on with a traceback, as clear errors."""
    for name, hint in POSITIVE_TRAINER_OPTIONS.items():
        value = trainer.get(name)
        if value is not None and value <= 0:
            raise CharRNNError(f"`{name}` must be positive, got {value} ({hint})")
    if trainer.enable_checkpointing is False:  # else Lightning's traceback, as it meets ours
        raise CharRNNError(
            "`enable_checkpointing` false: charrnn keeps last.ckpt (what `ckpt_path` last "
            "resumes) and the best checkpoint by val/bpc, so checkpointing cannot be turned off. Leave "
            "the option out; --last.every_n_train_steps 0 writes last.ckpt only after validation and "
            "at the end."
        )
    require_accelerator(trainer.accelerator)


def require_accelerator(accelerator) -> None:
    """A GPU asked for where torch sees none is a clear error, not Lightning's traceback."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise CharRNNError(
            f"--trainer.accelerator {accelerator} asks for a GPU, but torch {torch.__version__} ({build}) "
            "sees none: torch.cuda.is_available() is False. Install a CUDA build of torch "
            "(https://pytorch.org/get-started/) on a machine with an NVIDIA GPU, or pass "
            "--trainer.accelerator cpu."
        )


def cli_main(args: list[str] | None = None, run: bool = True, cli_class: type = CharRNNCLI) -> CharRNNCLI:
    """Run Lightning's CLI in-process (``args`` as on the command line, after ``charrnn``);
    ``cli_class``: a subclass of CharRNNCLI, for tools that hook into a run (benchmarks/race.py)."""
    keep_freed_memory()  # each step reuses the last one's memory rather than fresh pages
    if supervised():
        end_with_watcher()
    try:
        cli = run_cli(args, run, cli_class)
    except Launch as launch:  # several processes on this machine: started and watched from here
        supervise(launch, list(sys.argv[1:] if args is None else args))
        return None
    except Interrupted:  # stopped by a signal, its checkpoint written: a rank ends as cleanly as below
        close_process_group()
        raise
    close_process_group()  # a rank of a run that ended well (cli/launch.py)
    return cli


def run_cli(args: list[str] | None, run: bool, cli_class: type) -> CharRNNCLI:
    """LightningCLI with this package's classes and defaults, its errors as CharRNNErrors."""
    try:
        return cli_class(
            CharRNN,
            CharDataModule,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_kwargs={"description": DESCRIPTION, "formatter_class": HelpFormatter},
            parser_class=CLIParser,
            args=args,
            run=run,
        )
    except CharRNNError as err:
        err.args = (with_flags(str(err)),)  # a no-op on a message fit() already turned into flags
        raise
    except MisconfigurationException as err:  # Lightning's own check of its options, not a traceback
        raise CharRNNError(with_flags(str(err))) from err
