"""Gradient clipping and optimizers in NumPy, each PyTorch's formula exactly (tested step for step
against ``torch.nn.utils`` and ``torch.optim``).

Every function works on the nested parameters of ``reference_numpy.rnn`` through their
state-dict names (``named_arrays``); an optimizer's ``state`` is a dict it fills on first use.
"""

from __future__ import annotations

import numpy as np

from reference_numpy.rnn import named_arrays


def global_norm(grads):
    """The L2 norm of all parameter gradients together (the state's excluded)."""
    return float(np.sqrt(sum(float((g**2).sum()) for g in named_arrays(grads).values())))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place by one factor, torch.nn.utils.clip_grad_norm_'s formula.

    Returns the total norm before clipping.
    """
    total_norm = global_norm(grads)
    coef = max_norm / (total_norm + 1e-6)
    if coef < 1.0:
        for g in named_arrays(grads).values():
            g *= coef
    return total_norm


def clip_grads(grads, algorithm, clip_val):
    """Clip in place by ``norm`` (global L2 norm) or ``value`` (element-wise), Lightning's two
    ``gradient_clip_algorithm`` values. Returns whether clipping changed anything."""
    if algorithm == "norm":
        return clip_val / (clip_grad_norm(grads, clip_val) + 1e-6) < 1.0
    if algorithm == "value":
        clipped = any(np.abs(g).max() > clip_val for g in named_arrays(grads).values())
        clip_grad_value(grads, clip_val)
        return clipped
    raise ValueError(f"clip algorithm must be 'norm' or 'value', got {algorithm!r}")


def clip_grad_value(grads, clip_value):
    """Clamp each gradient element to [-clip_value, clip_value], torch.nn.utils.clip_grad_value_."""
    for g in named_arrays(grads).values():
        np.clip(g, -clip_value, clip_value, out=g)


def adagrad_step(params, grads, state, lr, eps=1e-10):
    """One Adagrad update in place, torch.optim.Adagrad's formula (eps outside the sqrt).

    ``state`` maps each state-dict name to its running sum of squares (created at zero).
    """
    named_grads = named_arrays(grads)
    for name, p in named_arrays(params).items():
        g = named_grads[name]
        s = state.setdefault(name, np.zeros_like(p))
        s += g * g
        p -= lr * g / (np.sqrt(s) + eps)


def adam_step(params, grads, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """One Adam update in place, torch.optim.Adam's default formula: bias-corrected moments,
    eps added to sqrt(v) / sqrt(1 - beta2^t) (outside the square root), no weight decay."""
    beta1, beta2 = betas
    state["step"] = t = state.get("step", 0) + 1
    named_grads = named_arrays(grads)
    for name, p in named_arrays(params).items():
        g = named_grads[name]
        m, v = state.setdefault(name, (np.zeros_like(p), np.zeros_like(p)))
        m *= beta1
        m += (1 - beta1) * g  # first moment
        v *= beta2
        v += (1 - beta2) * g * g  # second moment
        denom = np.sqrt(v) / np.sqrt(1 - beta2**t) + eps
        p -= lr / (1 - beta1**t) * m / denom


def rmsprop_step(params, grads, state, lr=1e-2, alpha=0.99, eps=1e-8):
    """One RMSprop update in place, torch.optim.RMSprop's default formula (not centered, no
    momentum): eps added outside the square root of the running mean of g*g."""
    named_grads = named_arrays(grads)
    for name, p in named_arrays(params).items():
        g = named_grads[name]
        s = state.setdefault(name, np.zeros_like(p))
        s *= alpha
        s += (1 - alpha) * g * g
        p -= lr * g / (np.sqrt(s) + eps)


def warmup_cosine(step, total_steps, warmup_steps=0, final_lr_ratio=0.0):
    """The factor on the base learning rate at ``step`` (0-based): linear warmup, then half a cosine
    down to ``final_lr_ratio`` at ``total_steps`` (``torch_charrnn.training.schedules.WarmupCosine``'s)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + np.cos(np.pi * progress))
