"""The recurrent cells, by name. Adding one is a file here (and its twin in torch_charrnn/rnn/cells/)
and a line in CELLS: the BPTT loop, the sampler and the model take whatever is registered.

A cell module has (the protocol of ``torch_charrnn/rnn/cells/``, less what only torch needs):
    NAME            its name in CELLS
    GATES           gate blocks side by side in W_xh, W_hh and b_h (tanh 1, GRU 3, LSTM 4)
    STATE           names of its recurrent state, h first: ("h",) or ("h", "c")
    init(...)       the parameters of one layer; its own options are keyword arguments, by name
    step(...)       one time step forward, given the input share a and the previous state
    step_backward   that step's derivatives, each beside the operation it differentiates
and may have:
    extra_grads     gradients of parameters beyond W_xh, W_hh, b_h (GRU's b_hn), from the window's
                    dL/da and dL/du [none: a cell whose parameters are those three]
    input_share, input_share_backward   the window's input shares a from the layer's input, and
                    what they keep for the backward; from dL/da, dL/d(x W_xh) and the gradients of
                    the parameters they read [a = x W_xh + b_h, ``bptt.input_share``]
and its ``step_backward`` may return a fourth item: that step's share of the gradients of
parameters the step reads (a dict), which the loop adds up over the window.
"""

import inspect

from reference_numpy.cells import gru, lngru, lnlstm, lstm, tanh

CELLS = {c.NAME: c for c in (tanh, gru, lstm, lnlstm, lngru)}


def get_cell(name: str):
    """The cell module registered as ``name``."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}: choose one of {', '.join(CELLS)}") from None


def extra_grads(cell, dA, dU, p) -> dict:
    """The gradients of ``cell``'s parameters beyond W_xh, W_hh and b_h, where it has any."""
    return cell.extra_grads(dA, dU, p) if hasattr(cell, "extra_grads") else {}


def cell_options(cell, **options) -> dict:
    """Those of ``options`` that ``cell.init`` takes: each cell takes its own, by name."""
    taken = inspect.signature(cell.init).parameters
    return {k: v for k, v in options.items() if k in taken}
