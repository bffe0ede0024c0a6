"""The GRU cell in PyTorch's formulation (gate order r, z, n); mirrors ``torch_charrnn/rnn/cells/gru.py``.

    a = x_t W_xh + b_h,  u = h_{t-1} W_hh                  blocks [r | z | n]
    r = sigmoid(a_r + u_r);  z = sigmoid(a_z + u_z);  n = tanh(a_n + r * (u_n + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

References: Cho et al. 2014; torch.nn.GRU's documentation (b_hn inside the reset product).
"""

import numpy as np

NAME = "gru"
GATES = 3
STATE = ("h",)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def init(in_size, hidden_size, rng, *, first_layer=True):
    """PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias (b_h is one
    draw where torch adds two)."""
    H, k = hidden_size, hidden_size**-0.5
    return {
        "W_xh": rng.uniform(-k, k, (in_size, GATES * H)),
        "W_hh": rng.uniform(-k, k, (H, GATES * H)),
        "b_h": rng.uniform(-k, k, GATES * H),
        "b_hn": rng.uniform(-k, k, H),
    }


def step(a, state, p, out=None):
    """h_t from a (B, 3H) and h_{t-1}; returns the new state and what backward needs."""
    (h_prev,) = state
    H = h_prev.shape[-1]
    u = h_prev @ p["W_hh"]  # (B, 3H)
    rz = sigmoid(a[:, : 2 * H] + u[:, : 2 * H])  # (B, 2H): r and z in one kernel
    r, z = rz[:, :H], rz[:, H:]
    hn = u[:, 2 * H :] + p["b_hn"]
    n = np.tanh(a[:, 2 * H :] + r * hn)  # tanh(a_n + r * hn)
    h = np.add(n, z * (h_prev - n), out=out)  # (1 - z) * n + z * h_prev
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
    np.multiply(dh, 1.0 - z, out=dn_raw)  # backprop into n
    np.multiply(dh, h_prev - n, out=dz)  # backprop into z
    dh_prev = dh * z  # the skip path into h_{t-1}
    dn_raw *= 1.0 - n * n  # backprop through tanh
    np.multiply(dn_raw, hn, out=dr)  # backprop into r
    dhn = dn_raw * r  # backprop into u_n + b_hn
    drz = da[:, : 2 * H]
    drz *= rz * (1.0 - rz)  # backprop through sigmoid
    du = np.concatenate([drz, dhn], axis=-1)  # u_n sits inside the reset product
    return da, du, (dh_prev,)


def extra_grads(dA, dU, p):
    """b_hn is added to u_n: its gradient is the sum of du_n over the window and the streams."""
    H = p["b_hn"].shape[0]
    return {"b_hn": dU[..., 2 * H :].sum(axis=(0, 1))}
