"""Each cell's elementwise step, forward and backward, compiled: inductor fuses the operations
eager mode launches one kernel each (a handful a step each way) into a few kernels (Triton on a
GPU, C++ on a CPU). Used inside the CUDA graphs of ``training/graphs.py``, where nothing of
Python runs at replay; eagerly, a compiled call costs more Python than the launches it saves.

The cells' own ``step`` and ``step_backward`` are what is compiled, unchanged: traced as they are
(``make_fx`` on fake tensors), their writes into column blocks of the buffers they are handed made
functional (``functionalize``: dynamo cannot compile a write through a strided ``out=``), and the
trace handed to ``torch.compile``, once per shape, dtype and device. Two differences: the
recurrent product is made from the layer's W_hh, an input of the trace, where the eager loop
prepares it once a window (on a GPU both are the same ``addmm``); and a call whose output buffer is
one it reads (the tanh cell's h_t over a_t, dL/da over dL/dh) runs the eager step.

Optional at run time: ``cannot_compile`` says why where inductor cannot compile for a device (no
Triton on a GPU, no C++ compiler on a CPU), and training then replays the eager kernels.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil

import torch
from torch import Tensor

from torch_charrnn.rnn.cells import Cell
from torch_charrnn.rnn.products import plain_product


@functools.cache
def cannot_compile(device_type: str) -> str | None:
    """Why inductor cannot compile the steps for ``device_type`` here, as a line for the user; None
    where it can."""
    why = None
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            why = "Triton is not installed (torch's CUDA builds bring it)"
    elif device_type == "cpu":
        why = None if shutil.which("g++") or shutil.which("c++") else "there is no C++ compiler on the PATH"
    else:
        why = f"inductor does not compile for {device_type}"
    return None if why is None else f"`compile_steps` is on but {why}: the graphs replay the eager kernels"


class CompiledSteps:
    """``step`` and ``step_backward`` with the cell's signatures, each a compiled trace of the
    cell's own, made at the first call of each shape."""

    def __init__(self, cell: Cell):
        self.cell = cell
        self.compiled: dict[tuple, object] = {}

    def _get(self, name: str, fn, args: tuple):
        key = (name, signature(args))
        compiled = self.compiled.get(key)
        if compiled is None:
            from torch.func import functionalize
            from torch.fx.experimental.proxy_tensor import make_fx

            traced = make_fx(functionalize(fn, remove="mutations_and_views"), tracing_mode="fake")(*args)
            compiled = self.compiled[key] = torch.compile(traced, fullgraph=True, dynamic=False)
        return compiled

    def step(self, a, state, p, recur, out=None):
        if shares_memory(out, a):  # h_t written over the a_t it reads (one gate block): eager
            return self.cell.step(a, state, p, recur, out=out)

        def step(a, state, p, out):
            return self.cell.step(a, state, p, plain_product(p["W_hh"]), out=out)

        return self._get("step", step, (a, state, p, out))(a, state, p, out)

    def step_backward(self, dstate, cache, p, out):
        if shares_memory(out, dstate):  # dL/da written over the dL/dh it reads: eager
            return self.cell.step_backward(dstate, cache, p, out)
        args = (dstate, cache, p, out)
        return self._get("step_backward", self.cell.step_backward, args)(*args)


def shares_memory(out: Tensor | None, x) -> bool:
    """Whether ``out`` and a tensor in ``x`` (nested tuples) share storage. A compiled trace takes
    its inputs as distinct: where the eager step writes over what it reads, the eager step runs."""
    if out is None or x is None:
        return False
    if isinstance(x, Tensor):
        return x.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()
    return any(shares_memory(out, v) for v in x)


def signature(x) -> tuple | str:
    """What a trace is specific to, of nested tuples, lists and dicts of tensors: every shape,
    dtype and device, and where each None is."""
    if isinstance(x, Tensor):
        return (tuple(x.shape), x.dtype, x.device)
    if isinstance(x, dict):
        return tuple((k, signature(v)) for k, v in x.items())
    if isinstance(x, (tuple, list)):
        return tuple(signature(v) for v in x)
    return repr(x)


def compiled_cell(cell: Cell) -> Cell:
    """``cell`` with its step and step_backward compiled (its C++ loops left out: a compiled cell
    runs the pure-torch loop, whose steps these are)."""
    steps = CompiledSteps(cell)
    return dataclasses.replace(
        cell, step=steps.step, step_backward=steps.step_backward, layer_forward=None, layer_backward=None
    )
