"""The layer-normalised LSTM (Ba et al. 2016, as haste's LayerNormLSTM); mirrors
``torch_charrnn/rnn/cells/lnlstm.py``.

    a_t = LN(x_t W_xh; g_x) + b_h           the input share: layer 0's is a row of LN(W_xh; g_x)
    z = a_t + LN(h_{t-1} W_hh; g_h)         blocks [i | f | g | o], each LN over the whole 4H
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(LN(c_t; g_c, b_c))     (c_t carried raw)

References: Ba, Kiros & Hinton 2016, "Layer Normalization" (section 3.1 and its LSTM appendix);
lmnt-com/haste, LayerNormLSTM.
"""

import numpy as np

from reference_numpy.cells import lstm
from reference_numpy.cells.layernorm import layer_norm, layer_norm_backward

NAME = "lnlstm"
GATES = 4
STATE = ("h", "c")

sigmoid = lstm.sigmoid


def init(in_size, hidden_size, rng, *, first_layer=True, forget_bias=0.0):
    """The LSTM's (PyTorch's U(-1/sqrt(H), 1/sqrt(H)), ``forget_bias`` on the forget gate's block of
    b_h), and the normalisations' gains at 1 and c's bias at 0."""
    H = hidden_size
    p = lstm.init(in_size, H, rng, first_layer=first_layer, forget_bias=forget_bias)
    return {**p, "g_x": np.ones(GATES * H), "g_h": np.ones(GATES * H), "g_c": np.ones(H), "b_c": np.zeros(H)}


def input_share(below, p):
    """a = LN(x_t W_xh; g_x) + b_h for a whole window (T, B, 4H), and what its backward keeps. For
    layer 0, x_t W_xh is the row of W_xh of character x_t: the V rows are normalised once and
    gathered."""
    if below.dtype.kind == "f":  # a layer above: one product, normalised row by row
        y, kept = layer_norm(below @ p["W_xh"], p["g_x"], p["b_h"])
        return y, kept
    rows, kept = layer_norm(p["W_xh"], p["g_x"], p["b_h"])  # (V, 4H): every character's share
    return rows[below], kept


def input_share_backward(dA, below, kept, p):
    """From dL/da (T, B, 4H): dL/d(x_t W_xh) (for the layer below; None for characters) and the
    gradients of W_xh, g_x and b_h. For layer 0 the gradients of the V normalised rows are added
    up first (each character's positions), then taken back through the normalisation once a row."""
    G_H = dA.shape[-1]
    dA2 = dA.reshape(-1, G_H)
    vhat, _ = kept
    if below.dtype.kind == "f":
        dP = layer_norm_backward(dA, kept, p["g_x"])  # backprop through LN into x_t W_xh
        below2, vhat2 = below.reshape(dA2.shape[0], -1), vhat.reshape(-1, G_H)
        grads = {"W_xh": below2.T @ dP.reshape(-1, G_H), "g_x": (dA2 * vhat2).sum(axis=0)}
        return dP, {**grads, "b_h": dA2.sum(axis=0)}
    drows = np.zeros_like(p["W_xh"])
    np.add.at(drows, below.reshape(-1), dA2)  # backprop into the gathered rows
    dW_xh = layer_norm_backward(drows, kept, p["g_x"])  # and through their LN
    return None, {"W_xh": dW_xh, "g_x": (drows * vhat).sum(axis=0), "b_h": dA2.sum(axis=0)}


def step(a, state, p, out=None):
    """(h_t, c_t) from a (B, 4H) and (h_{t-1}, c_{t-1}); the new state and what backward needs."""
    h_prev, c_prev = state
    H = h_prev.shape[-1]
    nu, u_kept = layer_norm(h_prev @ p["W_hh"], p["g_h"])  # LN(h_{t-1} W_hh; g_h), (B, 4H)
    z = a + nu
    gates = sigmoid(z)  # i, f and o (its g block is unused: g is a tanh)
    g = np.tanh(z[:, 2 * H : 3 * H])
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    c = f * c_prev + i * g  # f * c_{t-1} + i * g
    nc, c_kept = layer_norm(c, p["g_c"], p["b_c"])  # LN(c_t; g_c, b_c)
    tc = np.tanh(nc)
    h = np.multiply(o, tc, out=out)
    return (h, c), (gates, g, c_prev, u_kept, c_kept, tc)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh, what flows into c_{t-1}, and this step's share of
    the gradients of g_h, g_c and b_c."""
    dh, dc = dstate
    gates, g, c_prev, u_kept, c_kept, tc = cache
    H = dh.shape[-1]
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    dz = out  # (B, 4H): dL/d(gates), then in place dL/dz
    di, df, dg, do = np.split(dz, 4, axis=-1)
    np.multiply(dh, tc, out=do)  # backprop into o
    dnc = (1.0 - tc * tc) * (dh * o)  # backprop through tanh into LN(c_t)
    dc = layer_norm_backward(dnc, c_kept, p["g_c"]) + dc  # backprop through LN into c_t
    np.multiply(dc, g, out=di)  # backprop into i
    np.multiply(dc, c_prev, out=df)  # backprop into f
    np.multiply(dc, i, out=dg)  # backprop into g
    dc_prev = dc * f  # backprop into c_{t-1}
    dif, gif = dz[:, : 2 * H], gates[:, : 2 * H]
    dif *= gif * (1.0 - gif)  # backprop through sigmoid (i, f)
    dg *= 1.0 - g * g  # backprop through tanh (g)
    do *= o * (1.0 - o)  # backprop through sigmoid (o)
    du = layer_norm_backward(dz, u_kept, p["g_h"])  # backprop through LN into u
    own = {"g_h": (dz * u_kept[0]).sum(axis=0), "g_c": (dnc * c_kept[0]).sum(axis=0), "b_c": dnc.sum(axis=0)}
    return dz, du, (None, dc_prev), own
