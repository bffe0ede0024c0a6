"""How surprised a model is by a text: the negative log-likelihood of every symbol given all the
symbols before it, the state carried from the first symbol to the last, as one stream."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_charrnn.rnn.bptt import run_layers
from torch_charrnn.rnn.cells import Cell


@torch.inference_mode()  # no autograd bookkeeping at all: at batch 1 each step is a few small kernels
def surprisal(weights: dict, cell: Cell, ids: Tensor, chunk: int = 256) -> Tensor:
    """Nats of every symbol after the first (N - 1,) of ``ids`` (N,), each predicted from all the
    symbols before it: the state starts at zero and is carried through the whole text.

    The recurrence runs one symbol at a time, as it must; the output layer and the softmax run
    once per ``chunk`` symbols, so memory stays at a chunk's logits whatever the text's length. A
    chunk's steps stay in memory until its end: 256 keeps them in the CPU's cache (2,048 ran the
    gated cells 10 to 15% slower, measured with benchmarks/bench_score.py).
    """
    layers, W_hy, b_y = weights["layers"], weights["W_hy"], weights["b_y"]
    L, H = len(layers), W_hy.shape[0]
    state = tuple(W_hy.new_zeros(L, 1, H) for _ in cell.STATE)
    inputs, targets = ids[:-1], ids[1:]
    out = W_hy.new_empty(len(targets))
    for start in range(0, len(targets), chunk):
        x, y = inputs[start : start + chunk], targets[start : start + chunk]
        top, state, _ = run_layers(x[None], state, layers, cell)  # (n, 1, H)
        logits = torch.addmm(b_y, top[:, 0], W_hy)  # (n, V)
        out[start : start + len(y)] = F.cross_entropy(logits, y, reduction="none")
    return out
