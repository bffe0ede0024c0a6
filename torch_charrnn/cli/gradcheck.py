"""``charrnn gradcheck``: the gradient oracle (``torch_charrnn/oracle.py``) on a random problem of
the size asked, as a table; exits 1 when any gradient disagrees beyond tolerance."""

from __future__ import annotations

from torch_charrnn.cli.parser import Parser
from torch_charrnn.oracle import Row, gradcheck
from torch_charrnn.rnn.cells import CELLS, get_cell


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
    parser = Parser(
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
