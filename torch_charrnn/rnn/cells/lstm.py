"""The LSTM cell in PyTorch's formulation (gate order i, f, g, o); mirrors
``reference_numpy/cells/lstm.py``.

    z = a_t + h_{t-1} W_hh,  a_t = x_t W_xh + b_h          blocks [i | f | g | o]
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

References: Hochreiter & Schmidhuber 1997; Gers et al. 2000 (forget gate); torch.nn.LSTM's documentation.
"""

import torch

from torch_charrnn.rnn import native
from torch_charrnn.rnn.cells.common import input_share, uniform
from torch_charrnn.rnn.weight_grads import input_weight_grads, recurrent_weight_grad

NAME = "lstm"
GATES = 4
STATE = ("h", "c")


def init(in_size, hidden_size, generator, *, first_layer=True, forget_bias=0.0):
    """PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, plus
    ``forget_bias`` on the forget gate's block of b_h."""
    H, k = hidden_size, hidden_size**-0.5
    b_h = uniform(GATES * H, bound=k, generator=generator)
    b_h[H : 2 * H] += forget_bias
    return {
        "W_xh": uniform(in_size, GATES * H, bound=k, generator=generator),
        "W_hh": uniform(H, GATES * H, bound=k, generator=generator),
        "b_h": b_h,
    }


def step(a, state, p, recur, out=None):
    """(h_t, c_t) from a (B, 4H) and (h_{t-1}, c_{t-1}); the new state and what backward needs.
    ``recur(h, a)`` is a + h W_hh (``torch_charrnn/rnn/products.py``)."""
    h_prev, c_prev = state
    H = h_prev.shape[-1]
    z = recur(h_prev, a)  # (B, 4H)
    gates = torch.sigmoid(z)  # i, f and o (its g block is unused: g is a tanh)
    g = torch.tanh(z[:, 2 * H : 3 * H])
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    c = torch.addcmul(f * c_prev, i, g)  # f * c_{t-1} + i * g
    tc = torch.tanh(c)
    h = torch.mul(o, tc, out=out)
    return (h, c), (gates, g, c_prev, c, tc)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh (the same: they are added), and what flows into
    c_{t-1}."""
    dh, dc = dstate
    gates, g, c_prev, _, tc = cache
    H = dh.shape[-1]
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    dz = out  # (B, 4H): dL/d(gates), then in place dL/dz
    di, df, dg, do = dz.chunk(4, dim=-1)
    torch.mul(dh, tc, out=do)  # backprop into o
    dc = torch.ops.aten.tanh_backward(dh * o, tc).add_(dc)  # backprop through tanh(c_t): (1 - tc^2) * dh * o
    torch.mul(dc, g, out=di)  # backprop into i
    torch.mul(dc, c_prev, out=df)  # backprop into f
    torch.mul(dc, i, out=dg)  # backprop into g
    dc_prev = dc * f  # backprop into c_{t-1}
    dif, gif = dz[:, : 2 * H], gates[:, : 2 * H]
    # backprop through sigmoid (i, f): *= gif * (1 - gif)
    torch.ops.aten.sigmoid_backward.grad_input(dif, gif, grad_input=dif)
    torch.ops.aten.tanh_backward.grad_input(dg, g, grad_input=dg)  # backprop through tanh (g): *= 1 - g^2
    torch.ops.aten.sigmoid_backward.grad_input(do, o, grad_input=do)  # backprop through sigmoid (o)
    return dz, dz, (None, dc_prev)


def layer_forward(ops, below, state, p, zones):
    """The window's recurrence in C++ (``csrc/lstm.cpp``, the loop above without Python, its
    threads sharing out the streams), from the layer's input: characters (T, B), whose rows of W_xh
    the loop gathers step by step, or the h below (T, B, H), one product first (``input_share``).
    h of every step (T, B, H), the last state and what ``layer_backward`` reads. ``zones``:
    zoneout's, as ``tanh.layer_forward`` takes them."""
    h0, c0 = state
    inputs = input_share(below, p)[0] if below.dtype.is_floating_point else below
    parts = native.row_parts(h0.shape[0])
    hs, cs, tcs, gates = ops.lstm_forward(inputs, p["W_xh"], p["b_h"], h0, c0, p["W_hh"], zones, parts)
    return hs, (hs[-1], cs[-1]), (c0, cs, tcs, gates)


def layer_backward(ops, dhs, last, tape, p, zones):
    """``step_backward`` over the window in C++, from each h_t's gradient from above (T, B, H) and
    the last state's from after the window: dL/da, the initial state's gradient and the layer's
    parameter gradients: b_h's the loop adds up step by step, and, for the first layer, W_xh's (its
    gathered rows) with it; a layer above's W_xh and W_hh in one product each."""
    c0, cs, tcs, gates = tape.kernel
    parts = native.row_parts(dhs.shape[1])
    dz, dh0, dc0, db_h, dW_xh = ops.lstm_backward(
        dhs, *last, c0, cs, tcs, gates, p["W_hh"], tape.below, p["W_xh"], zones, parts
    )
    if tape.below.dtype.is_floating_point:  # a layer above, which read the h below: one product
        dW_xh = input_weight_grads(tape.below, dz, p, ops, bias=False)["W_xh"]
    dW_hh = recurrent_weight_grad(tape.h0, tape.hs, dz, ops)
    return dz, (dh0, dc0), {"W_xh": dW_xh, "b_h": db_h, "W_hh": dW_hh}


# torch only: what the monitor shows, and the torch.nn module for bptt="fused"

FUSED = "LSTM"


def activations(cache):
    """What the monitor shows of one step (see ``tanh.activations``): the four gates and the cell
    state c_t (the memory the forget gate keeps)."""
    gates, g, _, c, _ = cache
    H = g.shape[-1]
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    return {
        "i": ("sigmoid", i),
        "f": ("sigmoid", f),
        "g": ("tanh", g),
        "o": ("sigmoid", o),
        "c": ("state", c),
    }


def fused_biases(p):
    """``bias_ih`` and ``bias_hh`` of the torch.nn module: b_h is their sum."""
    return p["b_h"], torch.zeros_like(p["b_h"])
