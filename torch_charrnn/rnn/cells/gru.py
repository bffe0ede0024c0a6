"""The GRU cell in PyTorch's formulation (gate order r, z, n); mirrors ``reference_numpy/cells/gru.py``.

    a = x_t W_xh + b_h,  u = h_{t-1} W_hh                  blocks [r | z | n]
    r = sigmoid(a_r + u_r);  z = sigmoid(a_z + u_z);  n = tanh(a_n + r * (u_n + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

References: Cho et al. 2014; torch.nn.GRU's documentation (b_hn inside the reset product).
"""

import torch

from torch_charrnn.rnn import native
from torch_charrnn.rnn.cells.common import input_share, uniform
from torch_charrnn.rnn.weight_grads import input_weight_grads

NAME = "gru"
GATES = 3
STATE = ("h",)


def init(in_size, hidden_size, generator, *, first_layer=True):
    """PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias (b_h is one
    draw where torch adds two)."""
    H, k = hidden_size, hidden_size**-0.5
    return {
        "W_xh": uniform(in_size, GATES * H, bound=k, generator=generator),
        "W_hh": uniform(H, GATES * H, bound=k, generator=generator),
        "b_h": uniform(GATES * H, bound=k, generator=generator),
        "b_hn": uniform(H, bound=k, generator=generator),
    }


def step(a, state, p, recur, out=None):
    """h_t from a (B, 3H) and h_{t-1}; returns the new state and what backward needs.
    ``recur(h)`` is h W_hh (``torch_charrnn/rnn/products.py``)."""
    (h_prev,) = state
    H = h_prev.shape[-1]
    u = recur(h_prev)  # (B, 3H)
    rz = torch.sigmoid(a[:, : 2 * H] + u[:, : 2 * H])  # (B, 2H): r and z in one kernel
    r, z = rz[:, :H], rz[:, H:]
    hn = u[:, 2 * H :] + p["b_hn"]
    n = torch.tanh(torch.addcmul(a[:, 2 * H :], r, hn))  # tanh(a_n + r * hn)
    h = torch.lerp(n, h_prev, z, out=out)  # (1 - z) * n + z * h_prev
    return (h,), (rz, n, hn, h_prev)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh (B, 3H), and what flows into h_{t-1} other than
    through u (z * dh)."""
    (dh,) = dstate
    rz, n, hn, h_prev = cache
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
    du = torch.cat([drz, dhn], dim=-1)  # u_n sits inside the reset product
    return da, du, (dh_prev,)


def extra_grads(dA, dU, p):
    """b_hn is added to u_n: its gradient is the sum of du_n over the window and the streams."""
    H = p["b_hn"].shape[0]
    return {"b_hn": dU[..., 2 * H :].sum(dim=(0, 1))}


def layer_forward(ops, below, state, p, zones):
    """The window's recurrence in C++ (``csrc/gru.cpp``, the loop above without Python): h of
    every step (T, B, H), the last state and what ``layer_backward`` reads, from the layer's input
    (characters or the h below: ``input_share``), its threads sharing out the streams. ``zones``:
    zoneout's, as ``tanh.layer_forward`` takes them."""
    a, _ = input_share(below, p)
    (h0,) = state
    parts = native.row_parts(a.shape[1])
    hs, ns, hns, rzs = ops.gru_forward(a, h0, p["b_hn"], p["W_hh"], zones, parts)
    return hs, (hs[-1],), (ns, hns, rzs)


def layer_backward(ops, dhs, last, tape, p, zones):
    """``step_backward`` over the window in C++, from each h_t's gradient from above (T, B, H) and
    the last state's from after the window: dL/da, the initial state's gradient and the layer's
    parameter gradients. dL/du differs from dL/da only in its n block, so the loop keeps only that
    block (T, B, H), not a second (T, B, 3H), and W_hh's gradient is taken from the two side by side."""
    ns, hns, rzs = tape.kernel
    parts = native.row_parts(dhs.shape[1])
    da, du_n, dh0 = ops.gru_backward(dhs, last[0], tape.h0, tape.hs, ns, hns, rzs, p["W_hh"], zones, parts)
    H = dhs.shape[-1]
    dW_hh = ops.recurrent_weight_grad(tape.h0, tape.hs, [da[..., : 2 * H], du_n], native.column_parts(H))
    grads = {**input_weight_grads(tape.below, da, p, ops), "W_hh": dW_hh, "b_hn": du_n.sum(dim=(0, 1))}
    return da, (dh0,), grads


# torch only: what the monitor shows, and the torch.nn module for bptt="fused"

FUSED = "GRU"


def activations(cache):
    """What the monitor shows of one step (see ``tanh.activations``): the reset and update gates
    and the candidate."""
    rz, n, _, _ = cache
    H = n.shape[-1]
    return {"r": ("sigmoid", rz[:, :H]), "z": ("sigmoid", rz[:, H:]), "n": ("tanh", n)}


def fused_biases(p):
    """``bias_ih`` and ``bias_hh`` of torch.nn.GRU: b_h is their sum outside the reset product,
    b_hn is bias_hh's n block, inside it."""
    return p["b_h"], torch.cat([torch.zeros_like(p["b_h"][: -p["b_hn"].shape[0]]), p["b_hn"]])
