"""Truncated BPTT over one window, for any cell and any depth, in torch.

Mirrors ``reference_numpy/bptt.py``: the same names, the same order, row vectors and time-major
work (T, B, ...). For each layer the input projection of the whole window comes first (a gather
of W_xh rows for layer 0, which reads characters; one matmul for a layer above, which reads h of
the layer below), then the recurrence alone in the time loop, one cell step at a time; the
output projection of the top layer is one matmul.

Two ways to differentiate it: ``forward_autograd`` lets autograd record the cell steps (the
oracle), and ``ManualBPTT`` runs the same forward with autograd off and walks the loops in reverse
through each cell's hand-written ``step_backward`` (the training path, ``bptt="manual"``). Weight
gradients are one matmul per window (an ``index_add_`` for the gathered rows), not per step.

    state: a tuple of (L, B, H) tensors, ``(h,)`` or ``(h, c)`` (the cell's STATE)
    layers: one dict of tensors per layer, {"W_xh", "W_hh", "b_h", ...}
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_charrnn.rnn.cells import get_cell

LN2 = math.log(2.0)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood in nats over every (stream, step) position."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def run_layers(inputs: Tensor, state: tuple, layers: list[dict], cell: str, keep_tape: bool = False):
    """Every layer over a window of indices (B, T) from ``state``: each layer's h (T, B, H), the
    last state (a tuple of (L, B, H)) and, with ``keep_tape``, what backward reads."""
    c = get_cell(cell)
    x = inputs.t()  # (T, B), time-major
    T, B = x.shape
    below, H = x, state[0].shape[-1]
    tape, last, every_h = [], [], []
    for l, p in enumerate(layers):
        if l == 0:
            a = F.embedding(x, p["W_xh"]).add_(p["b_h"])  # (T, B, G*H): one-hot rows, gathered
        else:
            a = below @ p["W_xh"] + p["b_h"]  # (T, B, G*H): the layer below's h, one matmul
        s = tuple(st[l] for st in state)
        # h_t overwrites the input share a_t that its own step has consumed (its first H columns):
        # no buffer to fill. Under autograd, which cannot record out=, the states are stacked instead.
        hs = None if torch.is_grad_enabled() else a[..., :H]
        outs, caches = [], []
        for t in range(T):  # the recurrence alone
            s, cache = c.step(a[t], s, p, out=None if hs is None else hs[t])
            outs.append(s[0])
            caches.append(cache)
        hs = torch.stack(outs) if hs is None else hs  # (T, B, H)
        if keep_tape:
            tape.append((below, state[0][l], hs, caches, outs))
        last.append(s)
        every_h.append(hs)
        below = hs
    state_last = tuple(torch.stack([s[k] for s in last]) for k in range(len(c.STATE)))  # each (L, B, H)
    return every_h, state_last, tape


def forward_autograd(inputs, state, layers, W_hy, b_y, cell="tanh"):
    """Logits (B, T, V) and the last state, differentiated by autograd through every cell step."""
    every_h, state_last, _ = run_layers(inputs, state, layers, cell)
    logits = every_h[-1] @ W_hy + b_y  # (T, B, V)
    return logits.transpose(0, 1), state_last


class ManualBPTT(torch.autograd.Function):
    """The forward of ``forward_autograd`` with its backward pass written by hand.

    apply(cell, num_state, names, inputs, *state, *layer tensors (flattened by ``names``), W_hy, b_y)
    -> logits (B, T, V), *last state. Nothing in it synchronises with the host, so it runs
    unchanged on CUDA.
    """

    @staticmethod
    def forward(ctx, cell, num_state, names, inputs, *tensors):
        state, layers, W_hy, b_y = unflatten(tensors, num_state, names)
        every_h, state_last, tape = run_layers(inputs, state, layers, cell, keep_tape=True)
        top = every_h[-1]
        T, B, H = top.shape
        logits = torch.addmm(b_y, top.reshape(T * B, H), W_hy).view(T, B, -1)  # (T, B, V)
        ctx.cell, ctx.names, ctx.num_state = cell, names, num_state
        ctx.layers, ctx.tape, ctx.W_hy = layers, tape, W_hy
        ctx.set_materialize_grads(False)
        return (logits.transpose(0, 1), *state_last)

    @staticmethod
    def backward(ctx, dlogits, *dstate_last):
        c = get_cell(ctx.cell)
        layers, tape, W_hy = ctx.layers, ctx.tape, ctx.W_hy
        top = tape[-1][2]
        T, B, H = top.shape
        if dlogits is None:
            dlogits = top.new_zeros(B, T, W_hy.shape[1])
        dy = dlogits.transpose(0, 1).reshape(T * B, -1)  # (T*B, V), time-major like the tape
        dW_hy = top.reshape(T * B, H).t() @ dy  # (H, V)
        db_y = dy.sum(0)  # (V,)
        dhs = (dy @ W_hy.t()).view(T, B, H)  # the output's share of dL/dh_t
        layer_grads, dstate0 = [], []
        for l in reversed(range(len(layers))):
            p = layers[l]
            below, h0, hs, caches, _ = tape[l]
            W_hh_t = p["W_hh"].t()
            if dstate_last[0] is not None:
                dhs[-1] += dstate_last[0][l]  # a gradient into the last h, from after the window
            rest = tuple(torch.zeros_like(h0) if d is None else d[l] for d in dstate_last[1:])
            dh0 = torch.zeros_like(h0)
            G_H = p["W_hh"].shape[1]
            dA = dhs if G_H == H else hs.new_empty(T, B, G_H)  # dL/da_t; with one gate block, over dL/dh_t
            dU = None  # dL/du_t: dA itself where a cell adds a and u
            for t in reversed(range(T)):
                # dhs[t] holds dL/dh_t whole: its output's share plus, added below, the step after it
                da, du, direct = c.step_backward((dhs[t], *rest), caches[t], p, dA[t])
                if du is not da:
                    dU = torch.empty_like(dA) if dU is None else dU
                    dU[t] = du
                dh_prev = dhs[t - 1] if t > 0 else dh0
                dh_prev.addmm_(du, W_hh_t)  # backprop into h_{t-1} through u = h_{t-1} W_hh
                if direct[0] is not None:
                    dh_prev += direct[0]  # and around it (GRU's z * dh)
                rest = direct[1:]  # backprop into c_{t-1}
            dU = dA if dU is None else dU
            dA2, dU2 = dA.view(T * B, G_H), dU.view(T * B, G_H)
            hs_prev = hs[:-1].reshape((T - 1) * B, H)  # h_{t-1} for t >= 1; h0 for t = 0
            if l == 0:
                dW_xh = torch.zeros_like(p["W_xh"]).index_add_(0, below.reshape(-1), dA2)  # the gathered rows
            else:
                dW_xh = below.reshape(T * B, -1).t() @ dA2  # (H, G*H)
                dhs = (dA2 @ p["W_xh"].t()).view(T, B, H)  # backprop into the layer below's h
            grads = {
                "W_xh": dW_xh,
                "W_hh": torch.addmm(h0.t() @ dU[0], hs_prev.t(), dU2[B:]),  # sum_t h_{t-1}^T du_t
                "b_h": dA2.sum(0),
                **c.extra_grads(dA, dU, p),
            }
            layer_grads.insert(0, grads)
            dstate0.insert(0, (dh0, *rest))
        state = tuple(torch.stack([d[k] for d in dstate0]) for k in range(len(c.STATE)))
        flat_layers = [g[name] for g in layer_grads for name in ctx.names]
        return (None, None, None, None, *state, *flat_layers, dW_hy, db_y)


def flatten(state, layers, W_hy, b_y) -> tuple[tuple[str, ...], tuple]:
    """The parameter names of a layer, and every tensor in one tuple for ``ManualBPTT.apply``."""
    names = tuple(layers[0])
    return names, (*state, *(p[n] for p in layers for n in names), W_hy, b_y)


def unflatten(tensors, num_state, names):
    state = tuple(tensors[:num_state])
    rest = tensors[num_state:-2]
    k = len(names)
    layers = [dict(zip(names, rest[i : i + k], strict=True)) for i in range(0, len(rest), k)]
    return state, layers, tensors[-2], tensors[-1]


def forward_manual(inputs, state, layers, W_hy, b_y, cell="tanh"):
    """Same as ``forward_autograd``, through ``ManualBPTT``: logits (B, T, V) and the last state.

    Under autocast the whole window runs in the autocast dtype (as cuDNN's RNN does): the
    weights are cast once per window, and autograd casts their gradients back.
    """
    names, tensors = flatten(state, layers, W_hy, b_y)
    device = inputs.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            out = ManualBPTT.apply(cell, len(state), names, inputs, *(t.to(dtype) for t in tensors))
    else:
        out = ManualBPTT.apply(cell, len(state), names, inputs, *tensors)
    return out[0], tuple(out[1:])


# |tanh| or |2σ - 1| above this: the derivative is under 2% of its peak, little gradient passes
SATURATED = 0.99


def activation_statistics(caches: list, cell: str) -> dict[tuple[str, str], Tensor]:
    """One layer's gates and states over a window (its steps' caches), as the monitor shows them:
    ``("saturation", name)`` the share of units of a sigmoid or tanh activation that are
    saturated, ``("mean", name)`` a sigmoid gate's mean, ``("norm", name)`` a state's norm
    (mean over steps and streams)."""
    c = get_cell(cell)
    per_step = [c.activations(cache) for cache in caches]
    stats = {}
    for name, (kind, _) in per_step[0].items():
        v = torch.stack([step[name][1] for step in per_step]).detach()  # (T, B, H)
        if kind == "state":
            stats["norm", name] = v.norm(dim=-1).mean()
            continue
        level = (2 * v - 1) if kind == "sigmoid" else v
        stats["saturation", name] = (level.abs() > SATURATED).float().mean()
        if kind == "sigmoid":
            stats["mean", name] = v.mean()
    return stats


def hidden_gradients(inputs: Tensor, targets: Tensor, state: tuple, layers, W_hy, b_y, cell="tanh"):
    """How the gradient fades or explodes through time, for one window, in every layer.

    Returns the mean over streams of ||dL/dh_t|| for the whole window's loss L, the same for the
    last character's loss alone (how far back one prediction reaches), both (L, T), every
    layer's states (L, T, B, H), and every layer's ``activation_statistics``.
    """
    with torch.enable_grad():
        leaves = [{k: v.detach().requires_grad_() for k, v in p.items()} for p in layers]
        state = tuple(s.detach() for s in state)
        every_h, _, tape = run_layers(inputs, state, leaves, cell, keep_tape=True)
        steps = [h_t for entry in tape for h_t in entry[4]]  # every layer's h_t, as the recurrence used them
        logits = (every_h[-1] @ W_hy.detach() + b_y.detach()).transpose(0, 1)  # (B, T, V)
        dL = torch.autograd.grad(cross_entropy(logits, targets), steps, retain_graph=True)
        dlast = torch.autograd.grad(cross_entropy(logits[:, -1:], targets[:, -1:]), steps, allow_unused=True)
    L, T = len(layers), inputs.shape[1]
    norms = torch.stack([d.norm(dim=-1).mean() for d in dL]).view(L, T)
    last = torch.stack([d.norm(dim=-1).mean() if d is not None else norms.new_zeros(()) for d in dlast]).view(
        L, T
    )
    stats = [activation_statistics(entry[3], cell) for entry in tape]
    return norms, last, torch.stack([h.detach() for h in every_h]), stats
