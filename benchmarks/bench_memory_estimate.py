"""The memory estimate ``charrnn fit`` checks before training (torch_charrnn/rnn/memory.py)
against what a training process really holds at its peak, on a CPU.

Each configuration runs in a fresh process: the resident memory after the imports and the C++
kernels' loading is the base; the model, Adagrad and three hand-written BPTT steps (clipping
included) follow; the peak resident memory (VmHWM) minus the base is what the run held. Linux only.

    python benchmarks/bench_memory_estimate.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp

import torch
from harness import BareStep, V, random_windows

from torch_charrnn import CharRNN
from torch_charrnn.rnn import native
from torch_charrnn.rnn.cells import get_cell
from torch_charrnn.rnn.memory import MiB, footprint, keep_freed_memory

CONFIGS = {  # cell, H, L, B, T
    "tanh H256 B32 T64": ("tanh", 256, 1, 32, 64),
    "gru H512 L2 B64 T100": ("gru", 512, 2, 64, 100),
    "lstm H512 L2 B128 T100": ("lstm", 512, 2, 128, 100),
    "lstm H1024 L3 B64 T128": ("lstm", 1024, 3, 64, 128),
}


def _kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _held(config, queue) -> None:
    cell, H, L, B, T = config
    keep_freed_memory()  # as charrnn fit runs
    native.kernels()
    base = _kib("VmRSS:")
    torch.manual_seed(0)
    model = CharRNN(V, H, cell=cell, num_layers=L)
    step = BareStep(model, torch.optim.Adagrad(model.parameters(), lr=0.01))
    for batch in random_windows(B, T, 3):
        step(batch)
    queue.put((_kib("VmHWM:") - base) / 1024)


def held_mib(config) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_held, args=(config, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    print("| config | estimate (MiB) | held at the peak (MiB) | estimate / held |")
    print("|---|---|---|---|")
    for name in args.configs:
        cell, H, L, B, T = CONFIGS[name]
        estimate = footprint(get_cell(cell), V, H, L, B, T, optimizer_slots=1).total / MiB
        held = held_mib(CONFIGS[name])
        print(f"| {name} | {estimate:,.0f} | {held:,.0f} | {estimate / held:.2f} |", flush=True)


if __name__ == "__main__":
    main()
