"""The one place where the names of arguments become command-line flags: the library's messages
name an argument in backticks (`lr`), and the command line shows it as its flag (--model.lr)."""

from __future__ import annotations

import inspect
import re

import lightning as L

from torch_charrnn.cli.resume import LINKED
from torch_charrnn.data.datamodule import CharDataModule
from torch_charrnn.training.module import CharRNN

TOP_LEVEL = ("ckpt_path",)  # arguments of the subcommand itself (--ckpt_path)


def _option_sections(optimizer: bool) -> dict[str, str]:
    """Which flag each argument name is: ``lr`` -> ``--model.lr`` (``--optimizer.lr`` when the run
    names an optimizer). A linked option is the flag of the side the user sets (``unit`` is
    ``--data.unit``: the model takes it from the data)."""
    flags = {}
    for section, cls in (("trainer", L.Trainer), ("model", CharRNN), ("data", CharDataModule)):
        names = inspect.signature(cls.__init__).parameters
        flags.update({n: f"--{section}.{n}" for n in names if n not in LINKED.get(section, ())})
    flags.update({n: f"--{n}" for n in TOP_LEVEL})
    if optimizer:
        flags["lr"] = "--optimizer.lr"
    return flags


def with_flags(message: str, optimizer: bool = False) -> str:
    """``message`` with every argument named in backticks (`lr`) written as its flag (--model.lr)."""
    flags = _option_sections(optimizer)
    return re.sub(r"`(\w+)`", lambda m: flags.get(m[1], m[0]), message)
