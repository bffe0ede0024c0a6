"""The LSTM cell in PyTorch's formulation (gate order i, f, g, o); mirrors
``torch_charrnn/rnn/cells/lstm.py``.

    z = a_t + h_{t-1} W_hh,  a_t = x_t W_xh + b_h          blocks [i | f | g | o]
    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

References: Hochreiter & Schmidhuber 1997; Gers et al. 2000 (forget gate); torch.nn.LSTM's documentation.
"""

import numpy as np

NAME = "lstm"
GATES = 4
STATE = ("h", "c")


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def init(in_size, hidden_size, rng, *, first_layer=True, forget_bias=0.0):
    """PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, plus
    ``forget_bias`` on the forget gate's block of b_h."""
    H, k = hidden_size, hidden_size**-0.5
    b_h = rng.uniform(-k, k, GATES * H)
    b_h[H : 2 * H] += forget_bias
    return {
        "W_xh": rng.uniform(-k, k, (in_size, GATES * H)),
        "W_hh": rng.uniform(-k, k, (H, GATES * H)),
        "b_h": b_h,
    }


def step(a, state, p, out=None):
    """(h_t, c_t) from a (B, 4H) and (h_{t-1}, c_{t-1}); the new state and what backward needs."""
    h_prev, c_prev = state
    H = h_prev.shape[-1]
    z = a + h_prev @ p["W_hh"]  # (B, 4H)
    gates = sigmoid(z)  # i, f and o (its g block is unused: g is a tanh)
    g = np.tanh(z[:, 2 * H : 3 * H])
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    c = f * c_prev + i * g  # f * c_{t-1} + i * g
    tc = np.tanh(c)
    h = np.multiply(o, tc, out=out)
    return (h, c), (gates, g, c_prev, c, tc)


def step_backward(dstate, cache, p, out):
    """Gradients w.r.t. a and u = h_{t-1} W_hh (the same: they are added), and what flows into
    c_{t-1}."""
    dh, dc = dstate
    gates, g, c_prev, _, tc = cache
    H = dh.shape[-1]
    i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
    dz = out  # (B, 4H): dL/d(gates), then in place dL/dz
    di, df, dg, do = np.split(dz, 4, axis=-1)
    np.multiply(dh, tc, out=do)  # backprop into o
    dc = (1.0 - tc * tc) * (dh * o) + dc  # backprop through tanh(c_t) into c_t
    np.multiply(dc, g, out=di)  # backprop into i
    np.multiply(dc, c_prev, out=df)  # backprop into f
    np.multiply(dc, i, out=dg)  # backprop into g
    dc_prev = dc * f  # backprop into c_{t-1}
    dif, gif = dz[:, : 2 * H], gates[:, : 2 * H]
    dif *= gif * (1.0 - gif)  # backprop through sigmoid (i, f)
    dg *= 1.0 - g * g  # backprop through tanh (g)
    do *= o * (1.0 - o)  # backprop through sigmoid (o)
    return dz, dz, (None, dc_prev)
