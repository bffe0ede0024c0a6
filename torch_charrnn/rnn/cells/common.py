"""What more than one cell uses."""

import torch
import torch.nn.functional as F

from torch_charrnn.rnn.products import window_product


def uniform(*shape, bound: float, generator=None):
    """U(-bound, bound), PyTorch's initialisation of its recurrent modules (bound 1/sqrt(H))."""
    return (torch.rand(*shape, generator=generator) * 2 - 1) * bound


def input_share(below, p):
    """a (T, B, G*H) = x_t W_xh + b_h for a whole window, from the layer's input: for the first
    layer, characters (T, B), whose one-hot rows are gathered; above it, the h of the layer below
    (T, B, H), one matmul."""
    if below.dtype.is_floating_point:
        return window_product(below, p["W_xh"], p["b_h"])
    return F.embedding(below, p["W_xh"]).add_(p["b_h"])
