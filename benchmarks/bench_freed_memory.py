"""What ``keep_freed_memory`` (torch_charrnn/rnn/memory.py, which ``charrnn fit`` calls) does
to a training step: its time, its page faults and the process's peak resident memory, for the
hand-written step (``manual``) and PyTorch's own module (``nn.*``), with glibc's malloc as it comes
(``plain``) and told to keep what a step frees (``kept``).

An allocator's state belongs to a process, so every measurement is a fresh process running one
variant alone (as ``charrnn fit`` runs), for about ``--seconds`` after 3 warm-up steps; variants
alternate round by round and each figure is the median over rounds. The step is bench_train.py's:
one-hot input, norm clipping, Adagrad, random windows.

    python benchmarks/bench_freed_memory.py        # the LSTM at B32 T64 H256 and B128 T100 H512
    python benchmarks/bench_freed_memory.py --cells tanh gru lstm --rounds 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from bench_train import CONFIGS, GATED_CONFIGS
from harness import CELLS, module_of

MODES = ("plain", "kept")


def child(mode: str, cell: str, kind: str, B: int, T: int, H: int, L: int, seconds: float) -> None:
    """One variant in this process: prints ms a step, page faults a step and peak RSS as JSON."""
    from bench_train import Step

    from torch_charrnn.rnn.memory import keep_freed_memory

    kept = keep_freed_memory() if mode == "kept" else False
    step = Step(cell, kind, B, T, H, L, "cpu", "fp32")
    for _ in range(3):
        step()
    start = time.perf_counter()
    step()
    n = max(5, round(seconds / (time.perf_counter() - start)))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(n):
        step()
    ms = (time.perf_counter() - start) / n * 1e3
    usage = resource.getrusage(resource.RUSAGE_SELF)
    faults = (usage.ru_minflt - faults) / n
    print(json.dumps({"kept": kept, "ms": ms, "faults": faults, "rss": usage.ru_maxrss / 1024}))


def measure(mode, cell, kind, B, T, H, L, seconds) -> dict:
    command = [sys.executable, __file__, "--child", mode, cell, kind, *map(str, (B, T, H, L, seconds))]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.splitlines()[-1])
    if result["kept"] != (mode == "kept"):
        raise SystemExit(f"{mode}: keep_freed_memory did not apply here (not glibc, or MALLOC_* set)")
    return result


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        mode, cell, kind, B, T, H, L, seconds = sys.argv[2:]
        child(mode, cell, kind, int(B), int(T), int(H), int(L), float(seconds))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="*", default=["lstm"], choices=CELLS)
    parser.add_argument(
        "--configs", nargs="*", default=["B32 T64 H256", "B128 T100 H512"], choices=GATED_CONFIGS
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    args = parser.parse_args()
    variants = [
        (cell, kind, config)
        for config in args.configs
        for cell in args.cells
        for kind in ("manual", f"nn.{module_of(cell)}")
    ]
    results = {(v, mode): [] for v in variants for mode in MODES}
    for r in range(args.rounds):
        for v in variants:
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                results[v, mode].append(measure(mode, v[0], v[1], *CONFIGS[v[2]], args.seconds))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    def med(v, mode, key):
        return statistics.median(x[key] for x in results[v, mode])

    print(
        "| cell | config | step | ms plain | ms kept | time saved | faults/step plain | kept "
        "| peak RSS MiB plain | kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        cell, kind, config = v
        plain, kept = med(v, "plain", "ms"), med(v, "kept", "ms")
        spread = [p["ms"] / k["ms"] for p, k in zip(results[v, "plain"], results[v, "kept"], strict=True)]
        print(
            f"| {cell} | {config} | {kind} | {plain:.1f} | {kept:.1f} | {1 - kept / plain:+.0%} "
            f"(rounds {min(spread):.2f}x to {max(spread):.2f}x) | {med(v, 'plain', 'faults'):,.0f} | "
            f"{med(v, 'kept', 'faults'):,.0f} | {med(v, 'plain', 'rss'):,.0f} | "
            f"{med(v, 'kept', 'rss'):,.0f} |"
        )


if __name__ == "__main__":
    main()
