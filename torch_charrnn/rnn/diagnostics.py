"""What the TensorBoard monitor shows of a window beyond its loss: how the gradient fades or
explodes through time in every layer, and what the cell's gates and states do."""

from __future__ import annotations

import torch
from torch import Tensor

from torch_charrnn.rnn.bptt import cross_entropy, run_layers
from torch_charrnn.rnn.cells import Cell

# |tanh| or |2σ - 1| above this: the derivative is under 2% of its peak, little gradient passes
SATURATED = 0.99


def activation_statistics(caches: list, cell: Cell) -> dict[tuple[str, str], Tensor]:
    """One layer's gates and states over a window (its steps' caches), as the monitor shows them:
    ``("saturation", name)`` the share of units of a sigmoid or tanh activation that are
    saturated, ``("mean", name)`` a sigmoid gate's mean, ``("norm", name)`` a state's norm
    (mean over steps and streams)."""
    per_step = [cell.activations(cache) for cache in caches]
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


def hidden_gradients(inputs: Tensor, targets: Tensor, state: tuple, layers, W_hy, b_y, cell: Cell):
    """How the gradient fades or explodes through time, for one window, in every layer.

    Returns the mean over streams of ||dL/dh_t|| for the whole window's loss L, the same for the
    last character's loss alone (how far back one prediction reaches), both (L, T), every
    layer's states (L, T, B, H), and every layer's ``activation_statistics``.
    """
    with torch.enable_grad():
        leaves = [{k: v.detach().requires_grad_() for k, v in p.items()} for p in layers]
        state = tuple(s.detach() for s in state)
        top, _, tape = run_layers(inputs, state, leaves, cell)
        # every layer's h_t, as the recurrence used them
        steps = [h_t for layer in tape for h_t in layer.steps]
        logits = (top @ W_hy.detach() + b_y.detach()).transpose(0, 1)  # (B, T, V)
        dL = torch.autograd.grad(cross_entropy(logits, targets), steps, retain_graph=True)
        dlast = torch.autograd.grad(cross_entropy(logits[:, -1:], targets[:, -1:]), steps, allow_unused=True)
    L, T = len(layers), inputs.shape[1]
    norms = torch.stack([d.norm(dim=-1).mean() for d in dL]).view(L, T)
    zero = norms.new_zeros(())
    last = torch.stack([d.norm(dim=-1).mean() if d is not None else zero for d in dlast]).view(L, T)
    stats = [activation_statistics(layer.caches, cell) for layer in tape]
    return norms, last, torch.stack([layer.hs.detach() for layer in tape]), stats
