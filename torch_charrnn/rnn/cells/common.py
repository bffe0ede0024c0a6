"""What more than one cell uses."""

import torch
import torch.nn.functional as F

from torch_charrnn.rnn.products import window_product
from torch_charrnn.rnn.weight_grads import input_weight_grads

EPS = 1e-5  # layer normalisation's, added to the variance (nn.LayerNorm's default)


def uniform(*shape, bound: float, generator=None):
    """U(-bound, bound), PyTorch's initialisation of its recurrent modules (bound 1/sqrt(H))."""
    return (torch.rand(*shape, generator=generator) * 2 - 1) * bound


def input_share(below, p, product=window_product):
    """a (T, B, G*H) = x_t W_xh + b_h for a whole window, from the layer's input: for the first
    layer, characters (T, B), whose one-hot rows are gathered; above it, the h of the layer below
    (T, B, H), one ``product`` (``products.window_product``, or ``plain_window_product`` where a
    traced graph must hold it). Nothing is kept for the backward (None)."""
    if below.dtype.is_floating_point:
        return product(below, p["W_xh"], p["b_h"]), None
    return F.embedding(below, p["W_xh"]).add_(p["b_h"]), None


def input_share_backward(dA, below, kept, p, ops):
    """From dL/da (T, B, G*H) of a = x W_xh + b_h: dL/d(x W_xh), which is dL/da itself, and the
    gradients of W_xh and b_h (``ops``: the C++ kernels, or None)."""
    return dA, input_weight_grads(below, dA, p, ops)


def layer_norm(v, g, b=None):
    """LN(v; g, b) = g * (v - mean(v)) / sqrt(var(v) + EPS) + b over v's last dimension (PyTorch's
    kernel), and what its backward needs: v, its mean and 1 / sqrt(var(v) + EPS)."""
    y, mean, rstd = torch.native_layer_norm(v, [v.shape[-1]], g, b, EPS)
    return y, (v, mean, rstd)


def layer_norm_backward(dy, kept, g, b=None):
    """From dL/dLN(v): dL/dv and the gain's and the bias's gradients, summed over every row (None
    without a bias). aten's kernel; NumPy writes it out: with d = dy * g, dL/dv = rstd * (d -
    mean(d) - vhat * mean(d * vhat)), the gain's sum(dy * vhat), the bias's sum(dy)."""
    v, mean, rstd = kept
    mask = [True, True, b is not None]
    return torch.ops.aten.native_layer_norm_backward(dy, v, [v.shape[-1]], mean, rstd, g, b, mask)
