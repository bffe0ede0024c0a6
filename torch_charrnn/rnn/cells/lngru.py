"""The layer-normalised GRU (Ba et al. 2016, as haste's LayerNormGRU); mirrors
``reference_numpy/cells/lngru.py``.

    a = LN(x_t W_xh; g_x) + b_h,  u = LN(h_{t-1} W_hh; g_h)      blocks [r | z | n], LN over all 3H
    r = sigmoid(a_r + u_r);  z = sigmoid(a_z + u_z);  n = tanh(a_n + r * (u_n + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

The input share a is ``lnlstm``'s, for three gate blocks: normalised for the whole window at once,
layer 0's from the V rows of W_xh normalised once.

References: Ba, Kiros & Hinton 2016, "Layer Normalization"; lmnt-com/haste, LayerNormGRU.
"""

import torch

from torch_charrnn.rnn import native
from torch_charrnn.rnn.cells import gru, lnlstm
from torch_charrnn.rnn.cells.common import layer_norm, layer_norm_backward
from torch_charrnn.rnn.weight_grads import recurrent_weight_grad

NAME = "lngru"
GATES = 3
STATE = ("h",)

input_share = lnlstm.input_share  # LN(x_t W_xh; g_x) + b_h, whatever the gate count
input_share_backward = lnlstm.input_share_backward


def init(in_size, hidden_size, generator, *, first_layer=True):
    """The GRU's (PyTorch's U(-1/sqrt(H), 1/sqrt(H))), and the normalisations' gains at 1."""
    H = hidden_size
    p = gru.init(in_size, H, generator, first_layer=first_layer)
    return {**p, "g_x": torch.ones(GATES * H), "g_h": torch.ones(GATES * H)}


def step(a, state, p, recur, out=None):
    """h_t from a (B, 3H) and h_{t-1}; returns the new state and what backward needs.
    ``recur(h)`` is h W_hh (``torch_charrnn/rnn/products.py``)."""
    (h_prev,) = state
    H = h_prev.shape[-1]
    u, u_kept = layer_norm(recur(h_prev), p["g_h"])  # LN(h_{t-1} W_hh; g_h), (B, 3H)
    rz = torch.sigmoid(a[:, : 2 * H] + u[:, : 2 * H])  # (B, 2H): r and z in one kernel
    r, z = rz[:, :H], rz[:, H:]
    hn = u[:, 2 * H :] + p["b_hn"]
    n = torch.tanh(torch.addcmul(a[:, 2 * H :], r, hn))  # tanh(a_n + r * hn)
    h = torch.lerp(n, h_prev, z, out=out)  # (1 - z) * n + z * h_prev
    return (h,), (rz, n, hn, h_prev, u_kept)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh (B, 3H), what flows into h_{t-1} other than through
    u (z * dh), and this step's share of the gradients of g_h and b_hn."""
    (dh,) = dstate
    rz, n, hn, h_prev, u_kept = cache
    H = n.shape[-1]
    r, z = rz[:, :H], rz[:, H:]
    da = out  # (B, 3H), filled block by block: [dr | dz | dn] and then in place their raw forms
    dr, dz, dn_raw = da[:, :H], da[:, H : 2 * H], da[:, 2 * H :]
    torch.mul(dh, 1.0 - z, out=dn_raw)  # backprop into n
    torch.mul(dh, h_prev - n, out=dz)  # backprop into z
    dh_prev = dh * z  # the skip path into h_{t-1}
    torch.ops.aten.tanh_backward.grad_input(dn_raw, n, grad_input=dn_raw)  # backprop through tanh: *= 1 - n^2
    torch.mul(dn_raw, hn, out=dr)  # backprop into r
    dhn = dn_raw * r  # backprop into u_n + b_hn
    drz = da[:, : 2 * H]
    # backprop through sigmoid: *= rz * (1 - rz)
    torch.ops.aten.sigmoid_backward.grad_input(drz, rz, grad_input=drz)
    dln = torch.cat([drz, dhn], dim=-1)  # dL/dLN(h_{t-1} W_hh): u_n sits inside the reset product
    du, dg_h, _ = layer_norm_backward(dln, u_kept, p["g_h"])  # backprop through LN into u
    return da, du, (dh_prev,), {"g_h": dg_h, "b_hn": dhn.sum(0)}


def layer_forward(ops, below, state, p, zones):
    """The window's recurrence in C++ (``csrc/lngru.cpp``, the loop above without Python, its
    threads sharing out the streams), from the layer's input (as ``lnlstm.layer_forward``): h of
    every step (T, B, H), the last state and what ``layer_backward`` reads. ``zones``: zoneout's,
    as ``tanh.layer_forward`` takes them."""
    (h0,) = state
    if below.dtype.is_floating_point:
        inputs, kept = input_share(below, p)
        table = inputs.new_empty(0)
    else:
        inputs, (table, kept) = below, layer_norm(p["W_xh"], p["g_x"], p["b_h"])
    parts = native.row_parts(h0.shape[0])
    hs, *rest = ops.lngru_forward(inputs, table, h0, p["W_hh"], p["g_h"], p["b_hn"], zones, parts)
    return hs, (hs[-1],), (kept, *rest)


def layer_backward(ops, dhs, last, tape, p, zones):
    """``step_backward`` over the window in C++, from each h_t's gradient from above (T, B, H) and
    the last state's from after the window: dL/d(x W_xh), the initial state's gradient and the
    layer's parameter gradients (as ``lnlstm.layer_backward``)."""
    kept, ns, hns, rzs, uhat, ru = tape.kernel
    parts = native.row_parts(dhs.shape[1])
    da, du, dh0, own = ops.lngru_backward(
        dhs, last[0], tape.h0, tape.hs, ns, hns, rzs, uhat, ru, p["W_hh"], p["g_h"], zones, parts
    )
    dP, grads = input_share_backward(da, tape.below, kept, p, ops)
    H = dhs.shape[-1]
    grads = {**grads, "W_hh": recurrent_weight_grad(tape.h0, tape.hs, du, ops)}
    grads.update(g_h=own[: 3 * H], b_hn=own[3 * H :])
    return dP, (dh0,), grads


# torch only: what the monitor shows


def activations(cache):
    """What the monitor shows of one step (see ``tanh.activations``): the reset and update gates
    and the candidate."""
    rz, n, _, _, _ = cache
    H = n.shape[-1]
    return {"r": ("sigmoid", rz[:, :H]), "z": ("sigmoid", rz[:, H:]), "n": ("tanh", n)}
