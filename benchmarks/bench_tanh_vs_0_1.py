"""The tanh cell's training step: release 0.1's tanh-only ManualBPTT against today's BPTT for any
cell, in one process, alternated round by round, medians. Release 0.1's file is read from git
history (``git show``), so this runs in a clone with its history.

    python benchmarks/bench_tanh_vs_0_1.py
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from harness import BareStep, V, random_windows

from torch_charrnn.rnn.bptt import forward_manual
from torch_charrnn.rnn.cells import get_cell

RELEASE_0_1 = "d99be8f"  # the last commit with torch_charrnn/rnn.py's tanh-only ManualBPTT
CONFIGS = {"B64 T100 H256": (64, 100, 256), "B128 T100 H512": (128, 100, 512)}
LR, CLIP = 0.01, 5.0


def load_release_0_1():
    root = Path(__file__).resolve().parents[1]
    source = subprocess.check_output(["git", "show", f"{RELEASE_0_1}:torch_charrnn/rnn.py"], cwd=root)
    path = Path(tempfile.mkdtemp()) / "rnn_0_1.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("rnn_0_1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_step(kind, B, T, H, old):
    g = torch.Generator().manual_seed(0)
    W_xh = (torch.randn(V, H, generator=g) * 0.01).requires_grad_()
    W_hh = (torch.eye(H) * 0.01).requires_grad_()
    b_h, b_y = torch.zeros(H, requires_grad=True), torch.zeros(V, requires_grad=True)
    W_hy = (torch.randn(H, V, generator=g) * 0.01).requires_grad_()
    params = [W_xh, W_hh, b_h, W_hy, b_y]
    tanh = get_cell("tanh")

    def release_0_1(x, state):
        h0 = torch.zeros(B, H) if state is None else state[0][0]
        logits, hs = old.rnn_forward_manual(x, h0, *params)
        return logits, (hs[:, -1][None],)

    def today(x, state):
        state = (torch.zeros(1, B, H),) if state is None else state
        return forward_manual(x, state, [dict(W_xh=W_xh, W_hh=W_hh, b_h=b_h)], W_hy, b_y, tanh)

    step = BareStep(release_0_1 if kind == "0.1" else today, torch.optim.Adagrad(params, lr=LR), CLIP)
    batches = random_windows(B, T, 4, seed=0)
    counter = iter(range(10**9))
    return lambda: step(batches[next(counter) % 4])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant per round")
    args = parser.parse_args()
    old = load_release_0_1()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, medians\n")
    print("| config | release 0.1 chars/s | today chars/s | today / 0.1 |")
    print("|---|---|---|---|")
    for name, (B, T, H) in CONFIGS.items():
        steps = {kind: make_step(kind, B, T, H, old) for kind in ("0.1", "today")}
        for s in steps.values():
            s()
        t0 = time.perf_counter()
        steps["today"]()
        n = max(2, int(args.seconds / (time.perf_counter() - t0)))
        times = {kind: [] for kind in steps}
        for _ in range(args.rounds):
            for kind, s in steps.items():
                start = time.perf_counter()
                for _ in range(n):
                    s()
                times[kind].append((time.perf_counter() - start) / n)
        old_t, new_t = statistics.median(times["0.1"]), statistics.median(times["today"])
        print(f"| {name} | {B * T / old_t:,.0f} | {B * T / new_t:,.0f} | {old_t / new_t:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
