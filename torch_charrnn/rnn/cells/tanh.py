"""The vanilla tanh cell (Elman), as in min-char-rnn; mirrors ``reference_numpy/cells/tanh.py``.

h_t = tanh(a_t + h_{t-1} W_hh)      a_t = x_t W_xh + b_h
"""

import torch

from torch_charrnn.rnn import native
from torch_charrnn.rnn.cells.common import input_share
from torch_charrnn.rnn.weight_grads import input_weight_grads, recurrent_weight_grad

NAME = "tanh"
GATES = 1
STATE = ("h",)


def init(in_size, hidden_size, generator, *, first_layer=True, whh_scale=0.01, init_std=0.01):
    """W_xh ~ N(0, init_std^2) for the layer that reads characters (a layer above reads h, so
    N(0, 1/in) passes its signal on), W_hh = whh_scale * I (the identity-initialized recurrence,
    Le et al. 2015), zero bias."""
    H = hidden_size
    std = init_std if first_layer else in_size**-0.5
    return {
        "W_xh": torch.randn(in_size, GATES * H, generator=generator) * std,
        "W_hh": torch.eye(H) * whh_scale,
        "b_h": torch.zeros(GATES * H),
    }


def step(a, state, p, recur, out=None):
    """h_t from a (B, H) and h_{t-1}; returns the new state and what backward needs.
    ``recur(h, a)`` is a + h W_hh (``torch_charrnn/rnn/products.py``)."""
    (h_prev,) = state
    h = torch.tanh(recur(h_prev, a), out=out)  # (B, H)
    return (h,), (h,)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh (here the same), and what flows into the previous
    state other than through u (nothing)."""
    (dh,) = dstate
    (h,) = cache
    # backprop through tanh: (1 - h^2) * dh, one aten kernel writing into ``out``
    da = torch.ops.aten.tanh_backward.grad_input(dh, h, grad_input=out)
    return da, da, (None,)


def layer_forward(ops, below, state, p, zones):
    """The window's recurrence in C++ (``csrc/tanh.cpp``, the loop above without Python, its
    threads sharing out the streams): h of every step (T, B, H), the last state and what
    ``layer_backward`` reads, from the layer's input (characters or the h below: ``input_share``).
    ``zones``: the layer's zoneout as ``native.zone_args`` gives it (``csrc/zoneout.h``)."""
    a, _ = input_share(below, p)
    hs, fresh = ops.tanh_forward(a, state[0], p["W_hh"], zones, native.row_parts(a.shape[1]))
    return hs, (hs[-1],), (fresh,)  # backward reads the cell's own h of every step


def layer_backward(ops, dhs, last, tape, p, zones):
    """``step_backward`` over the window in C++, from each h_t's gradient from above (T, B, H) and
    the last state's from after the window: dL/da, the initial state's gradient and the layer's
    parameter gradients, each a pass over dL/da (which is also dL/du) in C++."""
    (fresh,) = tape.kernel
    da, dh0 = ops.tanh_backward(dhs, last[0], fresh, p["W_hh"], zones, native.row_parts(dhs.shape[1]))
    grads = {
        **input_weight_grads(tape.below, da, p, ops),
        "W_hh": recurrent_weight_grad(tape.h0, tape.hs, da, ops),
    }
    return da, (dh0,), grads


# torch only: what the monitor shows, and the torch.nn module for bptt="fused"

FUSED = "RNN"


def activations(cache):
    """What the monitor shows of one step, by name, with the nonlinearity that produced it
    ("sigmoid" or "tanh": saturation is |2σ-1| or |tanh| above 0.99) or "state" (its norm is shown)."""
    (h,) = cache
    return {"h": ("tanh", h)}


def fused_biases(p):
    """``bias_ih`` and ``bias_hh`` of the torch.nn module: b_h is their sum."""
    return p["b_h"], torch.zeros_like(p["b_h"])
