"""The C++ kernels of two checkouts side by side in one process: each cell's loops over a window
(a two-layer stack's forward, and its backward with the weight gradients) and the dropout and
zoneout masks of a window (``bernoulli_masks``, both layers'), before and after a change to
``torch_charrnn/rnn/csrc``, on the same inputs, alternated round by round.

    git worktree add /tmp/before HEAD~1
    python benchmarks/bench_kernels.py --before /tmp/before --sizes 256 384 512

Two builds of the kernels cannot load into one process under one name (an op registers once), so
each checkout's ``csrc/`` is copied and built with its library renamed (``charrnn_before``,
``charrnn_after``). The Python around them, the cells' ``layer_forward`` and ``layer_backward``,
is this checkout's: what is measured is a change inside ``csrc/`` that keeps the ops' arguments.
A whole training step's speed against ``nn.*`` is ``bench_train.py``'s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

from torch_charrnn.rnn import native
from torch_charrnn.rnn.bptt import Tape
from torch_charrnn.rnn.cells import CELLS

CSRC = Path("torch_charrnn/rnn/csrc")
V, T = 65, 64  # the configs' vocabulary and window


def build(checkout: Path, tag: str, root: Path):
    """``checkout``'s kernels as ``torch.ops.charrnn_<tag>``."""
    where = root / tag
    where.mkdir(parents=True)
    for source in [*(checkout / CSRC).glob("*.h"), *(checkout / CSRC).glob("*.cpp")]:
        text = re.sub(r"\bnamespace charrnn\b", f"namespace charrnn_{tag}", source.read_text())
        text = text.replace("TORCH_LIBRARY_FRAGMENT(charrnn,", f"TORCH_LIBRARY_FRAGMENT(charrnn_{tag},")
        (where / source.name).write_text(text)
    (where / "build").mkdir()
    load(
        name=f"charrnn_{tag}",
        sources=[str(s) for s in sorted(where.glob("*.cpp"))],
        extra_cflags=native.build_flags(),
        extra_ldflags=native._openmp_flags(),
        build_directory=str(where / "build"),
        is_python_module=False,
    )
    return getattr(torch.ops, f"charrnn_{tag}")


def stack(cell, H: int, B: int, seed: int = 0):
    """A two-layer stack's weights, its inputs and the gradients from above, float32."""
    g = torch.Generator().manual_seed(seed)
    layers = [cell.init(V if l == 0 else H, H, g, first_layer=l == 0) for l in range(2)]
    state = tuple(0.5 * torch.randn(B, H, generator=g) for _ in cell.STATE)
    chars = torch.randint(0, V, (T, B), generator=g)
    above = torch.randn(T, B, H, generator=g)
    return layers, state, chars, above


def forward(ops, cell, layers, state, chars):
    """Both layers' loops; the tapes their backward reads."""
    below, tapes = chars, []
    for p in layers:
        hs, last, kept = cell.layer_forward(ops, below, state, p, [])
        tapes.append((Tape(below, state[0], hs, None, None, None, kept), last))
        below = hs
    return tapes


def backward(ops, cell, layers, tapes, above):
    """Both layers' backward loops and weight gradients, the top first, each from ``above`` (the
    product into the layer below is not the loops')."""
    for p, (tape, last) in zip(reversed(layers), reversed(tapes), strict=True):
        cell.layer_backward(ops, above, tuple(torch.zeros_like(s) for s in last), tape, p, [])


def milliseconds(fn, *args, budget: float = 0.3) -> float:
    """Mean milliseconds of ``fn(*args)`` over as many calls as fill ``budget`` seconds, after one."""
    fn(*args)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget:
        fn(*args)
        calls += 1
    return elapsed / calls * 1e3


def row(name: str, H: int, B: int, kernels: dict, rounds: int) -> list[str]:
    """The cell's row: each way's medians before and after, and the median of after / before
    round by round."""
    cell = CELLS[name]
    layers, state, chars, above = stack(cell, H, B)
    times = {(tag, way): [] for tag in kernels for way in ("forward", "backward")}
    for _ in range(rounds):
        for tag, ops in kernels.items():
            tapes = forward(ops, cell, layers, state, chars)
            times[tag, "forward"].append(milliseconds(forward, ops, cell, layers, state, chars))
            times[tag, "backward"].append(milliseconds(backward, ops, cell, layers, tapes, above))
    cells = [name, str(B), str(H)]
    for way in ("forward", "backward"):
        before, after = times["before", way], times["after", way]
        ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
        cells += [f"{statistics.median(before):.1f}", f"{statistics.median(after):.1f}", f"{ratio:.2f}x"]
    return cells


def masks_row(H: int, B: int, kernels: dict, rounds: int) -> list[str]:
    """The masks' row: a window's (two layers, T, B, H) keep masks at rate 0.1, as zoneout draws
    them every step; medians before and after, and the median of after / before."""
    shape, like = [2, T, B, H], torch.zeros(())
    times = {tag: [] for tag in kernels}
    for r in range(rounds):
        for tag, ops in kernels.items():
            times[tag].append(milliseconds(ops.bernoulli_masks, shape, like, r, 6554, 1.0, 0.0))
    before, after = times["before"], times["after"]
    ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
    return [
        str(B),
        str(H),
        f"{statistics.median(before):.2f}",
        f"{statistics.median(after):.2f}",
        f"{ratio:.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the commit before")
    parser.add_argument("--after", type=Path, default=Path("."), help="default: this checkout")
    parser.add_argument("--cells", nargs="*", default=[c for c in CELLS if CELLS[c].layer_forward])
    parser.add_argument("--sizes", nargs="*", type=int, default=[256, 384, 512])
    parser.add_argument("--batches", nargs="*", type=int, default=[32], help="B: the streams")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        checkouts = {"before": args.before, "after": args.after}
        kernels = {tag: build(checkout, tag, Path(root)) for tag, checkout in checkouts.items()}
        threads = torch.get_num_threads()
        print(f"T{T}, two layers, float32, {threads} threads; medians of {args.rounds} rounds\n")
        print("| cell | B | H | forward before (ms) | after | ratio | backward before (ms) | after | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for B in args.batches:
            for H in args.sizes:
                for name in args.cells:
                    print("| " + " | ".join(row(name, H, B, kernels, args.rounds)) + " |", flush=True)
        print("\n| masks | B | H | before (ms) | after | ratio |\n|---|---|---|---|---|---|")
        for B in args.batches:
            for H in args.sizes:
                print(
                    "| bernoulli_masks | " + " | ".join(masks_row(H, B, kernels, args.rounds)) + " |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
