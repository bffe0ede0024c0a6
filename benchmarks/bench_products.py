"""A layer above the first's three window products, side by side in one process: forward, its
input shares x W_xh + b_h; backward, dL/dh of the layer below (dL/da W_xhᵀ) and W_xh's gradient
(sum_t x_tᵀ da_t). Each as ``addmm`` (ATen's BLAS) and as the hand-written BPTT makes it on a CPU
in float32: the first two through oneDNN's matmul (``products.window_product``), the third in C++
(``input_weight_grad``, csrc/weights.cpp). Variants alternate round by round; medians over rounds,
and each ratio's lowest and highest round.

    python benchmarks/bench_products.py                       # the 5-minute configs' shapes
    python benchmarks/bench_products.py --shapes "B32 T64 H512 G4" --rounds 9
"""

from __future__ import annotations

import argparse
import statistics

import torch
from harness import seconds_per_call

from torch_charrnn.rnn import native
from torch_charrnn.rnn.memory import keep_freed_memory
from torch_charrnn.rnn.products import onednn_runs, window_product

SHAPES = ["B32 T50 H256 G1", "B32 T64 H384 G3", "B32 T64 H384 G4"]  # tanh, GRU, LSTM configs


def pairs(shape: str, g: torch.Generator) -> dict:
    """Each product at ``shape`` ("B32 T64 H384 G4": G gate blocks): (addmm's, the BPTT's)."""
    B, T, H, G = (int(part[1:]) for part in shape.split())
    x, dA = torch.randn(T, B, H, generator=g), torch.randn(T, B, G * H, generator=g)
    W, b = torch.randn(H, G * H, generator=g), torch.randn(G * H, generator=g)
    x2, dA2 = x.view(T * B, H), dA.view(T * B, G * H)
    ops = native.kernels()
    return {
        "x W_xh + b_h": (lambda: torch.addmm(b, x2, W), lambda: window_product(x, W, b)),
        "dL/da W_xhᵀ": (lambda: dA2 @ W.t(), lambda: window_product(dA, W, transposed=True)),
        "sum_t x_tᵀ da_t": (
            lambda: x2.t() @ dA2,
            lambda: ops.input_weight_grad(x, [dA], native.column_parts(H)),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help='"B32 T64 H384 G4": G gate blocks')
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.3, help="seconds a variant a round")
    args = parser.parse_args()
    kept = keep_freed_memory()  # as charrnn fit does
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, float32; freed memory kept: {kept}\n")
    print("| shape | product | addmm (ms) | hand-written BPTT's (ms) | speed-up | round by round |")
    print("|---|---|---|---|---|---|")
    with torch.no_grad():
        runs = onednn_runs(torch.ones(1))
    if not runs:
        raise SystemExit("oneDNN's matmul does not run on this PyTorch: nothing to compare")
    g = torch.Generator().manual_seed(0)
    for shape in args.shapes:
        variants = pairs(shape, g)
        times = {(name, k): [] for name in variants for k in range(2)}
        with torch.no_grad():
            calls = {
                (name, k): max(2, int(args.budget / seconds_per_call(f, 1)))
                for name, fs in variants.items()
                for k, f in enumerate(fs)
            }
            for _ in range(args.rounds):
                for name, fs in variants.items():
                    for k, f in enumerate(fs):
                        times[name, k].append(seconds_per_call(f, calls[name, k]))
        for name in variants:
            plain, ours = times[name, 0], times[name, 1]
            rounds = sorted(p / o for p, o in zip(plain, ours, strict=True))
            p, o = statistics.median(plain), statistics.median(ours)
            print(
                f"| {shape} | {name} | {p * 1e3:.2f} | {o * 1e3:.2f} | {p / o:.2f}x "
                f"| {rounds[0]:.2f}x to {rounds[-1]:.2f}x |"
            )


if __name__ == "__main__":
    main()
