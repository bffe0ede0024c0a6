"""``charrnn gradcheck``: both hand-written BPTTs, NumPy's and torch's (the code that trains), against
torch autograd and central finite differences, for any cell and depth.

Everything runs in float64 with unclipped gradients. Against autograd the computations are the
same arithmetic, so they must agree to rounding; against central differences they agree to the
truncation error of the difference quotient.

The one module of the package that imports ``reference_numpy``: the checker and its command line.
"""

from __future__ import annotations

import argparse
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
from torch_charrnn.rnn.cells import CELLS, get_cell

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


def format_table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    header = f"{'bptt':<6} {'oracle':<12} {'gradient':<{width}} {'max abs error':>14} {'max rel error':>14}"
    lines = [f"{header}  verdict"]
    for r in rows:
        verdict = "ok" if r.ok else "MISMATCH"
        lines.append(
            f"{r.bptt:<6} {r.oracle:<12} {r.name:<{width}} {r.max_abs:>14.3e} {r.max_rel:>14.3e}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="charrnn gradcheck",
        description="Check both hand-written BPTTs, NumPy's and torch's (the one that trains), against "
        "torch autograd and finite differences (float64, unclipped), for every parameter of every layer "
        "and the initial state. Exits 1 when any gradient disagrees beyond tolerance.",
    )
    parser.add_argument(
        "--cell", choices=list(CELLS), default="tanh", help="the recurrent cell (default: tanh)"
    )
    parser.add_argument("--num_layers", type=int, default=1, help="L, layers stacked (default: 1)")
    parser.add_argument("--vocab_size", type=int, default=5, help="V (default: 5)")
    parser.add_argument("--hidden_size", type=int, default=4, help="H (default: 4)")
    parser.add_argument("--batch_size", type=int, default=2, help="B (default: 2)")
    parser.add_argument("--seq_len", type=int, default=6, help="T (default: 6)")
    parser.add_argument(
        "--scale",
        type=float,
        default=0.5,
        help="std of the random weights; 3 or more saturates the gates (default: 0.5)",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="dropout's p: every BPTT and oracle runs under the same masks, drawn once (default: 0)",
    )
    parser.add_argument(
        "--zoneout", type=float, default=0.0, help="zoneout's p on h, its masks as dropout's (default: 0)"
    )
    parser.add_argument(
        "--zoneout_c",
        type=float,
        default=0.0,
        help="zoneout's p on c, for the cells that carry one (default: 0)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max_fd_checks",
        type=int,
        default=500,
        help="finite-difference entries checked per tensor (default: 500)",
    )
    args = parser.parse_args(argv)
    for name in ("vocab_size", "hidden_size", "batch_size", "seq_len", "max_fd_checks", "num_layers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.scale < 0:
        parser.error(f"--scale must be non-negative, got {args.scale}")
    for name in ("dropout", "zoneout", "zoneout_c"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    if args.zoneout_c and "c" not in get_cell(args.cell).STATE:
        parser.error(f"--zoneout_c zones out c, and the {args.cell} cell carries none")
    rows = gradcheck(**vars(args))
    print(format_table(rows))
    bad = [f"{r.bptt}/{r.oracle}:{r.name}" for r in rows if not r.ok]
    summary = f"{len(rows) - len(bad)} of {len(rows)} gradients agree"
    print(f"\n{summary}" + (f"; disagreeing: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0
