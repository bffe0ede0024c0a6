"""Truncated-BPTT training over parallel streams, as the data pipeline of docs/design.md describes.

A split is cut into B contiguous streams of equal length; window k of every stream gives inputs
``s[kT:(k+1)T]`` and targets ``s[kT+1:(k+1)T+1]``. The hidden state starts at zero at the start
of each epoch and is carried from window k to window k+1 of the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reference_numpy.bptt import cross_entropy, forward, loss_and_grads
from reference_numpy.optim import adagrad_step, clip_grads, global_norm
from reference_numpy.rnn import zero_state


def build_vocab(text: str) -> str:
    """The sorted distinct characters of ``text``: the same in every process, unlike set() order."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))


def make_streams(data: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut ``data`` into ``batch_size`` contiguous streams of equal length, (B, L)."""
    length = len(data) // batch_size
    return data[: batch_size * length].reshape(batch_size, length)


def num_windows(streams: np.ndarray, seq_len: int) -> int:
    return (streams.shape[1] - 1) // seq_len


def window(streams: np.ndarray, k: int, seq_len: int):
    """Inputs and targets (B, T) of window ``k``: targets are the inputs shifted by one."""
    T = seq_len
    return streams[:, k * T : (k + 1) * T], streams[:, k * T + 1 : (k + 1) * T + 1]


@dataclass
class TrainLog:
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)


def train(
    params: dict,
    data: np.ndarray,
    batch_size: int,
    seq_len: int,
    max_steps: int,
    lr: float,
    eps: float = 1e-10,
    clip_val: float | None = 5.0,
    clip_algorithm: str = "norm",
    cell: str = "tanh",
    optimizer=None,
    schedule=None,
) -> TrainLog:
    """Train ``params`` in place for ``max_steps`` windows (epochs wrap around); returns the log.

    Each step: forward and hand-written BPTT over one window, clip, an optimizer step, carry the
    last state. ``optimizer(params, grads, state, lr)`` defaults to Adagrad with ``eps``;
    ``schedule(step)`` multiplies ``lr`` at each step (default: constant), as a scheduler stepped
    every training step does.
    """
    if clip_algorithm not in ("norm", "value"):  # before any work: a typo never means another algorithm
        raise ValueError(f"clip_algorithm must be 'norm' or 'value', got {clip_algorithm!r}")
    streams = make_streams(data, batch_size)
    n = num_windows(streams, seq_len)
    if n < 1:
        raise ValueError(f"{streams.shape[1]} characters per stream is too short for a window of {seq_len}")
    sums = {}  # the optimizer's state
    log = TrainLog()
    state = None
    for step in range(max_steps):
        k = step % n
        if k == 0:  # every epoch starts from a zero state
            state = zero_state(params, batch_size, cell)
        inputs, targets = window(streams, k, seq_len)
        loss, grads, state = loss_and_grads(params, inputs, targets, state, cell)
        norm = global_norm(grads)
        if clip_val is not None:
            log.clipped.append(clip_grads(grads, clip_algorithm, clip_val))
        step_lr = lr * (1.0 if schedule is None else schedule(step))
        if optimizer is None:
            adagrad_step(params, grads, sums, step_lr, eps)
        else:
            optimizer(params, grads, sums, step_lr)
        log.loss.append(loss)
        log.grad_norm.append(norm)
    return log


def evaluate(params: dict, data: np.ndarray, batch_size: int, seq_len: int, cell: str = "tanh") -> float:
    """Mean loss (nats) over every window of a split, the state carried from window to window."""
    streams = make_streams(data, batch_size)
    state = zero_state(params, batch_size, cell)
    losses = []
    for k in range(num_windows(streams, seq_len)):
        inputs, targets = window(streams, k, seq_len)
        logits, state, _ = forward(params, inputs, state, cell)
        losses.append(cross_entropy(logits, targets))
    return float(np.mean(losses))
