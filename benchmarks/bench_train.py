"""Training throughput, side by side in one process, for each cell: this project's step
(hand-written BPTT, the fused backend over PyTorch's kernels, and plain autograd), the hand-written
and fused steps through Lightning ``fit``, PyTorch's own module (``nn.RNN``/``nn.GRU``/``nn.LSTM``
+ ``nn.Linear``, one-hot input, the same layers, clipping and Adagrad, no dropout), and the NumPy
reference. The layer-normalised cells, which PyTorch has no module of, are set against the plain
cell's module and against themselves as PyTorch's users write them (``layernorm_loop.py``: a loop
of products and ``nn.LayerNorm`` through autograd, ``ln-loop``, and that loop in TorchScript,
``ln-loop+script``); the last column gives the hand-written step's ratio to the faster of the two.
With ``--zoneout p`` the hand-written step runs beside itself with zoneout p on h (and on c), its
masks drawn every window as in training (``manual+zoneout p``), and a table gives what it costs.

Variants alternate round by round and each figure is the median over rounds, so drift in the
machine's speed hits every variant alike; the ratio to PyTorch's module is also given round by
round (lowest to highest), each variant against the module's time in the same round. GFLOP/s
counts the model's own arithmetic (6·G·B·T·H²·(2L - 1) + 6·B·T·H·V per step, forward and
backward, G gate blocks, L layers) and is set against a matrix-product ceiling (a 2048³ float32
matmul, GPU: 8192³) measured in the same run. Peak memory is the extra resident memory of one
training step, measured in a fresh process per variant (CPU), or
``torch.cuda.max_memory_allocated`` (GPU).

Lightning's overhead is measured paired: within one ``Trainer.fit``, the bare step of the same
backend runs in blocks of 50 between Lightning's steps (``Paired``), so both see the same minute of
the machine; a second table gives each median step and their ratio. (Timed in separate rounds
instead, the ratio at B32 T50 ranged from -3% to +32% on this 2-core machine, whose speed drifts by
a third within a minute.) ``benchmarks/bench_overhead.py`` does the same for a whole ``charrnn fit`` run.

    python benchmarks/bench_train.py                      # every cell and config, CPU
    python benchmarks/bench_train.py --cells gru lstm     # only the gated cells
    python benchmarks/bench_train.py --cells lnlstm lngru --configs "B32 T64 H384 L2"  # LN, 5-minute shape
    python benchmarks/bench_train.py --configs "B32 T64 H384 L2" --zoneout 0.1 --no-memory --no-numpy \
        --no-autograd  # zoneout's cost a step, every cell (and c's too where a cell carries one)
    python benchmarks/bench_train.py --device cuda        # add --dtype bf16 for autocast (charrnn fit replays
                                                          # CUDA graphs there; bench_gpu.py has the rest)
    python benchmarks/bench_train.py --cells tanh --configs "B1 T1 H1" "B32 T50 H256" \
        --no-memory --no-numpy --no-autograd --rounds 9  # Lightning's cost a step, alone and at B32
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import statistics
import time
import warnings

import lightning as L
import numpy as np
import torch
from harness import (
    CELLS,
    BareStep,
    Paired,
    TorchRNN,
    V,
    module_of,
    quiet_trainer,
    random_windows,
    seconds_per_call,
    sync,
)
from layernorm_loop import LayerNormLoop

import reference_numpy as rn
from torch_charrnn import CharRNN
from torch_charrnn.rnn.cells import get_cell
from torch_charrnn.rnn.memory import keep_freed_memory

CONFIGS = {  # (B, T, H, layers)
    "B1 T1 H1": (1, 1, 1, 1),  # no arithmetic to speak of: Lightning's fixed cost a step
    "B1 T20 H75": (1, 20, 75, 1),
    "B32 T50 H256": (32, 50, 256, 1),
    "B32 T50 H256 L2": (32, 50, 256, 2),  # configs/tinyshakespeare.yaml's shape
    "B32 T64 H256": (32, 64, 256, 1),
    "B32 T64 H384 L2": (32, 64, 384, 2),  # the 5-minute GRU and LSTM configs' shape
    "B16 T64 H384 L2": (16, 64, 384, 2),  # smaller batches: more steps a minute
    "B8 T64 H384 L2": (8, 64, 384, 2),
    "B32 T50 H512": (32, 50, 512, 1),  # wider 5-minute candidates
    "B32 T64 H512": (32, 64, 512, 1),
    "B64 T100 H256": (64, 100, 256, 1),
    "B128 T100 H512": (128, 100, 512, 1),
}
# the tutorial's tiny B1 T20 H75 is for the tanh cell
GATED_CONFIGS = ["B32 T64 H256", "B32 T64 H384 L2", "B64 T100 H256", "B128 T100 H512"]
LR, CLIP = 0.01, 5.0
LN_LOOPS = ["ln-loop", "ln-loop+script"]  # a layer-normalised cell as PyTorch's users write it


def model_flops(cell, B, T, H, L=1):
    """Each layer's recurrent product, each layer above the first's input product (the first
    gathers its input's rows), and the output layer: forward and backward, 3 products each."""
    return 6 * rn.get_cell(cell).GATES * B * T * H * H * (2 * L - 1) + 6 * B * T * H * V


class Step:
    """One training step of a variant: forward, backward, clip, Adagrad, the state carried."""

    def __init__(self, cell, kind, B, T, H, L, device, dtype):
        self.cell, self.kind = cell, kind
        self.batches = random_windows(B, T, 8, device)
        self.k = 0
        if kind == "numpy":
            self.params = rn.init_params(V, H, np.random.default_rng(0), cell, num_layers=L, dtype=np.float32)
            self.sums = {}
            self.state = rn.zero_state(self.params, B, cell)
            self.batches = [(x.cpu().numpy(), y.cpu().numpy()) for x, y in self.batches]
            return
        if kind.startswith("nn."):
            self.module = TorchRNN(kind[3:], V, H, L).to(device)
        elif kind.startswith("ln-loop"):
            self.module = LayerNormLoop(cell, V, H, L, script=kind.endswith("script")).to(device)
            self.warm_up = kind.endswith("script")  # TorchScript profiles its first calls, then optimises
        elif kind.startswith("manual+zoneout"):  # "manual+zoneout p"
            p = float(kind.split()[-1])
            rates = {"zoneout": p, "zoneout_c": p if "c" in get_cell(cell).STATE else 0.0}
            self.module = CharRNN(V, H, cell, num_layers=L, bptt="manual", **rates).to(device)
        else:
            self.module = CharRNN(V, H, cell, num_layers=L, bptt=kind).to(device)
        optimizer = torch.optim.Adagrad(self.module.parameters(), lr=LR)
        self.step = BareStep(
            self.module, optimizer, CLIP, autocast=torch.bfloat16 if dtype == "bf16" else None
        )
        for _ in range(3 if getattr(self, "warm_up", False) else 0):
            self()

    def __call__(self):
        batch = self.batches[self.k % len(self.batches)]
        self.k += 1
        if self.kind == "numpy":
            x, y = batch
            _, grads, self.state = rn.loss_and_grads(self.params, x, y, self.state, self.cell)
            rn.clip_grad_norm(grads, CLIP)
            rn.adagrad_step(self.params, grads, self.sums, LR)
            return
        self.step(batch)


class RandomWindows(L.LightningDataModule):
    def __init__(self, B, T, n):
        super().__init__()
        self.windows = random_windows(B, T, n)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.windows, batch_size=None)


def time_lightning(cell, B, T, H, L, n, device, dtype, bare, bptt="manual"):
    """Median seconds per step of Trainer.fit, and of ``bare`` (the same step without Lightning)
    run in blocks between its steps in the same fit (``Paired``); set-up and the first steps excluded."""
    paired = Paired(lambda batch: bare(), block=max(1, min(50, n // 4)))
    steps = n + paired.skip + 1
    trainer = quiet_trainer(
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed" if dtype == "bf16" else "32-true",
        max_steps=steps,
        gradient_clip_val=CLIP,
        callbacks=[paired],
    )
    trainer.fit(CharRNN(V, H, cell, num_layers=L, lr=LR, bptt=bptt), RandomWindows(B, T, steps))
    lightning, bare_step, _, _ = paired.ratios()
    return lightning, bare_step


def matmul_ceiling(device, n):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    start = time.perf_counter()
    reps = 3 if device.type == "cpu" else 20
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _peak_child(cell, kind, B, T, H, L, device, dtype, queue):
    step = Step(cell, kind, B, T, H, L, torch.device(device), dtype)
    step()  # the optimizer state and every buffer exist from here on
    base = _rss_kib()
    for _ in range(2):
        step()
    queue.put((_hwm_kib() - base) / 1024)


def _status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _rss_kib():
    return _status("VmRSS:")


def _hwm_kib():
    return _status("VmHWM:")


def peak_memory_mib(cell, kind, B, T, H, L, device, dtype):
    """Extra memory one step needs at its peak beyond what stays allocated between steps (MiB)."""
    if device.type == "cuda":
        step = Step(cell, kind, B, T, H, L, device, dtype)
        step()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(cell, kind, B, T, H, L, "cpu", dtype, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", nargs="+", choices=["fp32", "bf16"], default=["fp32"], help="one table each, in turn"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cells", nargs="*", default=CELLS, choices=CELLS)
    parser.add_argument(
        "--configs",
        nargs="*",
        choices=CONFIGS,
        help="default: every config but B1 T1 H1, and for the gated cells only B32 T64, B64 and B128 "
        "(named configs run for every cell)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds each variant runs a round (default: 2 on a CPU, 0.5 on a GPU)",
    )
    parser.add_argument(
        "--zoneout", type=float, default=None, help="add the hand-written step with zoneout p on h and c"
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-numpy", action="store_true")
    parser.add_argument("--no-autograd", action="store_true")
    args = parser.parse_args()
    args.named_configs = args.configs is not None
    args.configs = args.configs or [c for c in CONFIGS if c != "B1 T1 H1"]
    warnings.filterwarnings("ignore")
    for i, dtype in enumerate(args.dtype):
        print("\n" if i else "", end="")
        table(args, dtype)


def table(args, dtype: str) -> None:
    """Every variant against PyTorch's module in ``dtype``, and Lightning's overhead, as tables."""
    device = torch.device(args.device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    kept = keep_freed_memory()  # as charrnn fit does, for every variant (memory is measured apart)
    print(
        f"torch {torch.__version__}, device {device} ({where}), {dtype}, {args.rounds} rounds, medians; "
        f"freed memory kept: {kept}\n"
    )
    print(
        "| cell | config | variant | chars/s | GFLOP/s | % of matmul ceiling | vs nn.* "
        "| vs nn.*, round by round | peak step memory (MiB) | vs the faster ln-loop |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    overheads, zoneout = [], []
    for cell in args.cells:
        module = f"nn.{module_of(cell)}"
        fused = get_cell(cell).FUSED is not None  # PyTorch has a module of this very cell
        kinds = ["manual"] + (["fused"] if fused else []) + ([] if args.no_autograd else ["autograd"])
        kinds += ["lightning"] + (["lightning+fused", module] if fused else [module, *LN_LOOPS])
        kinds += [] if args.zoneout is None else [f"manual+zoneout {args.zoneout}"]
        kinds += [] if args.no_numpy or dtype == "bf16" else ["numpy"]
        for name in args.configs:
            if cell != "tanh" and name not in GATED_CONFIGS and not args.named_configs:
                continue
            B, T, H, L = CONFIGS[name]
            budget = args.budget or (2.0 if device.type == "cpu" else 0.5)  # seconds a variant a round
            steps = {
                k: Step(cell, k, B, T, H, L, device, dtype)
                for k in kinds
                if k not in ("lightning", "lightning+fused")
            }
            per_step, missing = {}, {}
            for k, step in steps.items():
                try:
                    per_step[k] = seconds_per_call(step, 1, device)
                except RuntimeError as error:  # a kernel this machine lacks (oneDNN's bf16 LSTM on some CPUs)
                    missing[k] = str(error).splitlines()[0]
            run = [
                k for k in kinds if k not in missing and not (k == "lightning+fused" and "fused" in missing)
            ]
            for k, why in missing.items():
                print(f"| {cell} | {name} | {k} | not on this machine: {why} | | | | | | |", flush=True)
            n = {k: max(2, int(budget / max(t, 1e-6))) for k, t in per_step.items()}
            n["lightning"] = n["manual"]
            n["lightning+fused"] = n.get("fused", 0)
            times = {k: [] for k in run}
            paired_bare = {k: [] for k in run if k.startswith("lightning")}
            ceiling = []
            for _ in range(args.rounds):
                ceiling.append(matmul_ceiling(device, 2048 if device.type == "cpu" else 8192))
                for k in run:
                    if k.startswith("lightning"):
                        bptt = "fused" if k == "lightning+fused" else "manual"
                        lightning, bare = time_lightning(
                            cell, B, T, H, L, n[k], device, dtype, steps[bptt], bptt
                        )
                        times[k].append(lightning)
                        paired_bare[k].append(bare)
                    else:
                        times[k].append(seconds_per_call(steps[k], n[k], device))
            top = statistics.median(ceiling)
            ref = times.get(module, [math.nan] * args.rounds)  # nan where the module cannot run here
            loops = [k for k in LN_LOOPS if k in times]
            peer = min(loops, key=lambda k: statistics.median(times[k])) if loops else None
            for k in run:
                t = statistics.median(times[k])
                rounds = sorted(r / mine for r, mine in zip(ref, times[k], strict=True))
                gflops = model_flops(cell, B, T, H, L) / t / 1e9
                mem = (
                    ""
                    if args.no_memory or k in ("lightning", "lightning+fused")
                    else f"{peak_memory_mib(cell, k, B, T, H, L, device, dtype):.0f}"
                )
                vs = (
                    f"{statistics.median(ref) / t:.2f}x | {rounds[0]:.2f}x to {rounds[-1]:.2f}x"
                    if module in times
                    else "n/a | n/a"
                )
                by_hand = f"{statistics.median(times[peer]) / t:.2f}x" if peer else ""
                print(
                    f"| {cell} | {name} | {k} | {B * T / t:,.0f} | {gflops:.1f} | {100 * gflops / top:.0f}% "
                    f"| {vs} | {mem} | {by_hand} |",
                    flush=True,
                )
            print(f"| {cell} | {name} | matmul ceiling | | {top:.0f} | 100% | | | | |", flush=True)
            for k in (k for k in run if k.startswith("manual+zoneout")):
                rounds = sorted(100 * (z / m - 1) for z, m in zip(times[k], times["manual"], strict=True))
                zoned, plain = statistics.median(times[k]), statistics.median(times["manual"])
                zoneout.append(
                    f"| {cell} | {name} | {k.split()[-1]} | {plain * 1e3:.1f} | {zoned * 1e3:.1f} "
                    f"| {statistics.median(rounds):+.1f}% | {rounds[0]:+.1f}% to {rounds[-1]:+.1f}% |"
                )
            for k, bare in paired_bare.items():
                rounds = sorted(100 * (t / b - 1) for t, b in zip(times[k], bare, strict=True))
                lightning, bare = statistics.median(times[k]), statistics.median(bare)
                overheads.append(
                    f"| {cell} | {name} | {k} | {lightning * 1e3:.3f} | {bare * 1e3:.3f} "
                    f"| {(lightning - bare) * 1e3:.3f} | {100 * (lightning / bare - 1):+.1f}% "
                    f"| {rounds[0]:+.1f}% to {rounds[-1]:+.1f}% |"
                )
    print(
        "\nLightning's overhead: Trainer.fit against its bare step run between its steps in the same "
        "fit (medians over rounds)\n\n| cell | config | variant | Trainer.fit step (ms) | bare step (ms) "
        "| difference (ms) | overhead | overhead, round by round |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(overheads))
    if zoneout:
        print(
            "\nZoneout's cost: the hand-written step with zoneout p (on h, and on c where the cell carries "
            "one) against the same step without, in the same rounds (medians; the cost is the median of "
            "the rounds' ratios)\n\n| cell | config | p | manual step (ms) | with zoneout (ms) | cost "
            "| cost, round by round |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(zoneout))


if __name__ == "__main__":
    main()
