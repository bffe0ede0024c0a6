"""The character-level tanh RNN in plain NumPy, with hand-written BPTT.

This file mirrors ``torch_charrnn/rnn.py`` line for line: same names, same order, same
row-vector convention (``h @ W_hh``, as in the tutorial). V = vocabulary size,
H = hidden size, B = streams, T = window.

    h_t      = tanh(W_xh[x_t] + h_{t-1} @ W_hh + b_h)
    logits_t = h_t @ W_hy + b_y
    loss     = mean over the B*T predicted characters of cross_entropy(logits_t, y_t)

References: Karpathy's min-char-rnn (the BPTT loop below follows it), Le et al. 2015
"A Simple Way to Initialize Recurrent Networks of Rectified Linear Units" (identity W_hh).
"""

from __future__ import annotations

import numpy as np

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")


def init_params(
    vocab_size: int,
    hidden_size: int,
    rng: np.random.Generator,
    whh_scale: float = 0.01,
    init_std: float = 0.01,
    dtype=np.float64,
) -> dict[str, np.ndarray]:
    """SPEC.md's initialisation: small Gaussian projections, W_hh = whh_scale * I, zero biases."""
    V, H = vocab_size, hidden_size
    return {
        "W_xh": (rng.standard_normal((V, H)) * init_std).astype(dtype),
        "W_hh": (np.eye(H) * whh_scale).astype(dtype),
        "b_h": np.zeros(H, dtype=dtype),
        "W_hy": (rng.standard_normal((H, V)) * init_std).astype(dtype),
        "b_y": np.zeros(V, dtype=dtype),
    }


def forward(params, inputs, h0):
    """Run the recurrence over a window; returns logits (B, T, V) and all states (B, T, H)."""
    W_xh, W_hh, b_h, W_hy, b_y = (params[k] for k in PARAM_NAMES)
    B, T = inputs.shape
    hs = np.empty((B, T, W_hh.shape[0]), dtype=W_hh.dtype)
    h = h0
    for t in range(T):
        h = np.tanh(W_xh[inputs[:, t]] + h @ W_hh + b_h)  # (B, H)
        hs[:, t] = h
    logits = hs @ W_hy + b_y  # (B, T, V)
    return logits, hs


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits, targets):
    """Mean negative log-likelihood in nats over every (stream, step) position."""
    logp = log_softmax(logits)
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()


def backward(params, inputs, targets, h0, logits, hs):
    """Hand-written BPTT; returns the gradients of the mean loss, keyed like params plus "h0"."""
    W_xh, W_hh, b_h, W_hy, b_y = (params[k] for k in PARAM_NAMES)
    B, T = inputs.shape
    dlogits = np.exp(log_softmax(logits))  # softmax, (B, T, V)
    np.put_along_axis(
        dlogits,
        targets[..., None],
        np.take_along_axis(dlogits, targets[..., None], axis=-1) - 1.0,
        axis=-1,
    )  # backprop into cross-entropy: p - onehot(y)
    dlogits /= B * T  # the loss is a mean
    dW_hy = hs.reshape(B * T, -1).T @ dlogits.reshape(B * T, -1)  # (H, V)
    db_y = dlogits.sum(axis=(0, 1))  # (V,)
    dhs_out = dlogits @ W_hy.T  # (B, T, H), the output's share of dL/dh_t
    dW_xh, dW_hh, db_h = np.zeros_like(W_xh), np.zeros_like(W_hh), np.zeros_like(b_h)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        dh = dhs_out[:, t] + dh_next  # backprop into h_t
        dhraw = (1.0 - hs[:, t] ** 2) * dh  # backprop through tanh
        h_prev = hs[:, t - 1] if t > 0 else h0
        np.add.at(dW_xh, inputs[:, t], dhraw)  # backprop into the gathered rows
        dW_hh += h_prev.T @ dhraw  # backprop into W_hh
        db_h += dhraw.sum(axis=0)  # backprop into b_h
        dh_next = dhraw @ W_hh.T  # backprop into h_{t-1}
    return {"W_xh": dW_xh, "W_hh": dW_hh, "b_h": db_h, "W_hy": dW_hy, "b_y": db_y, "h0": dh_next}


def loss_and_grads(params, inputs, targets, h0):
    """Loss (nats, mean), gradients keyed by the five parameter names plus "h0", and h_last."""
    logits, hs = forward(params, inputs, h0)
    loss = cross_entropy(logits, targets)
    grads = backward(params, inputs, targets, h0, logits, hs)
    return float(loss), grads, hs[:, -1].copy()


def numerical_grads(params, inputs, targets, h0, delta=1e-5, indices=None):
    """Central-difference gradients of the mean loss, for the five parameters and "h0".

    ``indices`` optionally maps a name to the flat indices to check (others are left NaN), so that
    large parameters can be spot-checked.
    """
    work = {k: np.array(v, dtype=np.float64) for k, v in {**params, "h0": h0}.items()}
    out = {}
    for name in (*PARAM_NAMES, "h0"):
        flat = work[name].reshape(-1)  # a view: writes below perturb work[name]
        grad = np.full(flat.size, np.nan)
        for i in range(flat.size) if indices is None or name not in indices else indices[name]:
            old = flat[i]
            flat[i] = old + delta
            plus = cross_entropy(forward(work, inputs, work["h0"])[0], targets)
            flat[i] = old - delta
            minus = cross_entropy(forward(work, inputs, work["h0"])[0], targets)
            flat[i] = old
            grad[i] = (plus - minus) / (2 * delta)
        out[name] = grad.reshape(work[name].shape)
    return out


def global_norm(grads):
    return float(np.sqrt(sum(float((grads[k] ** 2).sum()) for k in PARAM_NAMES)))


def clip_grad_norm(grads, max_norm):
    """Scale all five gradients in place by one factor, torch.nn.utils.clip_grad_norm_'s formula.

    Returns the total norm before clipping.
    """
    total_norm = global_norm(grads)
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        for k in PARAM_NAMES:
            grads[k] *= coef
    return total_norm


def clip_grads(grads, algorithm, clip_val):
    """Clip in place by ``norm`` (global L2 norm) or ``value`` (element-wise), Lightning's two
    ``gradient_clip_algorithm`` values. Returns whether clipping changed anything."""
    if algorithm == "norm":
        return clip_val / (clip_grad_norm(grads, clip_val) + 1e-6) < 1.0
    if algorithm == "value":
        clipped = any(np.abs(grads[k]).max() > clip_val for k in PARAM_NAMES)
        clip_grad_value(grads, clip_val)
        return clipped
    raise ValueError(f"clip algorithm must be 'norm' or 'value', got {algorithm!r}")


def clip_grad_value(grads, clip_value):
    """Clamp each gradient element to [-clip_value, clip_value], torch.nn.utils.clip_grad_value_."""
    for k in PARAM_NAMES:
        np.clip(grads[k], -clip_value, clip_value, out=grads[k])


def adagrad_step(params, grads, state, lr, eps=1e-10):
    """One Adagrad update in place, torch.optim.Adagrad's formula (eps outside the sqrt)."""
    for k in PARAM_NAMES:
        state[k] += grads[k] * grads[k]
        params[k] -= lr * grads[k] / (np.sqrt(state[k]) + eps)


def sample(params, h, x, length, rng, temperature=1.0, top_k=None):
    """Generate ``length`` indices, carrying the hidden state from character to character.

    ``h`` is (B, H), ``x`` the (B,) indices to feed first. ``temperature=0`` is greedy.
    Returns (indices (B, length), h).
    """
    W_xh, W_hh, b_h, W_hy, b_y = (params[k] for k in PARAM_NAMES)
    out = np.empty((x.shape[0], length), dtype=np.int64)
    for i in range(length):
        h = np.tanh(W_xh[x] + h @ W_hh + b_h)  # (B, H)
        logits = h @ W_hy + b_y  # (B, V)
        x = pick(logits, rng, temperature, top_k)
        out[:, i] = x
    return out, h


def pick(logits, rng, temperature=1.0, top_k=None):
    """Draw one index per row from softmax(logits / temperature), by inverse CDF."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]
        logits = np.where(logits < kth, -np.inf, logits)
    cdf = np.exp(logits - logits.max(axis=-1, keepdims=True)).cumsum(axis=-1)
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1)
