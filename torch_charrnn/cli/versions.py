"""Where runs live: each its own ``version_N`` folder, claimed even when runs start together, and
the newest ``last.ckpt`` for ``--ckpt_path last``."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger

from torch_charrnn.errors import CharRNNError


def claim_version(logger: TensorBoardLogger) -> None:
    """Give ``logger`` the next free ``version_N`` folder, claimed with an atomic ``mkdir``.

    TensorBoardLogger picks the number by listing the folder and creates it later, so two runs
    started together in one folder both chose ``version_0`` and one lost its run.

    It reads and sets the logger's private ``_version``: its public ``version`` would choose a
    number by listing the folder, the race itself. Tested with Lightning 2.6 (2.6.6);
    ``tests/test_layout.py`` fails if the logger stops keeping its version there.
    """
    if logger._version is not None:  # set by the user (--trainer.logger ... version)
        return
    root = Path(logger.root_dir)
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    n = max(numbers, default=-1) + 1
    while True:
        try:
            (root / f"version_{n}").mkdir()
        except FileExistsError:
            n += 1
            continue
        logger._version = n  # Lightning reads it instead of choosing a number of its own
        return


def find_last_checkpoint(root: Path) -> str:
    """The newest ``last.ckpt`` under ``root`` (every run writes its own version folder)."""
    found = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CharRNNError(
            f"--ckpt_path last: no last.ckpt under {root.resolve()}. Pass the path of a checkpoint, or the "
            "--trainer.default_root_dir of the run to resume."
        )
    return str(found[-1])
