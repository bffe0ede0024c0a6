"""Truncated BPTT over one window, for any cell and any depth, in torch.

Mirrored function by function, with the same names in the same order, by ``reference_numpy/bptt.py``
(whose docstring lists exactly where the two differ): ``run_layers`` (every layer over the window:
its input shares, then ``step_by_step``), the forward with the output layer (``forward_autograd``;
``ManualBPTT.forward``) and ``backward``, which walks the layers from the top (``through_dropout``,
then ``layer_backward``: the loop over time in ``loop_backward``, then the weight gradients of
``weight_grads.py``, one product each per window). Row vectors and time-major work (T, B, ...)
throughout. For each layer the input projection of the whole window comes first (a gather of W_xh
rows for layer 0, which reads characters; one matmul for a layer above, which reads h of the layer
below), then the recurrence alone in the time loop, one cell step at a time; the output projection
of the top layer is one matmul. Where torch calls an ``aten.*_backward`` kernel for speed, the
comment beside it gives the formula NumPy writes. On a CPU a cell with C++ kernels runs each
layer's loops there instead (``Tape.kernel``, ``cell.layer_forward``/``layer_backward``), with the
same results.

Two ways to differentiate it: ``forward_autograd`` lets autograd record the cell steps (the
oracle), and ``ManualBPTT`` runs the same forward with autograd off and walks the loops in reverse
through each cell's hand-written ``step_backward`` (the training path, ``bptt="manual"``). Weight
gradients are one matmul per window (an ``index_add_`` for the gathered rows), not per step.

    state: a tuple of (L, B, H) tensors, ``(h,)`` or ``(h, c)`` (the cell's STATE)
    layers: one dict of tensors per layer, {"W_xh", "W_hh", "b_h", ...}
    cell: the cell itself (``torch_charrnn.rnn.cells.get_cell``), resolved once by the caller
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_charrnn.rnn import native
from torch_charrnn.rnn.cells import Cell
from torch_charrnn.rnn.products import product, window_product
from torch_charrnn.rnn.weight_grads import recurrent_weight_grad

LN2 = math.log(2.0)


class Tape(NamedTuple):
    """What the backward pass reads of one layer's forward pass over a window. The layer ran one of
    two loops: the pure-torch loop, step by step (``caches`` and ``steps``), or its cell's C++
    kernels (``kernel``); the fields of the other loop are None."""

    below: Tensor  # the layer's input: indices (T, B) for layer 0, the layer below's h (T, B, H)
    h0: Tensor  # its initial h (B, H)
    hs: Tensor  # h_t of every step (T, B, H)
    mask: Tensor | None  # the dropout mask on the h it passes on (T, B, H), scaled; None without dropout
    caches: list | None  # each step's cache, in order, as its ``step_backward`` reads it
    steps: list | None  # torch only: each h_t as the next step read it, for the monitor's autograd.grad
    kernel: tuple | None = None  # torch only: what the cell's ``layer_forward`` kept for ``layer_backward``
    share: object = None  # what the input shares kept for their backward (a normalised cell's LN)
    zone: tuple | None = None  # zoneout's keep masks or rate for each state (``layer_zone``); None: none


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood in nats over every (stream, step) position."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def run_layers(inputs: Tensor, state: tuple, layers: list[dict], cell: Cell, masks=None, zones=None):
    """Every layer over a window of indices (B, T) from ``state``: the top layer's h (T, B, H),
    the last state (a tuple of (L, B, H)) and each layer's Tape.

    ``masks``: None, or one inverted-dropout mask (T, B, H) per layer (``dropout_masks``), which
    multiplies the h that layer passes on, to the layer above or, from the top, to the output
    layer; the recurrence itself is never dropped.

    ``zones``: zoneout's masks in training, one tuple per layer like the state, each (T, B, H), 1
    where a unit keeps its previous value (``zoneout_masks``), or None for a state not zoned; None
    (evaluation): the cell's own rates (``cell.zoneout``), by which each state moves in expectation."""
    x = inputs.t()  # (T, B), time-major
    below = x
    tape, last = [], []
    for l, p in enumerate(layers):
        s = tuple(st[l] for st in state)
        mask = None if masks is None else masks[l]
        zone = layer_zone(cell, zones, l)
        ops = None if cell.layer_forward is None else native.usable(p["W_hh"])
        if ops is not None:  # the same loop in C++, from the layer's input as it comes
            hs, s, kernel = cell.layer_forward(ops, below, s, p, native.zone_args(zone, s[0]))
            tape.append(Tape(below, state[0][l], hs, mask, None, None, kernel, zone=zone))
        else:
            a, kept = cell.input_share(below, p)  # (T, B, G*H): characters' rows gathered, or one matmul
            hs, s, caches, steps = step_by_step(a, s, p, cell, zone)
            tape.append(Tape(below, state[0][l], hs, mask, caches, steps, share=kept, zone=zone))
        last.append(s)
        below = hs if mask is None else hs * mask  # dropout on what it passes on
    state_last = tuple(torch.stack([s[k] for s in last]) for k in range(len(cell.STATE)))  # each (L, B, H)
    return below, state_last, tape


def layer_zone(cell: Cell, zones, l: int) -> tuple | None:
    """Layer l's zoneout, a tuple like the state: each state's keep masks (T, B, H) in training,
    its rate p in evaluation (the expectation), or None where it is not zoned; None for none at all."""
    zone = zones[l] if zones is not None else tuple(p or None for p in cell.zoneout)
    return zone if any(z is not None for z in zone) else None


def zoned(prev: Tensor, fresh: Tensor, keep, out=None) -> Tensor:
    """Zoneout of one state at one step: m * prev + (1 - m) * fresh, with m the step's keep mask
    (B, H) (exact where a unit keeps its value) or, in evaluation, the rate p."""
    return torch.lerp(fresh, prev, keep, out=out)


def through_zoneout(ds: tuple, keep: tuple) -> tuple[tuple, tuple]:
    """Backprop through one step's zoneout, the state carried being m * prev + (1 - m) * fresh:
    dL/dfresh = (1 - m) * ds, for the cell's step, and m * ds straight into the previous state
    (None where a state is not zoned)."""
    fresh = tuple(d if m is None else d * (1 - m) for d, m in zip(ds, keep, strict=True))
    around = tuple(None if m is None else d * m for d, m in zip(ds, keep, strict=True))
    return fresh, around


def at_step(zone: tuple, t: int) -> tuple:
    """Each state's keep mask at step t (B, H), or its rate, or None."""
    return tuple(z[t] if isinstance(z, Tensor) else z for z in zone)


def step_by_step(a: Tensor, s: tuple, p: dict, cell: Cell, zone: tuple | None = None):
    """One layer's recurrence in torch, a cell step at a time, from its input shares a (T, B, G*H):
    h of every step (T, B, H), the last state, each step's cache and each step's h as read next.
    ``zone``: the layer's zoneout (``layer_zone``): each step's new state then moves to its zoned
    value, the cell's own (which its cache may hold) kept apart."""
    # With one gate block h_t overwrites the input share a_t its own step has consumed; with more,
    # h goes to a buffer of its own, contiguous, as the next step's matmul and backward's want it
    # (a view into a's first H columns ran the LSTM's recurrent matmul at half speed). Under
    # autograd, which cannot record out=, the states are stacked instead.
    H = s[0].shape[-1]
    hs = None if torch.is_grad_enabled() else a if cell.GATES == 1 else a.new_empty(a.shape[:-1] + (H,))
    caches, steps = [], []
    recur = product(p["W_hh"], a.shape[1])  # + h W_hh, its weight prepared once a window
    for t in range(a.shape[0]):  # the recurrence alone
        out = None if hs is None else hs[t]
        if zone is None:
            s, cache = cell.step(a[t], s, p, recur, out=out)
        else:  # the cell's new h to a tensor of its own where h is zoned into the window's buffer
            keep = at_step(zone, t)
            fresh, cache = cell.step(a[t], s, p, recur, out=out if keep[0] is None else None)
            outs = (out,) + (None,) * (len(s) - 1)
            s = tuple(
                f if m is None else zoned(prev, f, m, o)
                for prev, f, m, o in zip(s, fresh, keep, outs, strict=True)
            )
        caches.append(cache)
        steps.append(s[0])
    hs = torch.stack(steps) if hs is None else hs  # (T, B, H)
    return hs, s, caches, steps


def forward_autograd(inputs, state, layers, W_hy, b_y, cell: Cell, masks=None, zones=None):
    """Logits (B, T, V) and the last state, differentiated by autograd through every cell step."""
    top, state_last, _ = run_layers(inputs, state, layers, cell, masks, zones)
    logits = top @ W_hy + b_y  # (T, B, V)
    return logits.transpose(0, 1), state_last


def backward(layers, W_hy, dlogits, dstate_last, tape, cell: Cell):
    """Hand-written BPTT from dL/dlogits (B, T, V) and dL/d(last state): the gradients of every
    layer (a dict each), of W_hy and b_y, and of the initial state (a tuple like the state)."""
    top = tape[-1].hs if tape[-1].mask is None else tape[-1].hs * tape[-1].mask  # what the output read
    T, B, H = top.shape
    if dlogits is None:
        dlogits = top.new_zeros(B, T, W_hy.shape[1])
    dy = dlogits.transpose(0, 1).reshape(T * B, -1)  # (T*B, V), time-major like the tape
    dW_hy = top.reshape(T * B, H).t() @ dy  # (H, V)
    db_y = dy.sum(0)  # (V,)
    dhs = (dy @ W_hy.t()).view(T, B, H)  # the output's share of dL/dh_t
    layer_grads, dstate0 = [], []
    for l in reversed(range(len(layers))):
        p, layer = layers[l], tape[l]
        if layer.mask is not None:
            dhs = through_dropout(dhs, layer.mask)
        last = tuple(None if d is None else d[l] for d in dstate_last)  # from after the window
        if layer.kernel is not None:  # the cell's C++ loop, which forms every gradient of the layer
            last = tuple(torch.zeros_like(layer.h0) if d is None else d for d in last)
            zones = native.zone_args(layer.zone, layer.h0)
            dP, dstate, grads = cell.layer_backward(native.kernels(), dhs, last, layer, p, zones)
        else:
            dP, dstate, grads = layer_backward(dhs, last, layer, p, cell)
        if l > 0:
            dhs = window_product(dP, p["W_xh"], transposed=True)  # backprop into the layer below's h
        layer_grads.insert(0, grads)
        dstate0.insert(0, dstate)
    state = tuple(torch.stack([d[k] for d in dstate0]) for k in range(len(cell.STATE)))
    return layer_grads, dW_hy, db_y, state


def through_dropout(dh: Tensor, mask: Tensor) -> Tensor:
    """Backprop through dropout, the h passed on being h * m: d(h * m)/dh = m, the same mask."""
    return dh * mask


def layer_backward(dhs, last, tape: Tape, p: dict, cell: Cell):
    """One layer's hand-written BPTT in torch, in the shape of a cell's C++ ``layer_backward``:
    dL/d(x W_xh) (T, B, G*H), the product of the layer's input (dL/da itself where a = x W_xh +
    b_h), the initial state's gradient and every parameter gradient of the layer. The loop over time
    first (``loop_backward``), then each weight gradient in one product."""
    dA, dU, dstate, own = loop_backward(dhs, last, tape, p, cell)
    dP, input_grads = cell.input_share_backward(dA, tape.below, tape.share, p, None)
    grads = {
        **input_grads,
        "W_hh": recurrent_weight_grad(tape.h0, tape.hs, dU, None),
        **cell.extra_grads(dA, dU, p),
        **own,
    }
    return dP, dstate, grads


def loop_backward(dhs, last, tape: Tape, p: dict, cell: Cell):
    """One layer's hand-written BPTT, step by step through the cell's ``step_backward``, from dhs
    (T, B, H), each h_t's gradient from above, and ``last``, the last state's from after the window
    (None where there is none): dL/da (T, B, G*H), dL/du (dL/da itself where a cell adds a and u),
    the gradient of the initial state (a tuple) and the steps' shares of the gradients of the
    parameters they read, added up (a dict, empty for most cells). With one gate block, dL/da
    overwrites dhs."""
    T, B, H = dhs.shape
    caches = tape.caches
    back = product(p["W_hh"].t(), B)  # du W_hhᵀ, its weight prepared once a window
    dh = dhs[-1]  # dL/dh_t whole, from t = T - 1 down
    if last[0] is not None:
        dh += last[0]  # a gradient into the last h, from after the window
    rest = tuple(torch.zeros_like(tape.h0) if d is None else d for d in last[1:])
    # dL/da_t; with one gate block, written over dL/dh_t (its share from above, read by then)
    dA = dhs if cell.GATES == 1 else dhs.new_empty(T, B, p["W_hh"].shape[1])
    dU = None  # dL/du_t: dA itself where a cell adds a and u
    own = {}  # the steps' shares of their parameters' gradients, added up
    for t in reversed(range(T)):
        ds, around = (dh, *rest), None
        if tape.zone is not None:
            ds, around = through_zoneout(ds, at_step(tape.zone, t))
        da, du, direct, *shares = cell.step_backward(ds, caches[t], p, dA[t])
        for name, g in (shares[0] if shares else {}).items():
            own[name] = g if name not in own else own[name].add_(g)
        if du is not da:
            dU = torch.empty_like(dA) if dU is None else dU
            dU[t] = du
        # backprop into h_{t-1} through u = h_{t-1} W_hh, plus its share from above: NumPy adds the
        # product into dhs[t - 1] in place, torch makes a new tensor (oneDNN's has no out=)
        dh = back(du, dhs[t - 1] if t > 0 else None)
        if direct[0] is not None:
            dh += direct[0]  # and around it (GRU's z * dh)
        rest = direct[1:]  # backprop into c_{t-1}
        if around is not None:  # and around the step, where zoneout kept the previous state
            dh = dh if around[0] is None else dh.add_(around[0])
            rest = tuple(r if d is None else r + d for r, d in zip(rest, around[1:], strict=True))
    return dA, dA if dU is None else dU, (dh, *rest), own


class ManualBPTT(torch.autograd.Function):
    """The forward of ``forward_autograd`` with its backward pass written by hand (``backward``).

    apply(cell, num_state, names, masks, zones, inputs, *state, *layer tensors (flattened by
    ``names``), W_hy, b_y) -> logits (B, T, V), *last state. ``masks`` and ``zones`` (dropout's and
    zoneout's, or None: see ``run_layers``) take no gradient.
    Nothing in it synchronises with the host, so it runs unchanged on CUDA.
    """

    @staticmethod
    def forward(ctx, cell, num_state, names, masks, zones, inputs, *tensors):
        state, layers, W_hy, b_y = unflatten(tensors, num_state, names)
        top, state_last, tape = run_layers(inputs, state, layers, cell, masks, zones)
        T, B, H = top.shape
        logits = torch.addmm(b_y, top.reshape(T * B, H), W_hy).view(T, B, -1)  # (T, B, V)
        ctx.cell, ctx.names, ctx.layers, ctx.tape, ctx.W_hy = cell, names, layers, tape, W_hy
        ctx.set_materialize_grads(False)
        return (logits.transpose(0, 1), *state_last)

    @staticmethod
    def backward(ctx, dlogits, *dstate_last):
        layer_grads, dW_hy, db_y, state = backward(
            ctx.layers, ctx.W_hy, dlogits, dstate_last, ctx.tape, ctx.cell
        )
        flat_layers = [g[name] for g in layer_grads for name in ctx.names]
        return (None, None, None, None, None, None, *state, *flat_layers, dW_hy, db_y)


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


def forward_manual(inputs, state, layers, W_hy, b_y, cell: Cell, masks=None, zones=None):
    """Same as ``forward_autograd``, through ``ManualBPTT``: logits (B, T, V) and the last state.

    Under autocast the whole window runs in the autocast dtype (as cuDNN's RNN does): the
    weights are cast once per window, and autograd casts their gradients back.
    """
    names, tensors = flatten(state, layers, W_hy, b_y)
    device = inputs.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            masks = None if masks is None else [m.to(dtype) for m in masks]
            zones = map_zones(zones, lambda m: m.to(dtype))
            casts = (t.to(dtype) for t in tensors)
            out = ManualBPTT.apply(cell, len(state), names, masks, zones, inputs, *casts)
    else:
        out = ManualBPTT.apply(cell, len(state), names, masks, zones, inputs, *tensors)
    return out[0], tuple(out[1:])


def dropout_masks(
    p: float, shape: tuple[int, ...], num_layers: int, generator: torch.Generator, like: Tensor
):
    """One inverted-dropout mask per layer, (T, B, H) each, for a window: 1 / (1 - p) where a unit
    is kept (probability 1 - p), 0 where it is dropped (``bernoulli``), drawn from ``generator`` (so
    a checkpoint's generator state replays them) and given ``like``'s device and dtype."""
    return list(bernoulli((num_layers, *shape), p, 0.0, 1.0 / (1.0 - p), generator, like).unbind(0))


def zoneout_masks(
    rates: tuple[float, ...], shape: tuple, num_layers: int, generator: torch.Generator, like: Tensor
):
    """Zoneout's keep masks for a window, one tuple per layer like the state (``rates``: each
    state's p, 0 for one not zoned): (T, B, H) each, 1 where a unit keeps its previous value
    (probability p), 0 where it takes the cell's new one, None for a state not zoned; drawn as
    ``dropout_masks``, after them, a state at a time."""
    full = (num_layers, *shape)
    drawn = [bernoulli(full, p, 1.0, 0.0, generator, like).unbind(0) if p else None for p in rates]
    return [tuple(None if m is None else m[l] for m in drawn) for l in range(num_layers)]


LANES = 65536  # a draw is 16 bits: probabilities in steps of 1 / 65536


def bernoulli(shape: tuple, p: float, hit: float, miss: float, generator: torch.Generator, like: Tensor):
    """A tensor of ``shape``, ``like``'s device and dtype, each value ``hit`` with probability p
    (to 1 / 65536) and ``miss`` otherwise, independently. On a CPU the values come from one seed the
    generator draws, four 16-bit draws from each 64-bit hash (``hashed_lanes``; the C++ kernels'
    ``csrc/masks.cpp`` where they are built, the same values): the generator's own draws, one at a
    time on one thread, took longer than the tanh cell's loop. On a GPU, its generator on the device."""
    if generator.device.type != "cpu" or like.device.type != "cpu":
        drawn = torch.rand(shape, generator=generator, device=generator.device) < p
        return torch.where(drawn.to(like.device), hit, miss).to(like.dtype)
    seed = int(torch.randint(2**62, (), generator=generator))
    threshold = round(p * LANES)
    ops = native.kernels()
    if ops is not None:
        return ops.bernoulli_masks(list(shape), like, seed, threshold, hit, miss)
    lanes = hashed_lanes(math.prod(shape), seed).view(shape)
    return torch.where(lanes < threshold, hit, miss).to(like.dtype)


def hashed_lanes(n: int, seed: int) -> Tensor:
    """n uniform 16-bit draws (int64, 0 to 65535) from ``seed``: lane i % 4 of splitmix64(seed +
    (i // 4 + 1) * 0x9E3779B97F4A7C15), in int64 arithmetic that wraps as uint64's does."""

    def signed(c: int) -> int:  # a uint64 constant as the int64 of the same bits
        return c - 2**64 if c >= 2**63 else c

    def shifted(z: Tensor, s: int) -> Tensor:  # z >> s as on a uint64 (logical)
        return (z >> s) & ((1 << (64 - s)) - 1)

    words = torch.arange(1, (n + 3) // 4 + 1, dtype=torch.int64)
    z = words * signed(0x9E3779B97F4A7C15) + signed(seed)
    z = (z ^ shifted(z, 30)) * signed(0xBF58476D1CE4E5B9)
    z = (z ^ shifted(z, 27)) * signed(0x94D049BB133111EB)
    z = z ^ shifted(z, 31)
    lanes = torch.stack([shifted(z, 16 * k) & 0xFFFF for k in range(4)], dim=-1)
    return lanes.reshape(-1)[:n]


def map_zones(zones, fn):
    """``fn`` of each of zoneout's masks (``zoneout_masks``), in the same structure; None for None."""
    return None if zones is None else [tuple(None if m is None else fn(m) for m in z) for z in zones]
