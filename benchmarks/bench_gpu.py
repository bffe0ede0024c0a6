"""``charrnn fit``'s own path on a GPU against a bare PyTorch loop over ``nn.RNN``/``nn.GRU``/
``nn.LSTM`` (cuDNN), as the throughput of whole runs: the host is never made to wait for the
device inside the timed steps (``bench_train.py``'s paired timing syncs every step, which is fair
on a CPU and hides on a GPU the very overlap this measures).

Each variant trains ``--steps`` windows after ``--warmup`` (CUDA graphs are captured in the
first); the clock reads the device at the start of the first timed step and at the end of the
last. Variants alternate round by round; figures are medians over rounds.

    fit        Trainer.fit on CharRNN (bptt manual, CUDA graphs, the fused Adagrad, clip 5), its
               windows from a pinned loader, as charrnn fit runs it
    bare       the same replayed window, divergence check, clipping and optimizer step in a plain
               loop: fit / bare - 1 is Lightning's share of a step
    nn.*       nn.RNN/GRU/LSTM + nn.Linear on one-hot characters (the same model), torch.optim.Adagrad
               (its default implementation), clip_grad_norm_ 5, in a plain loop
    eager      (--context) fit with --model.cuda_graphs false: the step launched kernel by kernel
    fused      (--context) fit with --model.bptt fused: cuDNN's kernels through charrnn fit
    compiled   (--context) fit with --model.compile_steps true: each step's elementwise work
               compiled into a few kernels inside the graphs

    python benchmarks/bench_gpu.py                                  # the gated configs, fp32 and bf16
    python benchmarks/bench_gpu.py --configs "B50 T50 H512 L3" "B256 T128 H1024 L2"  # reported too
    python benchmarks/bench_gpu.py --device cpu --configs "B2 T8 H16 L1" --steps 3 --warmup 1 \
        --rounds 1                                                   # that it runs, anywhere
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import lightning as L
import torch
from harness import CELLS, BareStep, TorchRNN, V, module_of, quiet_trainer, random_windows, sync
from torch.utils.data import DataLoader

from torch_charrnn import CharRNN
from torch_charrnn.rnn.cells import get_cell
from torch_charrnn.training.graphs import CUDAGraph, EagerReplay, WindowGraphs
from torch_charrnn.training.guard import GradientGuard

CONFIGS = {  # B, T, H, layers
    "B64 T100 H256": (64, 100, 256, 1),
    "B128 T100 H512": (128, 100, 512, 1),
    "B50 T50 H512 L3": (50, 50, 512, 3),  # torch-rnn's large model
    "B256 T128 H1024 L2": (256, 128, 1024, 2),
    "B2 T8 H16 L1": (2, 8, 16, 1),  # that it runs
}
GATED = ["B64 T100 H256", "B128 T100 H512"]
LR, CLIP = 0.01, 5.0


class Windows(L.LightningDataModule):
    """Random windows from a pinned loader, copied to the device without a wait, as
    ``CharDataModule`` serves them on a GPU."""

    def __init__(self, windows, pin: bool):
        super().__init__()
        self.windows, self.pin = windows, pin

    def train_dataloader(self):
        return DataLoader(self.windows, batch_size=None, pin_memory=self.pin)


class Clock(L.Callback):
    """Reads the device at the start of step ``warmup`` and at the end of training."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        sync(pl_module.device)
        self.seconds = time.perf_counter() - self.start


def time_fit(cell, B, T, H, layers, device, dtype, steps, warmup, **model_args) -> tuple[float, float]:
    """Seconds a step of Trainer.fit, and the peak memory (MiB, GPU; 0 on a CPU)."""
    torch.manual_seed(0)
    clock = Clock(warmup)
    trainer = quiet_trainer(
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed" if dtype == "bf16" else "32-true",
        max_steps=warmup + steps,
        gradient_clip_val=CLIP,
        log_every_n_steps=50,
        callbacks=[clock],
    )
    model = CharRNN(V, H, cell, num_layers=layers, lr=LR, **model_args)
    windows = random_windows(B, T, warmup + steps)
    reset_peak(device)
    trainer.fit(model, Windows(windows, pin=device.type == "cuda"))
    return clock.seconds / steps, peak_mib(device)


def time_loop(step, windows, steps, warmup, device) -> tuple[float, float]:
    """Seconds a step of ``step(batch)`` in a plain loop, and the peak memory."""
    reset_peak(device)
    for batch in windows[:warmup]:
        step(batch)
    sync(device)
    start = time.perf_counter()
    for batch in windows[warmup : warmup + steps]:
        step(batch)
    sync(device)
    return (time.perf_counter() - start) / steps, peak_mib(device)


class BareReplay:
    """CharRNN's replayed window, its divergence check, clipping and optimizer step, no Lightning."""

    def __init__(self, cell, H, layers, device, dtype):
        torch.manual_seed(0)
        self.model = CharRNN(V, H, cell, num_layers=layers, lr=LR).to(device).train()
        graph = CUDAGraph if device.type == "cuda" else EagerReplay
        self.graphs = WindowGraphs(self.model, graph)
        self.optimizer = torch.optim.Adagrad(
            self.model.parameters(), lr=LR, fused=True if device.type == "cuda" else None
        )
        self.guard = GradientGuard()
        self.guard.start(self.optimizer, device)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        self.state, self.k = None, 0
        # what the guard reads of the module: which steps write metrics, as Trainer.fit's do
        self.module = SimpleNamespace(trainer=SimpleNamespace(log_every_n_steps=50, global_step=0))

    def __call__(self, batch):
        inputs, targets = batch
        state = self.state or self.model.initial_state(inputs.shape[0])
        with self.autocast:
            loss, last = self.graphs.run(inputs, targets, state, None)
        self.state = tuple(s.detach() for s in last)
        self.guard.check(self.optimizer, loss, self.k, CLIP)
        self.guard.clip(self.module, self.optimizer, CLIP, "norm")
        self.optimizer.step()
        self.k += 1
        self.module.trainer.global_step = self.k


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0


def main():
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--device", default="cuda")
    own = [c for c in CELLS if get_cell(c).FUSED is not None]  # the cells torch.nn has: the gate's
    parser.add_argument("--cells", nargs="+", default=own, choices=CELLS)
    parser.add_argument("--configs", nargs="+", default=GATED, choices=list(CONFIGS))
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=100, help="timed steps a run")
    parser.add_argument("--warmup", type=int, default=20, help="steps before the clock starts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--context", action="store_true", help="also fit kernel by kernel, and on cuDNN")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    # fp32 is fp32 on both sides: cuDNN's RNNs may use TF32 by default, cuBLAS's products do not
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    print(f"# charrnn fit against a bare nn.* loop: {name}, torch {torch.__version__}")
    print(
        f"# TF32: cuDNN {torch.backends.cudnn.allow_tf32}, cuBLAS {torch.backends.cuda.matmul.allow_tf32}, "
        f"float32 matmul precision {torch.get_float32_matmul_precision()}"
    )
    print(f"# {args.steps} timed steps after {args.warmup}, medians of {args.rounds} rounds\n")
    kinds = ["fit", "bare", "nn"] + (["eager", "fused", "compiled"] if args.context else [])
    header = "| cell | config | dtype | fit chars/s | nn.* chars/s | fit vs nn.* |"
    header += " eager vs nn.* | fused vs nn.* | compiled vs nn.* |" if args.context else ""
    header += " Lightning's share | peak MiB, fit / nn.* | gate |"
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    for dtype in args.dtype:
        for config in args.configs:
            B, T, H, layers = CONFIGS[config]
            for cell in args.cells:
                times = {k: [] for k in kinds}
                peaks = {k: [] for k in kinds}
                windows = random_windows(B, T, args.warmup + args.steps, device)
                here = [k for k in kinds if k != "fused" or get_cell(cell).FUSED is not None]
                for _ in range(args.rounds):
                    for kind in here:
                        seconds, peak = run(kind, cell, B, T, H, layers, device, dtype, windows, args)
                        times[kind].append(seconds)
                        peaks[kind].append(peak)
                t = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
                ratio = t["nn"] / t["fit"]
                bar = 1.5 if cell == "tanh" and config == "B128 T100 H512" else 1.0
                gate = f"≥ {bar}x: {'met' if ratio >= bar else 'missed'}" if config in GATED else "reported"
                row = f"| {cell} | {config} | {dtype} | {B * T / t['fit']:,.0f} | {B * T / t['nn']:,.0f} "
                row += f"| {ratio:.2f}x |"
                if args.context:
                    row += f" {t['nn'] / t['eager']:.2f}x | {t['nn'] / t['fused']:.2f}x "
                    row += f"| {t['nn'] / t['compiled']:.2f}x |"
                row += f" {100 * (t['fit'] / t['bare'] - 1):+.0f}% "
                row += f"| {max(peaks['fit']):,.0f} / {max(peaks['nn']):,.0f} | {gate} |"
                print(row, flush=True)


def run(kind, cell, B, T, H, layers, device, dtype, windows, args) -> tuple[float, float]:
    if kind in ("fit", "eager", "fused", "compiled"):
        model_args = {
            "cuda_graphs": kind != "eager",
            "bptt": "fused" if kind == "fused" else "manual",
            "compile_steps": kind == "compiled",
        }
        return time_fit(cell, B, T, H, layers, device, dtype, args.steps, args.warmup, **model_args)
    if kind == "bare":
        return time_loop(BareReplay(cell, H, layers, device, dtype), windows, args.steps, args.warmup, device)
    torch.manual_seed(0)
    module = TorchRNN(module_of(cell), V, H, layers).to(device)
    optimizer = torch.optim.Adagrad(module.parameters(), lr=LR)
    step = BareStep(module, optimizer, CLIP, autocast=torch.bfloat16 if dtype == "bf16" else None)
    return time_loop(step, windows, args.steps, args.warmup, device)


if __name__ == "__main__":
    main()
