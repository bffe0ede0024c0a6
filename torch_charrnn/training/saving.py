"""What a run leaves on disk: one ``last.ckpt``, checkpoints that never tear.

Lightning's own checkpoint write goes through an fsspec transaction whose temporary file lives in
the system temp folder, so the final move is a copy whenever that folder is on another
filesystem than the run (a tmpfs ``/tmp``): a full disk or a kill during the copy leaves a torn
checkpoint. Here the temporary file is written beside its target, flushed, fsynced and renamed.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO

from torch_charrnn.errors import RunError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint next to its target and ``os.replace``-s it in: whole or not at all.

    A failed write (a full disk, a file-size limit) removes the temporary file, leaves the
    previous checkpoint at that path as it was, and stops the run with a RunError that names the
    folder, the space the checkpoint needs and the space there is.

    Args:
        preloaded: checkpoints already read (``checkpoint.read_checkpoint``), by path: the first
            load of each is served from here, so ``--ckpt_path`` is read from disk once.
    """

    def __init__(self, preloaded: dict[str, dict] | None = None):
        super().__init__()
        self._preloaded = {os.path.abspath(k): v for k, v in (preloaded or {}).items()}
        self.writes: list[float] = []  # seconds each write took, for StallMargin

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        checkpoint = self._preloaded.pop(os.path.abspath(path), None)
        if checkpoint is not None:
            return checkpoint
        return super().load_checkpoint(path, weights_only=weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        start = time.monotonic()
        self._write(checkpoint, Path(path))
        self.writes.append(time.monotonic() - start)

    def _write(self, checkpoint: dict[str, Any], path: Path) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
            raise RunError(
                f"could not write the checkpoint {path} ({err.strerror or err}): it needs "
                f"{_mb(len(data))} in {path.parent}, where {_mb(free)} are free to this process. Nothing "
                "was torn: the checkpoints already there are intact. Free some space (or raise the "
                "file-size limit), or point `default_root_dir` at a folder with room, then resume "
                "with `ckpt_path` last."
            ) from err
        _fsync_dir(path.parent)  # the rename itself survives a power cut


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a folder: the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LastCheckpoint(ModelCheckpoint):
    """The run's one ``last.ckpt``: written every ``every_n_train_steps`` steps, after every
    validation, and when training ends, so it is always the newest state. ``--ckpt_path last``
    resumes it and the end-of-run message names it.

    Args:
        every_n_train_steps: how often to write it while training (0: only at validation and the end).
        dirpath: where (default: the run's ``checkpoints`` folder).
    """

    def __init__(self, every_n_train_steps: int = 200, dirpath: str | None = None):
        super().__init__(
            dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_unless_saved(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save_last_unless_saved(trainer)

    def write_now(self, trainer) -> None:
        """Write ``last.ckpt`` at the step reached, unless it already holds it (``StopOnSignal``)."""
        self._save_last_unless_saved(trainer)

    def _save_last_unless_saved(self, trainer) -> None:
        # skips sanity checks, fast_dev_run, evaluation-only runs and a step already written
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def last_checkpoint(trainer) -> LastCheckpoint:
    """The trainer's LastCheckpoint callback (``trainer.checkpoint_callback`` is the best-of one)."""
    return next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
