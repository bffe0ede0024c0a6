"""Truncated BPTT over one window, for any cell and any depth, in plain NumPy.

Mirrors ``torch_charrnn/rnn/bptt.py`` function by function: ``run_layers`` (every layer over the
window), ``forward`` (and the output layer) and ``backward`` (the hand-written BPTT), with the same
names, the same order, row vectors and time-major work (T, B, ...). For each layer the input
projection of the whole window comes first (a gather of W_xh rows for layer 0, which reads
characters; one matmul for a layer above, which reads h of the layer below), then the recurrence
alone in the time loop, one cell step at a time; the output projection of the top layer is one
matmul. The backward pass walks the same loops in reverse, each cell step through the cell's own
``step_backward``; weight gradients are one matmul per window, not per step.

    state: a tuple of (L, B, H) arrays, ``(h,)`` or ``(h, c)`` (the cell's STATE)
    layers: one dict of arrays per layer, {"W_xh", "W_hh", "b_h", ...}
    params: {"layers": layers, "W_hy", "b_y"}

The reference's functions take the cell's name; torch's take the cell itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reference_numpy.cells import get_cell


class Tape(NamedTuple):
    """What the backward pass reads of one layer's forward pass over a window."""

    below: np.ndarray  # the layer's input: indices (T, B) for layer 0, the layer below's h (T, B, H)
    h0: np.ndarray  # its initial h (B, H)
    hs: np.ndarray  # h_t of every step (T, B, H)
    caches: list  # what each step's ``step_backward`` reads
    mask: np.ndarray | None  # the dropout mask on the h it passes on (T, B, H), scaled; None without


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits, targets):
    """Mean negative log-likelihood in nats over every (stream, step) position."""
    logp = log_softmax(logits)
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()


def run_layers(inputs, state, layers, cell="tanh", masks=None):
    """Every layer over a window of indices (B, T) from ``state``: the top layer's h (T, B, H),
    the last state (a tuple of (L, B, H)) and each layer's Tape.

    ``masks``: None, or one inverted-dropout mask (T, B, H) per layer (1 / (1 - p) where a unit is
    kept, 0 where dropped), which multiplies the h that layer passes on, to the layer above or,
    from the top, to the output layer; the recurrence itself is never dropped."""
    c = get_cell(cell)
    x = inputs.T  # (T, B), time-major
    below, H = x, state[0].shape[-1]
    tape, last = [], []
    for l, p in enumerate(layers):
        if l == 0:
            a = p["W_xh"][x] + p["b_h"]  # (T, B, G*H): one-hot rows, gathered
        else:
            a = below @ p["W_xh"] + p["b_h"]  # (T, B, G*H): the layer below's h, one matmul
        s = tuple(st[l] for st in state)
        # with one gate block h_t overwrites the input share a_t its own step has consumed; with
        # more, h goes to a buffer of its own
        hs = a if c.GATES == 1 else np.empty(a.shape[:-1] + (H,), dtype=a.dtype)
        caches = []
        for t in range(x.shape[0]):  # the recurrence alone
            s, cache = c.step(a[t], s, p, out=hs[t])
            caches.append(cache)
        mask = None if masks is None else masks[l]
        tape.append(Tape(below, state[0][l], hs, caches, mask))
        last.append(s)
        below = hs if mask is None else hs * mask  # dropout on what it passes on
    state_last = tuple(np.stack([s[k] for s in last]) for k in range(len(c.STATE)))  # each (L, B, H)
    return below, state_last, tape


def forward(params, inputs, state, cell="tanh", masks=None):
    """Logits (B, T, V), the last state (a tuple of (L, B, H)) and the tape backward reads."""
    top, state_last, tape = run_layers(inputs, state, params["layers"], cell, masks)
    logits = top @ params["W_hy"] + params["b_y"]  # (T, B, V)
    return logits.transpose(1, 0, 2), state_last, tape


def backward(params, inputs, targets, logits, tape, cell="tanh"):
    """Hand-written BPTT: the gradients of the mean loss, keyed like params, plus "state", the
    gradient w.r.t. the initial state (a tuple like the state)."""
    c = get_cell(cell)
    layers, W_hy = params["layers"], params["W_hy"]
    B, T = inputs.shape
    dlogits = np.exp(log_softmax(logits))  # softmax, (B, T, V)
    np.put_along_axis(
        dlogits,
        targets[..., None],
        np.take_along_axis(dlogits, targets[..., None], axis=-1) - 1.0,
        axis=-1,
    )  # backprop into cross-entropy: p - onehot(y)
    dlogits /= B * T  # the loss is a mean
    top = tape[-1].hs if tape[-1].mask is None else tape[-1].hs * tape[-1].mask  # what the output read
    H = top.shape[-1]
    dy = dlogits.transpose(1, 0, 2).reshape(T * B, -1)  # (T*B, V), time-major like the tape
    dW_hy = top.reshape(T * B, H).T @ dy  # (H, V)
    db_y = dy.sum(axis=0)  # (V,)
    dhs = (dy @ W_hy.T).reshape(T, B, H)  # the output's share of dL/dh_t
    layer_grads, dstate0 = [], []
    for l in reversed(range(len(layers))):
        p, (below, h0, hs, caches, mask) = layers[l], tape[l]
        if mask is not None:
            dhs = dhs * mask  # backprop through dropout: d(h * m)/dh = m, the same mask
        W_hh_t = p["W_hh"].T
        rest = tuple(np.zeros_like(h0) for _ in c.STATE[1:])  # nothing flows in from after the window
        dh0 = np.zeros_like(h0)
        G_H = p["W_hh"].shape[1]
        # dL/da_t; with one gate block, written over dL/dh_t
        dA = dhs if c.GATES == 1 else np.empty((T, B, G_H), dtype=hs.dtype)
        dU = None  # dL/du_t: dA itself where a cell adds a and u
        for t in reversed(range(T)):
            # dhs[t] holds dL/dh_t whole: its output's share plus, added below, the step after it
            da, du, direct = c.step_backward((dhs[t], *rest), caches[t], p, dA[t])
            if du is not da:
                dU = np.empty_like(dA) if dU is None else dU
                dU[t] = du
            dh_prev = dhs[t - 1] if t > 0 else dh0
            dh_prev += du @ W_hh_t  # backprop into h_{t-1} through u = h_{t-1} W_hh
            if direct[0] is not None:
                dh_prev += direct[0]  # and around it (GRU's z * dh)
            rest = direct[1:]  # backprop into c_{t-1}
        dU = dA if dU is None else dU
        dA2, dU2 = dA.reshape(T * B, G_H), dU.reshape(T * B, G_H)
        h_prev = np.concatenate([h0[None], hs[:-1]]).reshape(T * B, H)  # h_{t-1} for every t
        if l == 0:
            dW_xh = np.zeros_like(p["W_xh"])
            np.add.at(dW_xh, below.reshape(-1), dA2)  # backprop into the gathered rows
        else:
            dW_xh = below.reshape(T * B, -1).T @ dA2  # (H, G*H)
            dhs = (dA2 @ p["W_xh"].T).reshape(T, B, H)  # backprop into the layer below's h
        grads = {
            "W_xh": dW_xh,
            "W_hh": h_prev.T @ dU2,  # sum_t h_{t-1}^T du_t
            "b_h": dA2.sum(axis=0),
            **c.extra_grads(dA, dU, p),
        }
        layer_grads.insert(0, grads)
        dstate0.insert(0, (dh0, *rest))
    state = tuple(np.stack([d[k] for d in dstate0]) for k in range(len(c.STATE)))
    return {"layers": layer_grads, "W_hy": dW_hy, "b_y": db_y, "state": state}


def loss_and_grads(params, inputs, targets, state, cell="tanh", masks=None):
    """Loss (nats, mean), gradients (params' structure plus "state"), and the last state;
    ``masks``, dropout's (see ``run_layers``), or None."""
    logits, state_last, tape = forward(params, inputs, state, cell, masks)
    loss = cross_entropy(logits, targets)
    grads = backward(params, inputs, targets, logits, tape, cell)
    return float(loss), grads, state_last
