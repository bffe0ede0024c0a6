"""Generation speed at H=256, batch 1 and batch 16, for each cell: the torch sampler that
``charrnn sample`` uses against the NumPy reference's sampler, alternated round by round, medians.

    python benchmarks/bench_sample.py            # add --device cuda on a GPU, --cells tanh for one
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import reference_numpy as rn
from torch_charrnn.inference.sampling import generate
from torch_charrnn.rnn.cells import get_cell

V, H = 65, 256


def params_numpy(cell):
    rng = np.random.default_rng(0)
    return rn.init_params(V, H, rng, cell, whh_scale=0.9, init_std=0.3, dtype=np.float32)


def torch_rate(weights, cell, B, length, device):
    g = torch.Generator(device).manual_seed(0)
    state = tuple(torch.zeros(1, B, H, device=device) for _ in rn.get_cell(cell).STATE)
    x = torch.zeros(B, dtype=torch.long, device=device)
    start = time.perf_counter()
    text = []
    for chunk in generate(weights, get_cell(cell), state, x, length, g):
        text.append(chunk.cpu())  # what a caller streaming text does: one copy per chunk
    return B * length / (time.perf_counter() - start)


def numpy_rate(params, cell, B, length):
    rng = np.random.default_rng(0)
    state, x = rn.zero_state(params, B, cell), np.zeros(B, np.int64)
    start = time.perf_counter()
    rn.sample(params, state, x, length, rng, cell)
    return B * length / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU, as charrnn sample sets")
    parser.add_argument("--cells", nargs="*", default=list(rn.CELLS), choices=list(rn.CELLS))
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, device {args.device}, H={H}, V={V}, "
        f"{args.length} characters a run, {args.rounds} rounds, medians\n"
    )
    print("| cell | batch | torch chars/s | NumPy chars/s | torch / NumPy |")
    print("|---|---|---|---|---|")
    for cell in args.cells:
        p_np = params_numpy(cell)
        p_t = {
            "layers": [
                {k: torch.from_numpy(v).to(args.device) for k, v in p.items()} for p in p_np["layers"]
            ],
            **{k: torch.from_numpy(p_np[k]).to(args.device) for k in ("W_hy", "b_y")},
        }
        for B in (1, 16):
            torch_rate(p_t, cell, B, 300, args.device)  # warm-up
            rates = {"torch": [], "numpy": []}
            for _ in range(args.rounds):
                rates["torch"].append(torch_rate(p_t, cell, B, args.length, args.device))
                rates["numpy"].append(numpy_rate(p_np, cell, B, args.length))
            t, n = statistics.median(rates["torch"]), statistics.median(rates["numpy"])
            print(f"| {cell} | {B} | {t:,.0f} | {n:,.0f} | {t / n:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
