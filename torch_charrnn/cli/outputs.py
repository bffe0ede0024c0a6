"""The one place every file the commands write goes through (``charrnn score --per_char``, ``charrnn
export``, and ``charrnn fit``'s folders): checked before any work, then written beside its target
and renamed into place, so that a typo in a path costs nothing and a failure or an interrupt leaves
an earlier file as it was.

A target is refused, in one line that names the path and what to do, where it is a folder, where its
folder does not exist, is a file or cannot be written to, where it is one of the command's own
inputs (the same file by any name), or where it reads as a checkpoint of this package (unless the
command is the one that writes checkpoints). Imports torch, not Lightning.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from torch_charrnn.errors import CharRNNError


def check_output(
    out: Path, option: str, inputs: Iterable[tuple[str, Path]] = (), example: str = "out.txt"
) -> Path:
    """``out`` if a command may write it, else a CharRNNError naming ``option`` (the flag or argument
    that gave the path); ``inputs``: the files the command reads, each with the option that named it."""
    out = Path(out)
    if out.is_dir():
        raise CharRNNError(f"{option} {out} is a folder: name the file to write, as {out / example}")
    check_folder(out.parent, option, out)
    if out.exists():
        for label, source in inputs:
            if Path(source).exists() and os.path.samefile(out, source):
                raise CharRNNError(
                    f"{option} {out} is the file this command reads as {label} {source}: writing it would "
                    "replace it; choose another path"
                )
        if reads_as_checkpoint(out):
            raise CharRNNError(
                f"{option} {out} is a torch-charrnn checkpoint: writing it would replace the checkpoint; "
                "choose another path"
            )
    return out


def check_folder(folder: Path, option: str, target: Path | None = None) -> Path:
    """``folder`` if files can be written in it, or it can be made (``charrnn fit``'s folders, made
    by the run): its nearest existing ancestor is a folder this process may write in. Else a
    CharRNNError naming ``option``; ``target``: the file to be written there, for the message."""
    folder = Path(folder)
    what = f"cannot write {target}: " if target is not None else f"{option} {folder}: "
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CharRNNError(f"{what}{existing} is a file, not a folder: choose another path with {option}")
    if target is not None and existing != folder:
        raise CharRNNError(f"{what}the folder {folder} does not exist: create it, or choose another path")
    if not writable(existing):
        raise CharRNNError(
            f"{what}the folder {existing} cannot be written to (permission denied): choose another path "
            f"with {option}"
        )
    return folder


def writable(folder: Path) -> bool:
    """Whether this process can create a file in ``folder`` (tried, not read from the mode bits,
    which say nothing of a read-only filesystem, an ACL, or root)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".charrnn-check-"):
            return True
    except OSError:
        return False


def reads_as_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a checkpoint of this package (a dict with the model's ``state_dict`` and
    ``hyper_parameters``), read without its tensors' data."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"PK":  # not a torch.save zip file: not a checkpoint of ours
                return False
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything that does not read as a checkpoint is not one
        return False
    return isinstance(saved, dict) and "state_dict" in saved and "hyper_parameters" in saved


@contextlib.contextmanager
def written(out: Path):
    """A temporary path beside ``out`` to write to, moved onto ``out`` only if the block succeeds:
    a command that fails or is interrupted leaves no file, and an earlier file at ``out`` as it was."""
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        part.open("wb").close()  # as the file itself would be created: its permissions, its folder
    except OSError as err:
        where = "does not exist" if not out.parent.exists() else "cannot be written to"
        raise CharRNNError(f"cannot write {out}: the folder {out.parent} {where} ({err.strerror})") from err
    try:
        yield part
        part.replace(out)
    finally:
        part.unlink(missing_ok=True)
