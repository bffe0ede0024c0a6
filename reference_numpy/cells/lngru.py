"""The layer-normalised GRU (Ba et al. 2016, as haste's LayerNormGRU); mirrors
``torch_charrnn/rnn/cells/lngru.py``.

    a = LN(x_t W_xh; g_x) + b_h,  u = LN(h_{t-1} W_hh; g_h)      blocks [r | z | n], LN over all 3H
    r = sigmoid(a_r + u_r);  z = sigmoid(a_z + u_z);  n = tanh(a_n + r * (u_n + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

References: Ba, Kiros & Hinton 2016, "Layer Normalization"; lmnt-com/haste, LayerNormGRU.
"""

import numpy as np

from reference_numpy.cells import gru, lnlstm
from reference_numpy.cells.layernorm import layer_norm, layer_norm_backward

NAME = "lngru"
GATES = 3
STATE = ("h",)

sigmoid = gru.sigmoid
input_share = lnlstm.input_share  # LN(x_t W_xh; g_x) + b_h, whatever the gate count
input_share_backward = lnlstm.input_share_backward


def init(in_size, hidden_size, rng, *, first_layer=True):
    """The GRU's (PyTorch's U(-1/sqrt(H), 1/sqrt(H))), and the normalisations' gains at 1."""
    H = hidden_size
    p = gru.init(in_size, H, rng, first_layer=first_layer)
    return {**p, "g_x": np.ones(GATES * H), "g_h": np.ones(GATES * H)}


def step(a, state, p, out=None):
    """h_t from a (B, 3H) and h_{t-1}; returns the new state and what backward needs."""
    (h_prev,) = state
    H = h_prev.shape[-1]
    u, u_kept = layer_norm(h_prev @ p["W_hh"], p["g_h"])  # (B, 3H)
    rz = sigmoid(a[:, : 2 * H] + u[:, : 2 * H])  # (B, 2H): r and z in one kernel
    r, z = rz[:, :H], rz[:, H:]
    hn = u[:, 2 * H :] + p["b_hn"]
    n = np.tanh(a[:, 2 * H :] + r * hn)  # tanh(a_n + r * hn)
    h = np.add(n, z * (h_prev - n), out=out)  # (1 - z) * n + z * h_prev
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
    np.multiply(dh, 1.0 - z, out=dn_raw)  # backprop into n
    np.multiply(dh, h_prev - n, out=dz)  # backprop into z
    dh_prev = dh * z  # the skip path into h_{t-1}
    dn_raw *= 1.0 - n * n  # backprop through tanh
    np.multiply(dn_raw, hn, out=dr)  # backprop into r
    dhn = dn_raw * r  # backprop into u_n + b_hn
    drz = da[:, : 2 * H]
    drz *= rz * (1.0 - rz)  # backprop through sigmoid
    dln = np.concatenate([drz, dhn], axis=-1)  # dL/dLN(h_{t-1} W_hh): u_n sits inside the reset product
    du = layer_norm_backward(dln, u_kept, p["g_h"])  # backprop through LN into u
    own = {"g_h": (dln * u_kept[0]).sum(axis=0), "b_hn": dhn.sum(axis=0)}
    return da, du, (dh_prev,), own
