"""Ctrl-C (SIGINT) or SIGTERM (how a scheduler preempts a job) during training costs no step: the
step under way ends, ``last.ckpt`` is written at the step reached, by the very write that writes it
every ``--last.every_n_train_steps`` steps (the carried state, the dropout generators, the optimizer
and the schedule: a resume from it is exact), and the run stops with ``Interrupted``, which the
command line turns into one line and the command that resumes. A second signal ends the process at
once (the signal's default action); checkpoints are written beside their target and renamed
(``training/saving.py``), so none is torn.

Several processes stop at the same step: each step they agree whether any of them was signalled.
"""

from __future__ import annotations

import signal
import threading

import lightning as L

from torch_charrnn.errors import Interrupted
from torch_charrnn.training.saving import last_checkpoint

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal(L.Callback):
    """While training runs, SIGINT and SIGTERM ask for a stop after the step under way."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.received = None
        if threading.current_thread() is threading.main_thread():  # where Python runs its handlers
            self._previous = {s: signal.signal(s, self._note) for s in SIGNALS}

    def _note(self, signum, frame) -> None:
        self.received = signum
        for s in SIGNALS:  # a second one ends the process at once, as it would have without us
            signal.signal(s, signal.SIG_DFL)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:  # any process signalled stops them all, at this same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        last = last_checkpoint(trainer)
        last.write_now(trainer)
        raise Interrupted(self.received or signal.SIGTERM, trainer.global_step, last.last_model_path)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        if self.received is None:  # once signalled, a second signal still ends the process at once
            for s, handler in self._previous.items():
                signal.signal(s, handler)
        self._previous = {}
