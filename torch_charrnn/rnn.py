"""The character-level tanh RNN in torch: the equations, and nothing else.

This file mirrors ``reference_numpy/rnn.py`` line for line: same names, same order, same
row-vector convention (``h @ W_hh``, as in the tutorial). V = vocabulary size,
H = hidden size, B = streams, T = window.

    h_t      = tanh(W_xh[x_t] + h_{t-1} @ W_hh + b_h)
    logits_t = h_t @ W_hy + b_y
    loss     = mean over the B*T predicted characters of cross_entropy(logits_t, y_t)

References: Karpathy's min-char-rnn, Le et al. 2015 "A Simple Way to Initialize Recurrent
Networks of Rectified Linear Units" (identity W_hh).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")
LN2 = math.log(2.0)


def rnn_forward(inputs: Tensor, h0: Tensor, W_xh, W_hh, b_h, W_hy, b_y) -> tuple[Tensor, Tensor]:
    """Run the recurrence through plain autograd; returns logits (B, T, V) and states (B, T, H)."""
    B, T = inputs.shape
    hs = []
    h = h0
    for t in range(T):
        h = torch.tanh(W_xh[inputs[:, t]] + h @ W_hh + b_h)  # (B, H)
        hs.append(h)
    hs = torch.stack(hs, dim=1)  # (B, T, H)
    logits = hs @ W_hy + b_y  # (B, T, V)
    return logits, hs


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood in nats over every (stream, step) position."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
