"""The gradient oracle: both hand-written BPTTs, NumPy's and torch's (the code that trains), against
torch autograd and central finite differences, for any cell and depth (``charrnn gradcheck`` prints
it; the tests hold every cell to it).

Everything runs in float64 with unclipped gradients. Against autograd the computations are the
same arithmetic, so they must agree to rounding; against central differences they agree to the
truncation error of the difference quotient.

The one module of the package that imports ``reference_numpy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import reference_numpy as rn
from torch_charrnn.rnn.bptt import (
    cross_entropy,
    dropout_masks,
    forward_autograd,
    forward_manual,
    map_zones,
    zoneout_masks,
)
from torch_charrnn.rnn.cells import get_cell

TOLERANCES = {"autograd": (1e-9, 1e-12), "finite-diff": (1e-5, 1e-8)}  # (rtol, atol)


@dataclass
class Row:
    """One line of the table: a gradient of one hand-written BPTT compared with one oracle."""

    bptt: str
    oracle: str
    name: str
    max_abs: float
    max_rel: float
    ok: bool


def random_problem(vocab_size, hidden_size, batch_size, seq_len, scale, seed, cell="tanh", num_layers=1):
    """Parameters, an initial state, inputs and targets at ``scale``: 3 or more saturates the gates.

    Layer 0's input weights and every bias have std ``scale``; the weights that read h (W_hh, the
    W_xh of layers above, W_hy) have std ``scale / sqrt(H)`` so that ``scale`` is also their gain
    whatever the hidden size.
    """
    rng = np.random.default_rng(seed)
    H = hidden_size
    shapes = rn.init_params(vocab_size, H, rng, cell=cell, num_layers=num_layers)
    params = {
        "layers": [
            {
                k: rng.standard_normal(v.shape)
                * (scale if v.ndim == 1 or (l == 0 and k == "W_xh") else scale / H**0.5)
                for k, v in p.items()
            }
            for l, p in enumerate(shapes["layers"])
        ],
        "W_hy": rng.standard_normal((H, vocab_size)) * scale / H**0.5,
        "b_y": rng.standard_normal(vocab_size) * scale,
    }
    state = tuple(
        np.tanh(rng.standard_normal((num_layers, batch_size, H)) * scale) for _ in rn.get_cell(cell).STATE
    )
    inputs = rng.integers(0, vocab_size, (batch_size, seq_len))
    targets = rng.integers(0, vocab_size, (batch_size, seq_len))
    return params, state, inputs, targets


def torch_grads(params, inputs, targets, state, cell, forward, masks=None, zones=None) -> dict:
    """Gradients of the mean loss through ``forward`` (autograd or the manual BPTT), float64, by
    name; ``masks`` and ``zones``: dropout's and zoneout's, as NumPy arrays, or None."""
    layers = [{k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in params["layers"]]
    W_hy, b_y = (torch.tensor(params[k], requires_grad=True) for k in ("W_hy", "b_y"))
    state = tuple(torch.tensor(s, requires_grad=True) for s in state)
    masks = None if masks is None else [torch.from_numpy(m) for m in masks]
    zones = map_zones(zones, torch.from_numpy)
    logits, _ = forward(torch.as_tensor(inputs), state, layers, W_hy, b_y, get_cell(cell), masks, zones)
    cross_entropy(logits, torch.as_tensor(targets)).backward()
    named = {f"layers.{l}.{k}": v.grad.numpy() for l, p in enumerate(layers) for k, v in p.items()}
    return {
        **named,
        "W_hy": W_hy.grad.numpy(),
        "b_y": b_y.grad.numpy(),
        **rn.state_names([s.grad.numpy() for s in state], cell),
    }


def compare(bptt: str, oracle: str, name: str, got: np.ndarray, want: np.ndarray) -> Row:
    rtol, atol = TOLERANCES[oracle]
    checked = ~np.isnan(want)  # finite differences may be spot checks
    got, want = got[checked], want[checked]
    atol = atol * max(1.0, float(np.abs(want).max(initial=0.0)))  # exploding gradients scale the noise
    err = np.abs(got - want)
    rel = err / np.maximum(np.abs(want), atol)  # relative where the gradient is not ~0
    ok = bool(np.all(err <= atol + rtol * np.abs(want)))
    return Row(bptt, oracle, name, float(err.max(initial=0.0)), float(rel.max(initial=0.0)), ok)


def gradcheck(
    vocab_size: int = 5,
    hidden_size: int = 4,
    batch_size: int = 2,
    seq_len: int = 6,
    scale: float = 0.5,
    seed: int = 0,
    max_fd_checks: int = 500,
    cell: str = "tanh",
    num_layers: int = 1,
    dropout: float = 0.0,
    zoneout: float = 0.0,
    zoneout_c: float = 0.0,
) -> list[Row]:
    """Compare every gradient of NumPy's and torch's hand-written BPTT with both oracles.

    Finite differences check at most ``max_fd_checks`` randomly chosen entries of each tensor.
    With ``dropout`` p > 0, or ``zoneout``/``zoneout_c`` (h's and c's), every one of them runs the
    window under the same masks, drawn once (``bptt.dropout_masks``, ``bptt.zoneout_masks``, seeded
    by ``seed``).
    """
    params, state, inputs, targets = random_problem(
        vocab_size, hidden_size, batch_size, seq_len, scale, seed, cell, num_layers
    )
    shape, generator = (seq_len, batch_size, hidden_size), torch.Generator().manual_seed(seed)
    like = torch.zeros((), dtype=torch.float64)
    masks = zones = None
    if dropout > 0:
        masks = [m.numpy() for m in dropout_masks(dropout, shape, num_layers, generator, like)]
    rates = get_cell(cell).zoned(h=zoneout, c=zoneout_c).zoneout
    if rates:
        zones = map_zones(zoneout_masks(rates, shape, num_layers, generator, like), torch.Tensor.numpy)
    _, grads, _ = rn.loss_and_grads(params, inputs, targets, state, cell, masks, zones)
    hand = {
        "numpy": {**rn.named_arrays(grads), **rn.state_names(grads["state"], cell)},
        "torch": torch_grads(params, inputs, targets, state, cell, forward_manual, masks, zones),
    }
    rng = np.random.default_rng(seed + 1)
    sizes = {k: v.size for k, v in hand["numpy"].items()}
    picks = {k: rng.choice(n, size=min(n, max_fd_checks), replace=False) for k, n in sizes.items()}
    oracles = {
        "autograd": torch_grads(params, inputs, targets, state, cell, forward_autograd, masks, zones),
        "finite-diff": rn.numerical_grads(
            params, inputs, targets, state, cell, indices=picks, masks=masks, zones=zones
        ),
    }
    return [
        compare(b, o, k, got[k], want[k])
        for b, got in hand.items()
        for o, want in oracles.items()
        for k in got
    ]
