"""The layer-normalised LSTM (Ba et al. 2016, as haste's LayerNormLSTM); mirrors
``reference_numpy/cells/lnlstm.py``.

    a_t = LN(x_t W_xh; g_x) + b_h           the input share: layer 0's is a row of LN(W_xh; g_x)
    z = a_t + LN(h_{t-1} W_hh; g_h)         blocks [i | f | g | o], each LN over the whole 4H
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(LN(c_t; g_c, b_c))     (c_t carried raw)

LN(v; g, b) = g * (v - mean(v)) / sqrt(var(v) + 1e-5) + b over v's last dimension
(``cells/common.py``). x_t W_xh does not depend on the recurrence, so its normalisation is the
input share's, done for the whole window at once; for layer 0 it depends on the character alone,
so the V rows of W_xh are normalised once a window and gathered.

References: Ba, Kiros & Hinton 2016, "Layer Normalization" (its LSTM); lmnt-com/haste, LayerNormLSTM.
"""

import torch
import torch.nn.functional as F

from torch_charrnn.rnn import native
from torch_charrnn.rnn.cells import lstm
from torch_charrnn.rnn.cells.common import layer_norm, layer_norm_backward
from torch_charrnn.rnn.products import window_product
from torch_charrnn.rnn.weight_grads import input_weight_grads, recurrent_weight_grad

NAME = "lnlstm"
GATES = 4
STATE = ("h", "c")


def init(in_size, hidden_size, generator, *, first_layer=True, forget_bias=0.0):
    """The LSTM's (PyTorch's U(-1/sqrt(H), 1/sqrt(H)), ``forget_bias`` on the forget gate's block of
    b_h), and the normalisations' gains at 1 and c's bias at 0."""
    H = hidden_size
    p = lstm.init(in_size, H, generator, first_layer=first_layer, forget_bias=forget_bias)
    ones = torch.ones(GATES * H)
    return {**p, "g_x": ones, "g_h": ones.clone(), "g_c": torch.ones(H), "b_c": torch.zeros(H)}


def input_share(below, p, product=window_product):
    """a = LN(x_t W_xh; g_x) + b_h for a whole window (T, B, G*H), and what its backward keeps. For
    layer 0, x_t W_xh is the row of W_xh of character x_t: the V rows are normalised once and
    gathered. A layer above multiplies by ``product`` (see ``common.input_share``)."""
    if below.dtype.is_floating_point:  # a layer above: one product, normalised row by row
        return layer_norm(product(below, p["W_xh"]), p["g_x"], p["b_h"])
    rows, kept = layer_norm(p["W_xh"], p["g_x"], p["b_h"])  # (V, G*H): every character's share
    return F.embedding(below, rows), kept


def input_share_backward(dA, below, kept, p, ops):
    """From dL/da (T, B, G*H): dL/d(x_t W_xh) (for the layer below; None for characters) and the
    gradients of W_xh, g_x and b_h. For layer 0 the gradients of the V normalised rows are added up
    first (each character's positions), then taken back through the normalisation once a row."""
    if below.dtype.is_floating_point:
        dP, dg_x, db_h = layer_norm_backward(dA, kept, p["g_x"], p["b_h"])  # backprop through LN
        dW_xh = input_weight_grads(below, dP, p, ops, bias=False)["W_xh"]
        return dP, {"W_xh": dW_xh, "g_x": dg_x, "b_h": db_h}
    drows = input_weight_grads(below, dA, p, ops)["W_xh"]  # backprop into the gathered rows (V, G*H)
    dW_xh, dg_x, db_h = layer_norm_backward(drows, kept, p["g_x"], p["b_h"])  # and through their LN
    return None, {"W_xh": dW_xh, "g_x": dg_x, "b_h": db_h}


def step(a, state, p, recur, out=None):
    """(h_t, c_t) from a (B, 4H) and (h_{t-1}, c_{t-1}); the new state and what backward needs.
    ``recur(h)`` is h W_hh (``torch_charrnn/rnn/products.py``)."""
    h_prev, c_prev = state
    H = h_prev.shape[-1]
    nu, u_kept = layer_norm(recur(h_prev), p["g_h"])  # LN(h_{t-1} W_hh; g_h), (B, 4H)
    z = a + nu
    gates = torch.sigmoid(z)  # i, f and o (its g block is unused: g is a tanh)
    g = torch.tanh(z[:, 2 * H : 3 * H])
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    c = torch.addcmul(f * c_prev, i, g)  # f * c_{t-1} + i * g
    nc, c_kept = layer_norm(c, p["g_c"], p["b_c"])  # LN(c_t; g_c, b_c)
    tc = torch.tanh(nc)
    h = torch.mul(o, tc, out=out)
    return (h, c), (gates, g, c_prev, u_kept, c_kept, tc)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh, what flows into c_{t-1}, and this step's share of
    the gradients of g_h, g_c and b_c."""
    dh, dc = dstate
    gates, g, c_prev, u_kept, c_kept, tc = cache
    H = dh.shape[-1]
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    dz = out  # (B, 4H): dL/d(gates), then in place dL/dz
    di, df, dg, do = dz.chunk(4, dim=-1)
    torch.mul(dh, tc, out=do)  # backprop into o
    dnc = torch.ops.aten.tanh_backward(dh * o, tc)  # backprop through tanh into LN(c_t): (1 - tc^2) * dh * o
    dc_ln, dg_c, db_c = layer_norm_backward(dnc, c_kept, p["g_c"], p["b_c"])
    dc = dc_ln.add_(dc)  # backprop through LN into c_t, plus what flows in from c_{t+1}
    torch.mul(dc, g, out=di)  # backprop into i
    torch.mul(dc, c_prev, out=df)  # backprop into f
    torch.mul(dc, i, out=dg)  # backprop into g
    dc_prev = dc * f  # backprop into c_{t-1}
    dif, gif = dz[:, : 2 * H], gates[:, : 2 * H]
    # backprop through sigmoid (i, f): *= gif * (1 - gif)
    torch.ops.aten.sigmoid_backward.grad_input(dif, gif, grad_input=dif)
    torch.ops.aten.tanh_backward.grad_input(dg, g, grad_input=dg)  # backprop through tanh (g): *= 1 - g^2
    torch.ops.aten.sigmoid_backward.grad_input(do, o, grad_input=do)  # backprop through sigmoid (o)
    du, dg_h, _ = layer_norm_backward(dz, u_kept, p["g_h"])  # backprop through LN into u
    return dz, du, (None, dc_prev), {"g_h": dg_h, "g_c": dg_c, "b_c": db_c}


def layer_forward(ops, below, state, p, zones):
    """The window's recurrence in C++ (``csrc/lnlstm.cpp``, the loop above without Python, its
    threads sharing out the streams), from the layer's input: characters (T, B), whose rows of the
    normalised table LN(W_xh; g_x) + b_h the loop gathers, or the h below (T, B, H), whose shares
    are made first (``input_share``). h of every step (T, B, H), the last state and what
    ``layer_backward`` reads. ``zones``: zoneout's, as ``tanh.layer_forward`` takes them."""
    h0, c0 = state
    if below.dtype.is_floating_point:
        inputs, kept = input_share(below, p)
        table = inputs.new_empty(0)
    else:
        inputs, (table, kept) = below, layer_norm(p["W_xh"], p["g_x"], p["b_h"])
    parts = native.row_parts(h0.shape[0])
    hs, cs, *rest = ops.lnlstm_forward(
        inputs, table, h0, c0, p["W_hh"], p["g_h"], p["g_c"], p["b_c"], zones, parts
    )
    return hs, (hs[-1], cs[-1]), (kept, c0, cs, *rest)


def layer_backward(ops, dhs, last, tape, p, zones):
    """``step_backward`` over the window in C++, from each h_t's gradient from above (T, B, H) and
    the last state's from after the window: dL/d(x W_xh), the initial state's gradient and the
    layer's parameter gradients (the gains' of the loop added up by its threads, the input share's
    through ``input_share_backward``, W_hh's in one product)."""
    kept, c0, cs, gates, uhat, ru, chat, rc, tcs = tape.kernel
    parts = native.row_parts(dhs.shape[1])
    dz, du, dh0, dc0, own = ops.lnlstm_backward(
        dhs, *last, c0, cs, gates, uhat, ru, chat, rc, tcs, p["W_hh"], p["g_h"], p["g_c"], zones, parts
    )
    dP, grads = input_share_backward(dz, tape.below, kept, p, ops)
    H = dhs.shape[-1]
    grads = {**grads, "W_hh": recurrent_weight_grad(tape.h0, tape.hs, du, ops)}
    grads.update(g_h=own[: 4 * H], g_c=own[4 * H : 5 * H], b_c=own[5 * H :])
    return dP, (dh0, dc0), grads


# torch only: what the monitor shows


def activations(cache):
    """What the monitor shows of one step (see ``tanh.activations``): the four gates, the cell
    state c_t and its normalised form's tanh, the unit h_t is o times."""
    gates, g, _, _, (c, _, _), tc = cache
    H = g.shape[-1]
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    return {
        "i": ("sigmoid", i),
        "f": ("sigmoid", f),
        "g": ("tanh", g),
        "o": ("sigmoid", o),
        "c": ("state", c),
        "tanh_ln_c": ("tanh", tc),
    }
