"""The vanilla tanh cell (Elman), as in min-char-rnn; mirrors ``torch_charrnn/rnn/cells/tanh.py``.

h_t = tanh(a_t + h_{t-1} W_hh)      a_t = x_t W_xh + b_h
"""

import numpy as np

NAME = "tanh"
GATES = 1
STATE = ("h",)


def init(in_size, hidden_size, rng, *, first_layer=True, whh_scale=0.01, init_std=0.01):
    """W_xh ~ N(0, init_std^2) for the layer that reads characters (a layer above reads h, so
    N(0, 1/in) passes its signal on), W_hh = whh_scale * I (the identity-initialized recurrence,
    Le et al. 2015), zero bias."""
    H = hidden_size
    std = init_std if first_layer else in_size**-0.5
    return {
        "W_xh": rng.standard_normal((in_size, GATES * H)) * std,
        "W_hh": np.eye(H) * whh_scale,
        "b_h": np.zeros(GATES * H),
    }


def step(a, state, p, out=None):
    """h_t from a (B, H) and h_{t-1}; returns the new state and what backward needs."""
    (h_prev,) = state
    h = np.tanh(a + h_prev @ p["W_hh"], out=out)  # (B, H)
    return (h,), (h,)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh (here the same), and what flows into the previous
    state other than through u (nothing)."""
    (dh,) = dstate
    (h,) = cache
    da = np.multiply(1.0 - h * h, dh, out=out)  # backprop through tanh: (1 - h^2) * dh
    return da, da, (None,)
