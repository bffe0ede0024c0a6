"""Generation speed at H=256, batch 1 and batch 16: the torch sampler that ``charrnn sample``
uses against the NumPy reference's sampler, alternated round by round, medians.

    python benchmarks/bench_sample.py            # add --device cuda on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import reference_numpy as rn
from torch_charrnn.rnn import PARAM_NAMES, generate

V, H = 65, 256


def params_numpy():
    rng = np.random.default_rng(0)
    p = rn.init_params(V, H, rng, whh_scale=0.9, init_std=0.3, dtype=np.float32)
    p["W_hh"] += (rng.standard_normal((H, H)) * 0.05).astype(np.float32)
    return p


def torch_rate(params, B, length, device):
    g = torch.Generator(device).manual_seed(0)
    h, x = torch.zeros(B, H, device=device), torch.zeros(B, dtype=torch.long, device=device)
    start = time.perf_counter()
    text = []
    for chunk in generate(params, h, x, length, g):
        text.append(chunk.cpu())  # what a caller streaming text does: one copy per chunk
    return B * length / (time.perf_counter() - start)


def numpy_rate(params, B, length):
    rng = np.random.default_rng(0)
    h, x = np.zeros((B, H), np.float32), np.zeros(B, np.int64)
    start = time.perf_counter()
    rn.sample(params, h, x, length, rng)
    return B * length / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU, as charrnn sample sets")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    p_np = params_numpy()
    p_t = {k: torch.from_numpy(p_np[k]).to(args.device) for k in PARAM_NAMES}
    print(
        f"torch {torch.__version__}, device {args.device}, H={H}, V={V}, "
        f"{args.length} characters a run, {args.rounds} rounds, medians\n"
    )
    print("| batch | torch chars/s | NumPy chars/s | torch / NumPy |")
    print("|---|---|---|---|")
    for B in (1, 16):
        torch_rate(p_t, B, 300, args.device)  # warm-up
        rates = {"torch": [], "numpy": []}
        for _ in range(args.rounds):
            rates["torch"].append(torch_rate(p_t, B, args.length, args.device))
            rates["numpy"].append(numpy_rate(p_np, B, args.length))
        t, n = statistics.median(rates["torch"]), statistics.median(rates["numpy"])
        print(f"| {B} | {t:,.0f} | {n:,.0f} | {t / n:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
