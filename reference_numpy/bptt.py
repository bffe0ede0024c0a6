"""Truncated BPTT over one window, for any cell and any depth, in plain NumPy.

Mirrors ``torch_charrnn/rnn/bptt.py`` function by function, with the same names in the same order:
``run_layers`` (every layer over the window, ``input_share`` then ``step_by_step``), the forward
with the output layer, and ``backward``, which walks the layers from the top (``through_dropout``,
then ``layer_backward``: the loop over time in ``loop_backward``, then ``input_weight_grads`` and
``recurrent_weight_grad``, one product each per window). Row vectors and time-major work (T, B, ...)
throughout. Exactly where the two differ:

- torch keeps ``input_share`` and ``input_share_backward`` in ``cells/common.py`` (the defaults of
  a cell that does not define its own) and the two weight gradients in
  ``weight_grads.py``, which its cells' C++ kernels (a second path, ``Tape.kernel``) share;
- NumPy's ``forward`` is torch's ``forward_autograd`` (and ``ManualBPTT.forward``);
- NumPy's ``backward`` forms dL/dlogits of the mean cross-entropy itself, and nothing flows into
  the last state from after the window; torch's is handed both by autograd;
- torch alone has what autograd and the devices need: ``ManualBPTT``, ``flatten``/``unflatten``,
  ``forward_manual``, ``dropout_masks`` and ``zoneout_masks`` (NumPy is handed its masks), and the
  monitor's per-step ``steps``; NumPy alone has ``log_softmax`` and ``loss_and_grads``;
- torch's cells carry zoneout's rates, by which a state moves in evaluation; NumPy zones out only
  where it is handed masks, as training does.

    state: a tuple of (L, B, H) arrays, ``(h,)`` or ``(h, c)`` (the cell's STATE)
    layers: one dict of arrays per layer, {"W_xh", "W_hh", "b_h", ...}
    params: {"layers": layers, "W_hy", "b_y"}

The reference's functions take the cell's name; torch's take the cell itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from reference_numpy.cells import extra_grads, get_cell


class Tape(NamedTuple):
    """What the backward pass reads of one layer's forward pass over a window."""

    below: np.ndarray  # the layer's input: indices (T, B) for layer 0, the layer below's h (T, B, H)
    h0: np.ndarray  # its initial h (B, H)
    hs: np.ndarray  # h_t of every step (T, B, H)
    mask: np.ndarray | None  # the dropout mask on the h it passes on (T, B, H), scaled; None without
    caches: list  # each step's cache, in order, as its ``step_backward`` reads it
    share: object = None  # what the input shares kept for their backward (a normalised cell's LN)
    zone: tuple | None = None  # zoneout's keep masks for each state (``layer_zone``); None: none


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits, targets):
    """Mean negative log-likelihood in nats over every (stream, step) position."""
    logp = log_softmax(logits)
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()


def run_layers(inputs, state, layers, cell="tanh", masks=None, zones=None):
    """Every layer over a window of indices (B, T) from ``state``: the top layer's h (T, B, H),
    the last state (a tuple of (L, B, H)) and each layer's Tape.

    ``masks``: None, or one inverted-dropout mask (T, B, H) per layer (1 / (1 - p) where a unit is
    kept, 0 where dropped), which multiplies the h that layer passes on, to the layer above or,
    from the top, to the output layer; the recurrence itself is never dropped.

    ``zones``: None, or zoneout's masks, one tuple per layer like the state, each (T, B, H), 1 where
    a unit keeps its previous value (m * h_{t-1} + (1 - m) * the cell's new h_t), or None for a
    state not zoned."""
    c = get_cell(cell)
    x = inputs.T  # (T, B), time-major
    below = x
    tape, last = [], []
    for l, p in enumerate(layers):
        s = tuple(st[l] for st in state)
        mask = None if masks is None else masks[l]
        zone = layer_zone(zones, l)
        a, kept = getattr(c, "input_share", input_share)(
            below, p
        )  # (T, B, G*H): characters' rows gathered, or one matmul
        hs, s, caches = step_by_step(a, s, p, c, zone)
        tape.append(Tape(below, state[0][l], hs, mask, caches, kept, zone))
        last.append(s)
        below = hs if mask is None else hs * mask  # dropout on what it passes on
    state_last = tuple(np.stack([s[k] for s in last]) for k in range(len(c.STATE)))  # each (L, B, H)
    return below, state_last, tape


def input_share(below, p):
    """a (T, B, G*H) = x_t W_xh + b_h for a whole window, from the layer's input: for the first
    layer, characters (T, B), whose one-hot rows are gathered; above it, the h of the layer below
    (T, B, H), one matmul. Nothing is kept for the backward (None)."""
    if below.dtype.kind == "f":
        return below @ p["W_xh"] + p["b_h"], None
    return p["W_xh"][below] + p["b_h"], None


def layer_zone(zones, l):
    """Layer l's zoneout masks, a tuple like the state (None where a state is not zoned), or None."""
    if zones is None or all(m is None for m in zones[l]):
        return None
    return zones[l]


def zoned(prev, fresh, keep):
    """Zoneout of one state at one step: m * prev + (1 - m) * fresh, m the step's keep mask (B, H)."""
    return keep * prev + (1 - keep) * fresh


def through_zoneout(ds, keep):
    """Backprop through one step's zoneout: dL/dfresh = (1 - m) * ds, for the cell's step, and
    m * ds straight into the previous state (None where a state is not zoned)."""
    fresh = tuple(d if m is None else d * (1 - m) for d, m in zip(ds, keep, strict=True))
    around = tuple(None if m is None else d * m for d, m in zip(ds, keep, strict=True))
    return fresh, around


def at_step(zone, t):
    """Each state's keep mask at step t (B, H), or None."""
    return tuple(None if m is None else m[t] for m in zone)


def step_by_step(a, s, p, c, zone=None):
    """One layer's recurrence, a cell step at a time, from its input shares a (T, B, G*H): h of
    every step (T, B, H), the last state and each step's cache. ``zone``: the layer's zoneout
    masks (``layer_zone``): each step's new state then moves to its zoned value, the cell's own
    (which its cache may hold) kept apart."""
    # with one gate block h_t overwrites the input share a_t its own step has consumed; with more,
    # h goes to a buffer of its own
    H = s[0].shape[-1]
    hs = a if c.GATES == 1 else np.empty(a.shape[:-1] + (H,), dtype=a.dtype)
    caches = []
    for t in range(a.shape[0]):  # the recurrence alone
        if zone is None:
            s, cache = c.step(a[t], s, p, out=hs[t])
        else:
            keep = at_step(zone, t)
            fresh, cache = c.step(a[t], s, p, out=hs[t] if keep[0] is None else np.empty_like(hs[t]))
            s = tuple(
                f if m is None else zoned(prev, f, m) for prev, f, m in zip(s, fresh, keep, strict=True)
            )
            hs[t] = s[0]
        caches.append(cache)
    return hs, s, caches


def forward(params, inputs, state, cell="tanh", masks=None, zones=None):
    """Logits (B, T, V), the last state (a tuple of (L, B, H)) and the tape backward reads."""
    top, state_last, tape = run_layers(inputs, state, params["layers"], cell, masks, zones)
    logits = top @ params["W_hy"] + params["b_y"]  # (T, B, V)
    return logits.transpose(1, 0, 2), state_last, tape


def backward(params, inputs, targets, logits, tape, cell="tanh"):
    """Hand-written BPTT: the gradients of the mean loss, keyed like params, plus "state", the
    gradient w.r.t. the initial state (a tuple like the state)."""
    c = get_cell(cell)
    layers, W_hy = params["layers"], params["W_hy"]
    # torch's backward is handed dL/dlogits by autograd; here it is formed: p - onehot(y), over B*T
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
        p, layer = layers[l], tape[l]
        if layer.mask is not None:
            dhs = through_dropout(dhs, layer.mask)
        last = (None,) * len(c.STATE)  # nothing flows in from after the window
        dP, dstate, grads = layer_backward(dhs, last, layer, p, c)
        if l > 0:
            dhs = (dP.reshape(T * B, -1) @ p["W_xh"].T).reshape(T, B, H)  # backprop into the layer below's h
        layer_grads.insert(0, grads)
        dstate0.insert(0, dstate)
    state = tuple(np.stack([d[k] for d in dstate0]) for k in range(len(c.STATE)))
    return {"layers": layer_grads, "W_hy": dW_hy, "b_y": db_y, "state": state}


def through_dropout(dh, mask):
    """Backprop through dropout, the h passed on being h * m: d(h * m)/dh = m, the same mask."""
    return dh * mask


def layer_backward(dhs, last, tape, p, c):
    """One layer's hand-written BPTT: dL/d(x W_xh) (T, B, G*H), the product of the layer's input
    (dL/da itself where a = x W_xh + b_h), the initial state's gradient and every parameter gradient
    of the layer. The loop over time first, then each weight gradient in one product."""
    dA, dU, dstate, own = loop_backward(dhs, last, tape, p, c)
    backward_share = getattr(c, "input_share_backward", input_share_backward)
    dP, input_grads = backward_share(dA, tape.below, tape.share, p)
    grads = {
        **input_grads,
        "W_hh": recurrent_weight_grad(tape.h0, tape.hs, dU),
        **extra_grads(c, dA, dU, p),
        **own,
    }
    return dP, dstate, grads


def loop_backward(dhs, last, tape, p, c):
    """One layer's BPTT, step by step through the cell's ``step_backward``, from dhs (T, B, H), each
    h_t's gradient from above, and ``last``, the last state's from after the window (None where
    there is none): dL/da (T, B, G*H), dL/du (dL/da itself where a cell adds a and u), the
    gradient of the initial state (a tuple) and the steps' shares of the gradients of the
    parameters they read, added up (a dict, empty for most cells). With one gate block, dL/da
    overwrites dhs."""
    T, B, H = dhs.shape
    caches = tape.caches
    W_hh_t = p["W_hh"].T
    if last[0] is not None:
        dhs[-1] += last[0]  # a gradient into the last h, from after the window
    rest = tuple(np.zeros_like(tape.h0) if d is None else d for d in last[1:])
    dh0 = np.zeros_like(tape.h0)
    # dL/da_t; with one gate block, written over dL/dh_t (its share from above, read by then)
    dA = dhs if c.GATES == 1 else np.empty((T, B, p["W_hh"].shape[1]), dtype=tape.hs.dtype)
    dU = None  # dL/du_t: dA itself where a cell adds a and u
    own = {}  # the steps' shares of their parameters' gradients, added up
    for t in reversed(range(T)):
        # dhs[t] holds dL/dh_t whole: its output's share plus, added below, the step after it
        ds, around = (dhs[t], *rest), None
        if tape.zone is not None:
            ds, around = through_zoneout(ds, at_step(tape.zone, t))
        da, du, direct, *shares = c.step_backward(ds, caches[t], p, dA[t])
        for name, g in (shares[0] if shares else {}).items():
            own[name] = g if name not in own else own[name] + g
        if du is not da:
            dU = np.empty_like(dA) if dU is None else dU
            dU[t] = du
        dh_prev = dhs[t - 1] if t > 0 else dh0
        dh_prev += du @ W_hh_t  # backprop into h_{t-1} through u = h_{t-1} W_hh
        if direct[0] is not None:
            dh_prev += direct[0]  # and around it (GRU's z * dh)
        rest = direct[1:]  # backprop into c_{t-1}
        if around is not None:  # and around the step, where zoneout kept the previous state
            if around[0] is not None:
                dh_prev += around[0]
            rest = tuple(r if d is None else r + d for r, d in zip(rest, around[1:], strict=True))
    return dA, dA if dU is None else dU, (dh0, *rest), own


def input_share_backward(dA, below, kept, p):
    """From dL/da (T, B, G*H) of a = x W_xh + b_h: dL/d(x W_xh), which is dL/da itself, and the
    gradients of W_xh and b_h."""
    return dA, input_weight_grads(below, dA, p)


def input_weight_grads(below, dA, p):
    """The gradients of W_xh and b_h from dL/da (T, B, G*H) and the layer's input ``below``."""
    T, B, G_H = dA.shape
    dA2 = dA.reshape(T * B, G_H)
    if below.dtype.kind == "f":  # a layer above, which read the h below: one product
        return {"W_xh": below.reshape(T * B, -1).T @ dA2, "b_h": dA2.sum(axis=0)}
    dW_xh = np.zeros_like(p["W_xh"])
    np.add.at(dW_xh, below.reshape(-1), dA2)  # backprop into the gathered rows
    return {"W_xh": dW_xh, "b_h": dA2.sum(axis=0)}


def recurrent_weight_grad(h0, hs, dU):
    """sum_t h_{t-1}ᵀ du_t, one product over [h0; hs[:-1]]."""
    T, B, H = hs.shape
    h_prev = np.concatenate([h0[None], hs[:-1]]).reshape(T * B, H)  # h_{t-1} for every t
    return h_prev.T @ dU.reshape(T * B, -1)


def loss_and_grads(params, inputs, targets, state, cell="tanh", masks=None, zones=None):
    """Loss (nats, mean), gradients (params' structure plus "state"), and the last state;
    ``masks`` and ``zones``, dropout's and zoneout's (see ``run_layers``), or None."""
    logits, state_last, tape = forward(params, inputs, state, cell, masks, zones)
    loss = cross_entropy(logits, targets)
    grads = backward(params, inputs, targets, logits, tape, cell)
    return float(loss), grads, state_last
