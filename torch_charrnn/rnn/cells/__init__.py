"""The recurrent cells, by name. Adding one is a file here (and its twin in reference_numpy/cells/)
and a line in CELLS: the BPTT loop, the sampler, the monitor and the model take whatever is
registered (docs/design.md, "Adding a cell"). A cell is resolved from its name once (``get_cell``)
and the object is passed down.

A cell module has (``Cell`` below holds them, resolved once), first what every cell must define:
    NAME            its name in CELLS
    GATES           gate blocks side by side in W_xh, W_hh and b_h (tanh 1, GRU 3, LSTM 4)
    STATE           names of its recurrent state, h first: ("h",) or ("h", "c")
    init(...)       the parameters of one layer; its own options are keyword arguments, by name
    step(...)       one time step forward, given the input share a and the previous state
                    (torch: and ``recur``, the product by W_hh of ``torch_charrnn/rnn/products.py``)
    step_backward   that step's derivatives, each beside the operation it differentiates

and then what a cell may leave out (the default in brackets):
    extra_grads     gradients of parameters beyond W_xh, W_hh, b_h (GRU's b_hn), from the window's
                    dL/da and dL/du [no parameters beyond those three]
    input_share, input_share_backward   the window's input shares a (T, B, G*H) from the layer's
                    input, and what they keep for the backward: ``input_share(below, p, product)
                    -> (a, kept)``; from dL/da, dL/d(x W_xh) (for the layer below) and the
                    gradients of the parameters they read: ``input_share_backward(dA, below, kept,
                    p, ops) -> (dP, grads)`` [a = x W_xh + b_h: ``common.input_share``]
    layer_forward, layer_backward   (torch only) the loops of step and step_backward over a window
                    in C++ (``torch_charrnn/rnn/csrc/<name>.cpp``, loaded by ``rnn/native.py``), for
                    speed on a CPU. layer_forward(ops, below, state, p, zones) -> (hs, last state,
                    kernel), from the layer's input as it comes (characters or the h below);
                    ``kernel`` is what layer_backward reads back from the tape. layer_backward(ops,
                    dhs, last, tape, p, zones) -> (dL/da, dL/d(initial state), every parameter
                    gradient of the layer by name), the shape ``bptt.layer_backward`` returns for
                    the pure-torch loop. ``zones``: the layer's zoneout as the loops take it
                    (``native.zone_args``, ``csrc/zoneout.h``), which each passes to its kernels
                    [None: the pure-torch loop, step by step, everywhere]
    activations     (torch only) a step's gates and states by name, for the TensorBoard monitor
                    [nothing beyond the gradient through time]
    FUSED, fused_biases   (torch only) the torch.nn module computing the same cell and its two
                    biases from this layer's, for bptt="fused" and charrnn export's torch file
                    [None: neither is offered]

and its ``step_backward`` may return a fourth item: that step's share of the gradients of
parameters the step reads beyond W_hh (a dict, by name), which the loop adds up over the window
(the layer-normalised cells' gains).

Zoneout is no cell's own: the loop over time applies it to any cell's new state (``bptt.zoned``,
and each C++ loop through ``csrc/zoneout.h``). A model's cell carries its rates (``Cell.zoned``),
by which its state moves in evaluation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, replace

from torch_charrnn.rnn.cells import common, gru, lngru, lnlstm, lstm, tanh


def no_extra_grads(dA, dU, p) -> dict:
    """A cell whose parameters are W_xh, W_hh and b_h alone."""
    return {}


def no_activations(cache) -> dict:
    """A cell that shows the monitor no gates or states of its own."""
    return {}


@dataclass(frozen=True)
class Cell:
    """One cell's constants and functions, taken from its module.

    An object rather than the module itself so that it pickles and deep-copies with the model
    that holds it (functions are pickled by reference)."""

    NAME: str
    GATES: int
    STATE: tuple[str, ...]
    init: Callable
    step: Callable
    step_backward: Callable
    extra_grads: Callable = no_extra_grads
    input_share: Callable = common.input_share
    input_share_backward: Callable = common.input_share_backward
    layer_forward: Callable | None = None
    layer_backward: Callable | None = None
    activations: Callable = no_activations
    FUSED: str | None = None
    fused_biases: Callable | None = None
    zoneout: tuple[float, ...] = ()  # each state's zoneout rate, in STATE's order; () for none

    def zoned(self, **rates: float) -> Cell:
        """This cell with zoneout, a rate by state name (``h=0.1, c=0.05``): each unit of each
        stream keeps its previous value with that probability at each step in training, and moves
        by the expectation in evaluation. Rates of 0 leave the cell as it is."""
        unknown = [name for name, p in rates.items() if p and name not in self.STATE]
        if unknown:
            raise ValueError(f"the {self.NAME} cell carries no {', '.join(unknown)} to zone out")
        zoneout = tuple(float(rates.get(name, 0.0)) for name in self.STATE)
        zoneout = zoneout if any(zoneout) else ()
        return self if zoneout == self.zoneout else replace(self, zoneout=zoneout)

    @classmethod
    def of(cls, module) -> Cell:
        """The cell a module defines: every field it has, the defaults for those it leaves out."""
        missing = [f.name for f in fields(cls) if f.default is MISSING and not hasattr(module, f.name)]
        if missing:
            raise TypeError(f"cell module {module.__name__} lacks {', '.join(missing)} (see {__name__})")
        if hasattr(module, "layer_forward") != hasattr(module, "layer_backward"):
            raise TypeError(f"cell module {module.__name__}: layer_forward and layer_backward come together")
        return cls(**{f.name: getattr(module, f.name) for f in fields(cls) if hasattr(module, f.name)})


CELLS: dict[str, Cell] = {c.NAME: c for c in map(Cell.of, (tanh, gru, lstm, lnlstm, lngru))}


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
