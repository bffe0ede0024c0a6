"""What a training run holds in memory, estimated before anything is allocated (docs/design.md,
"Memory"): the parameters, their gradients, the optimizer's state, and one window's tape.

    bytes = s * (P * (4 + k)  +  B * T * (L * H * (c + 2 + d + z)  +  (L - 1) * H * k_a
                                           +  2 * G * H  +  3 * V))

s bytes a number (4 in float32); P parameters, held as the weights, their gradients, k slots of the
optimizer's state (Adagrad 1, Adam 2) and two parameter-sized temporaries (clipping's and the
optimizer's vectorised steps); B streams, T steps a window, L layers of H units, G gate blocks, V
symbols; c the numbers a cell's step keeps per unit for the backward pass (its cache: tanh 1, GRU
5, LSTM 8, counted from the cell's own ``step``), 2 the h each layer passes on and its gradient, d
1 with dropout (its mask) and 0 without; z 2 for each state zoned out (its mask, and the cell's own
new value kept beside the one carried); k_a what a layer above the first keeps of its input
shares (a layer-normalised cell's product before its normalisation, G; 0 for the others); 2 * G * H
a layer's input share and its gradient (one layer at a time); 3 * V the logits, their softmax and
their gradient. Shapes are counted on PyTorch's meta device: nothing is allocated.
``benchmarks/bench_memory_estimate.py`` measures it against what a CPU training process holds at
its peak.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from torch_charrnn.rnn.cells import Cell
from torch_charrnn.rnn.products import plain_product, plain_window_product

MiB = 2**20


@dataclass(frozen=True)
class Footprint:
    """A run's memory by part, in bytes."""

    parameters: int  # how many (not bytes)
    weights: int  # the parameters and their gradients
    optimizer: int  # its state, and the temporaries of its step and of clipping
    window: int  # one window's tape, logits and the backward's working space

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.window

    def summary(self) -> str:
        """One line: the parameters and the MiB a training step holds, by part."""
        total, weights, optimizer, window = map(mib, (self.total, self.weights, self.optimizer, self.window))
        return (
            f"{self.parameters:,} parameters; a training step holds about {total} MiB (weights and "
            f"gradients {weights}, optimizer {optimizer}, the window's tape {window})"
        )


def mib(size: int) -> str:
    """``size`` bytes in MiB, to a tenth below 10."""
    return f"{size / MiB:,.1f}" if size < 10 * MiB else f"{size / MiB:,.0f}"


def parameter_count(cell: Cell, vocab_size: int, hidden_size: int, num_layers: int) -> int:
    """The model's parameters: each layer's as its cell makes them, and the output layer's."""
    V, H = vocab_size, hidden_size
    with torch.device("meta"):  # shapes only
        layers = [cell.init(V if l == 0 else H, H, None, first_layer=l == 0) for l in range(num_layers)]
    return sum(t.numel() for p in layers for t in p.values()) + H * V + V


def tensors_in(kept) -> list[torch.Tensor]:
    """Every tensor in what a step or an input share keeps, a tuple of tensors and tuples."""
    if isinstance(kept, torch.Tensor):
        return [kept]
    return [t for item in kept or () for t in tensors_in(item)]


def per_unit(kept, H: int) -> int:
    """The numbers ``kept`` holds per stream and unit, each tensor counted once."""
    distinct = {id(t): t for t in tensors_in(kept)}
    return sum(t.numel() for t in distinct.values()) // H


@functools.cache
def step_floats(cell: Cell) -> int:
    """The numbers a step of ``cell`` keeps for the backward pass, per stream and unit (its cache)."""
    H = 4
    with torch.device("meta"):
        p = cell.init(H, H, None, first_layer=False)
        state = tuple(torch.empty(1, H) for _ in cell.STATE)
        _, cache = cell.step(torch.empty(1, cell.GATES * H), state, p, plain_product(p["W_hh"]))
    return per_unit(cache, H)


@functools.cache
def share_floats(cell: Cell) -> int:
    """The numbers a layer above the first keeps of its input shares for their backward, per stream,
    step and unit (a layer-normalised cell's product before its normalisation; 0 for most cells)."""
    H = 4
    with torch.device("meta"):
        p = cell.init(H, H, None, first_layer=False)
        _, kept = cell.input_share(torch.empty(1, 1, H), p, plain_window_product)
    return per_unit(kept, H)


def footprint(
    cell: Cell,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    batch_size: int,
    seq_len: int,
    dropout: float = 0.0,
    optimizer_slots: float = 1.0,
    itemsize: int = 4,
) -> Footprint:
    """The module's formula for one training process."""
    V, H, L, B, T = vocab_size, hidden_size, num_layers, batch_size, seq_len
    P = parameter_count(cell, V, H, L)
    zoned = 2 * sum(1 for p in cell.zoneout if p)
    per_step = L * H * (step_floats(cell) + 2 + (dropout > 0) + zoned) + (L - 1) * H * share_floats(cell)
    per_step += 2 * cell.GATES * H + 3 * V
    return Footprint(
        parameters=P,
        weights=2 * P * itemsize,
        optimizer=int((optimizer_slots + 2) * P * itemsize),
        window=B * T * per_step * itemsize,
    )
