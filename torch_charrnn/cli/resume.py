"""The rules for resuming from a checkpoint (``--ckpt_path``): an option left out takes the
checkpoint's value, one given that fixes the model's shape is refused, an optimisation option
given is honoured and reported, and what a restored schedule owns cannot change."""

from __future__ import annotations

import lightning as L
from jsonargparse import Namespace

from torch_charrnn.errors import CharRNNError
from torch_charrnn.training.optimizer_state import schedule_owns_lr

# Options that fix the shapes of the model's tensors: a checkpoint's weights only fit its own.
SHAPE_OPTIONS = {"model": ("hidden_size", "cell", "num_layers")}
# Set from the data at instantiation (data.vocab -> model.vocab), and checked against the checkpoint then.
LINKED = {"model": ("vocab", "vocab_size", "unit"), "data": ("text",)}
LR_OPTIONS = ("--model.lr", "--optimizer.lr")


def resume_config(config: Namespace, given: Namespace, checkpoint: dict, path: str) -> list[str]:
    """Merge a checkpoint's hyperparameters into the parsed ``config``, in place, and return the
    changes to report.

    The rule: an option the user did not give takes the checkpoint's value (resuming continues
    the same run). One the user gave that differs from it is an error if it fixes the model's
    shape, and otherwise (optimisation and data options) is honoured and reported.
    """
    saved = {
        "model": checkpoint.get("hyper_parameters", {}),
        "data": checkpoint.get("datamodule_hyper_parameters", {}),
    }
    changes = []
    for section, hparams in saved.items():
        for key, old in hparams.items():
            if key.startswith("_") or key in LINKED[section] or f"{section}.{key}" not in config:
                continue
            new = given.get(f"{section}.{key}", hparams)  # hparams: a sentinel no option can equal
            if new is hparams:
                config[f"{section}.{key}"] = old
            elif new != old and key in SHAPE_OPTIONS.get(section, ()):
                raise CharRNNError(
                    f"--{section}.{key} {new} does not match the checkpoint's {key} {old} ({path}). Drop "
                    f"--{section}.{key} to resume that model, or leave out --ckpt_path to start a new run."
                )
            elif new != old:
                changes.append(f"--{section}.{key} {old} -> {new}")
    return changes


class RecordOptimizer(L.Callback):
    """Writes the run's ``--optimizer`` and ``--lr_scheduler`` (None: the model's own Adagrad, no
    schedule) into every checkpoint, so that a resumed run knows which optimizer state it holds."""

    def __init__(self, config: Namespace):
        self.choices = {k: _plain(config.get(k)) for k in ("optimizer", "lr_scheduler")}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["optimizer_config"] = self.choices


def _plain(value):
    """A parsed ``class_path``/``init_args`` choice as plain dicts and lists (weights_only-loadable)."""
    if isinstance(value, Namespace):
        return _plain(value.as_dict())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def resume_optimizer(given: Namespace, checkpoint: dict, path: str) -> tuple[dict, list[str]]:
    """The resume rule for ``--optimizer`` and ``--lr_scheduler``: left out, the checkpoint's choice
    is kept (returned, to be parsed into the config); another class is an error (its saved state
    would not fit); other arguments of the optimizer are honoured and reported, of the schedule an
    error (its saved state would override them). Returns (choices to keep, changes to report)."""
    saved = checkpoint.get("optimizer_config") or {}  # absent: the model's own Adagrad, no schedule
    keep, changes = {}, []
    for key in ("optimizer", "lr_scheduler"):
        old, new = saved.get(key), _plain(given.get(key))
        if new is None:
            if old is not None:
                keep[key] = old
            continue
        old_class = (
            old["class_path"] if old else "none (the model's own Adagrad)" if key == "optimizer" else "none"
        )
        if old is None or new.get("class_path", old["class_path"]) != old["class_path"]:
            raise CharRNNError(
                f"--{key} {new.get('class_path')} does not match the checkpoint's {old_class} ({path}): "
                f"its saved state belongs to that one. Leave out --{key} to resume with the checkpoint's, "
                "or leave out --ckpt_path to start a new run."
            )
        old_args, new_args = old.get("init_args", {}), new.get("init_args", {})
        differ = {k: v for k, v in new_args.items() if old_args.get(k) != v}
        if differ and key == "lr_scheduler":
            raise CharRNNError(
                f"--{key}.{next(iter(differ))} differs from the checkpoint's ({path}): a schedule cannot "
                "change on resume, the restored schedule would override it. Leave out --lr_scheduler.*, "
                "or leave out --ckpt_path to start a new run."
            )
        changes += [f"--{key}.{k} {old_args.get(k)} -> {v}" for k, v in differ.items()]
        keep[key] = {"class_path": old["class_path"], "init_args": {**old_args, **new_args}}
    return keep, changes


def check_vocabulary(vocab: str, checkpoint: dict, path: str) -> None:
    """The corpus must give the checkpoint's own vocabulary: its weights are indexed by it."""
    want = checkpoint["hyper_parameters"]["vocab"]
    if vocab != want:
        corpus = checkpoint.get("datamodule_hyper_parameters", {}).get("corpus", "the one it was trained on")
        only_here, only_there = sorted(set(vocab) - set(want)), sorted(set(want) - set(vocab))
        raise CharRNNError(
            f"the corpus's vocabulary ({len(vocab)} characters) is not the checkpoint's ({len(want)}, "
            f"{path}): characters only in the corpus {only_here[:10]}, only in the checkpoint "
            f"{only_there[:10]}. Resume on the checkpoint's corpus (--data.corpus {corpus}, what it gets "
            "when --data.corpus is left out), or leave out --ckpt_path to start a new run."
        )


def refuse_new_lr_under_schedule(changes: list[str], checkpoint: dict, path: str) -> None:
    """A learning rate given on resume cannot take effect where a schedule was restored."""
    for change in changes:
        flag = change.split()[0]
        if flag in LR_OPTIONS and schedule_owns_lr(checkpoint):
            raise CharRNNError(
                f"{flag} differs from the checkpoint's ({path}), whose run has a schedule: the restored "
                f"schedule sets the learning rate from then on. Leave out {flag}, or leave out --ckpt_path "
                "to start a new run."
            )
