"""The recurrent cells, by name. Adding one is a file here (and its twin in reference_numpy/cells/)
and a line in CELLS: the BPTT loop, the sampler, the monitor and the model take whatever is
registered. A cell is resolved from its name once (``get_cell``) and the object is passed down.

A cell module has (``Cell`` below holds them, resolved once):
    NAME            its name in CELLS
    GATES           gate blocks side by side in W_xh, W_hh and b_h (tanh 1, GRU 3, LSTM 4)
    STATE           names of its recurrent state, h first: ("h",) or ("h", "c")
    init(...)       the parameters of one layer; its own options are keyword arguments, by name
    step(...)       one time step forward, given the input share a and the previous state
                    (torch: and ``recur``, the product by W_hh of ``torch_charrnn/rnn/products.py``)
    step_backward   that step's derivatives, each beside the operation it differentiates
    extra_grads     gradients of parameters beyond W_xh, W_hh, b_h (GRU's b_hn), from the window's du
    layer_forward, layer_backward   (torch only) the loops of step and step_backward over a window,
                    in C++ (``torch_charrnn/rnn/csrc/<name>.cpp``, loaded by ``rnn/native.py``), from
                    the layer's input as it comes (characters or the h below); the backward also
                    returns the parameter gradients it formed itself, by name (BPTT forms the rest:
                    W_xh and b_h from dL/da; W_hh and ``extra_grads`` from dL/du, which may then be
                    None where the cell returns W_hh's)
    activations     (torch only) a step's gates and states by name, for the TensorBoard monitor
    FUSED, fused_biases   (torch only) the torch.nn module computing the same cell and its two
                    biases from this layer's, for bptt="fused"
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields

from torch_charrnn.rnn.cells import gru, lstm, tanh


@dataclass(frozen=True)
class Cell:
    """One cell's constants and functions, taken from its module (which must define them all).

    An object rather than the module itself so that it pickles and deep-copies with the model
    that holds it (functions are pickled by reference)."""

    NAME: str
    GATES: int
    STATE: tuple[str, ...]
    FUSED: str
    init: Callable
    step: Callable
    step_backward: Callable
    extra_grads: Callable
    layer_forward: Callable
    layer_backward: Callable
    activations: Callable
    fused_biases: Callable

    @classmethod
    def of(cls, module) -> Cell:
        return cls(**{f.name: getattr(module, f.name) for f in fields(cls)})


CELLS: dict[str, Cell] = {c.NAME: c for c in map(Cell.of, (tanh, gru, lstm))}


def get_cell(name: str) -> Cell:
    """The cell registered as ``name``."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}: choose one of {', '.join(CELLS)}") from None


def cell_options(cell: Cell, **options) -> dict:
    """Those of ``options`` that ``cell.init`` takes: each cell takes its own, by name."""
    taken = inspect.signature(cell.init).parameters
    return {k: v for k, v in options.items() if k in taken}
