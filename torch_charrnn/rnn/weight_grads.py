"""A layer's weight gradients from the window's dL/da and dL/du, one product (or one pass in C++)
per window rather than per step: shared by the pure-torch loop (``bptt.py``) and the cells whose C++
kernels form the rest themselves (``cells/*.layer_backward``)."""

from __future__ import annotations

import torch
from torch import Tensor

from torch_charrnn.rnn import native


def input_weight_grads(below: Tensor, dA: Tensor, p: dict, ops, bias: bool = True) -> dict:
    """The gradients of W_xh and b_h from dL/da (T, B, G*H) and the layer's input ``below``
    (without b_h's, where ``bias`` is False and the layer is one above: there it is a pass of its
    own, which a cell that formed it in its loop need not pay again)."""
    T, B, G_H = dA.shape
    dA2 = dA.view(T * B, G_H)
    if below.dtype.is_floating_point:  # a layer above, which read the h below: one product
        if ops is not None:  # in C++, by threads that share out dW_xh's rows
            grads = {"W_xh": ops.input_weight_grad(below, [dA], native.column_parts(below.shape[-1]))}
        else:
            grads = {"W_xh": below.reshape(T * B, -1).t() @ dA2}
        return {**grads, "b_h": dA2.sum(0)} if bias else grads
    if ops is not None:  # the gathered rows and the bias in one pass, by threads sharing the columns
        dW_xh, db_h = ops.input_grads(below, dA, p["W_xh"].shape[0], native.column_parts(G_H))
        return {"W_xh": dW_xh, "b_h": db_h}
    dW_xh = torch.zeros_like(p["W_xh"]).index_add_(0, below.reshape(-1), dA2)  # the gathered rows
    return {"W_xh": dW_xh, "b_h": dA2.sum(0)}


def recurrent_weight_grad(h0: Tensor, hs: Tensor, dU: Tensor, ops) -> Tensor:
    """sum_t h_{t-1}ᵀ du_t: NumPy's one product over [h0; hs[:-1]], here without copying hs; in C++
    by threads that share out dW_hh's rows."""
    T, B, H = hs.shape
    if ops is not None:
        return ops.recurrent_weight_grad(h0, hs, [dU], native.column_parts(H))
    dU2 = dU.view(T * B, -1)
    return torch.addmm(h0.t() @ dU[0], hs[:-1].reshape((T - 1) * B, H).t(), dU2[B:])
