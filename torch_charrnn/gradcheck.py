"""``charrnn gradcheck``: the NumPy hand-written BPTT against torch autograd and finite differences.

Everything runs in float64 with unclipped gradients. Against autograd the two computations are
the same arithmetic, so they must agree to rounding; against central differences they agree to
the truncation error of the difference quotient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import reference_numpy as rn
from torch_charrnn.rnn import PARAM_NAMES, cross_entropy, rnn_forward

TOLERANCES = {"autograd": (1e-9, 1e-12), "finite-diff": (1e-5, 1e-8)}  # (rtol, atol)


@dataclass
class Row:
    """One line of the table: a gradient of the NumPy BPTT compared with one oracle."""

    oracle: str
    name: str
    max_abs: float
    max_rel: float
    ok: bool


def random_problem(vocab_size, hidden_size, batch_size, seq_len, scale, seed):
    """Parameters, h0, inputs and targets at ``scale``: scale 3 or more saturates tanh.

    Input weights and biases have std ``scale``; W_hh and W_hy have std ``scale / sqrt(H)`` so
    that ``scale`` is also the gain of the recurrence whatever the hidden size.
    """
    rng = np.random.default_rng(seed)
    V, H = vocab_size, hidden_size
    shapes = {"W_xh": (V, H), "W_hh": (H, H), "b_h": (H,), "W_hy": (H, V), "b_y": (V,)}
    stds = {"W_xh": scale, "W_hh": scale / H**0.5, "b_h": scale, "W_hy": scale / H**0.5, "b_y": scale}
    params = {k: rng.standard_normal(s) * stds[k] for k, s in shapes.items()}
    h0 = np.tanh(rng.standard_normal((batch_size, H)) * scale)
    inputs = rng.integers(0, V, (batch_size, seq_len))
    targets = rng.integers(0, V, (batch_size, seq_len))
    return params, h0, inputs, targets


def autograd_grads(params, inputs, targets, h0) -> dict[str, np.ndarray]:
    """Gradients of the mean loss through torch autograd, float64."""
    leaves = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in {**params, "h0": h0}.items()
    }
    logits, _ = rnn_forward(torch.as_tensor(inputs), leaves["h0"], *(leaves[k] for k in PARAM_NAMES))
    cross_entropy(logits, torch.as_tensor(targets)).backward()
    return {k: v.grad.numpy() for k, v in leaves.items()}


def compare(oracle: str, name: str, got: np.ndarray, want: np.ndarray) -> Row:
    rtol, atol = TOLERANCES[oracle]
    checked = ~np.isnan(want)  # finite differences may be spot checks
    got, want = got[checked], want[checked]
    atol = atol * max(1.0, float(np.abs(want).max(initial=0.0)))  # exploding gradients scale the noise
    err = np.abs(got - want)
    rel = err / np.maximum(np.abs(want), atol)  # relative where the gradient is not ~0
    ok = bool(np.all(err <= atol + rtol * np.abs(want)))
    return Row(oracle, name, float(err.max(initial=0.0)), float(rel.max(initial=0.0)), ok)


def gradcheck(
    vocab_size: int = 5,
    hidden_size: int = 4,
    batch_size: int = 2,
    seq_len: int = 6,
    scale: float = 0.5,
    seed: int = 0,
    max_fd_checks: int = 500,
) -> list[Row]:
    """Compare every gradient of ``reference_numpy.loss_and_grads`` with both oracles.

    Finite differences check at most ``max_fd_checks`` randomly chosen entries of each tensor.
    """
    params, h0, inputs, targets = random_problem(vocab_size, hidden_size, batch_size, seq_len, scale, seed)
    _, grads, _ = rn.loss_and_grads(params, inputs, targets, h0)
    rng = np.random.default_rng(seed + 1)
    sizes = {k: v.size for k, v in {**params, "h0": h0}.items()}
    picks = {k: rng.choice(n, size=min(n, max_fd_checks), replace=False) for k, n in sizes.items()}
    oracles = {
        "autograd": autograd_grads(params, inputs, targets, h0),
        "finite-diff": rn.numerical_grads(params, inputs, targets, h0, indices=picks),
    }
    return [compare(o, k, grads[k], want[k]) for o, want in oracles.items() for k in (*PARAM_NAMES, "h0")]


def format_table(rows: list[Row]) -> str:
    lines = [f"{'oracle':<12} {'gradient':<8} {'max abs error':>14} {'max rel error':>14}  verdict"]
    for r in rows:
        verdict = "ok" if r.ok else "MISMATCH"
        lines.append(f"{r.oracle:<12} {r.name:<8} {r.max_abs:>14.3e} {r.max_rel:>14.3e}  {verdict}")
    return "\n".join(lines)
