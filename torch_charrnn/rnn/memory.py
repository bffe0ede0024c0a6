"""A run's memory, in one place: what it will hold, estimated before anything is allocated
(``footprint``); whether that fits the device (``require_memory``); and the memory a step frees,
kept by the process for the next step (``keep_freed_memory``).

The estimate (docs/design.md, "Memory"): the parameters, their gradients, the optimizer's state,
and one window's tape.

    bytes = s * (P * (4 + k)  +  B * T * (L * H * (c + 2 + d + z)  +  (L - 1) * H * k_a
                                           +  2 * G * H  +  3 * V))

s bytes a number (4 in float32); P parameters, held as the weights, their gradients, k slots of the
optimizer's state (Adagrad 1, Adam 2) and two parameter-sized temporaries (clipping's and the
optimizer's vectorised steps); B streams, T steps a window, L layers of H units, G gate blocks, V
symbols; c the numbers a cell's step keeps per unit for the backward pass (its cache: tanh 1, GRU
5, LSTM 8, counted from the cell's own ``step``), 2 the h each layer passes on and its gradient, d
1 with dropout (its mask) and 0 without; z 2 for each state zoned out (its mask, and the cell's own
new value kept beside the one carried); k_a what a layer above the first keeps of its input
shares (a layer-normalised cell's product before its normalisation, G; 0 for the others); 2 * G * H
a layer's input share and its gradient (one layer at a time); 3 * V the logits, their softmax and
their gradient. Shapes are counted on PyTorch's meta device: nothing is allocated.
``benchmarks/bench_memory_estimate.py`` measures it against what a CPU training process holds at
its peak.

Freed memory: PyTorch's CPU tensors come from the C library's ``malloc``. glibc's hands every block
of 32 MiB or more (less, until its threshold has grown) straight back to the operating system when
it is freed, and trims the top of its heap, so the next step's tape, the same size, comes back as
fresh pages: a page fault, and the page zeroed, for every 4 KiB, every step (what that costs a step:
docs/benchmarks.md, "Freed memory kept"). ``keep_freed_memory`` tells glibc to serve large blocks
from its heap and keep what is freed there (``mallopt``: no ``mmap`` for blocks, trim only past
1 GiB free), the effect jemalloc or tcmalloc have when preloaded, as PyTorch's CPU performance guide
suggests. The cost is memory held: the process keeps its peak, up to 1 GiB more than it uses between
steps. ``charrnn fit`` (validate, test, predict) calls it; a program that trains CharRNN in its own
loop may call it too. It does nothing elsewhere than glibc (macOS, musl), when the user tuned
``malloc`` themselves (any ``MALLOC_*`` variable, or ``GLIBC_TUNABLES``), or with
``CHARRNN_KEEP_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from torch_charrnn.errors import ConfigError
from torch_charrnn.rnn.cells import Cell
from torch_charrnn.rnn.products import plain_product, plain_window_product

MiB = 2**20


@dataclass(frozen=True)
class Footprint:
    """A run's memory by part, in bytes."""

    parameters: int  # how many (not bytes)
    weights: int  # the parameters and their gradients
    optimizer: int  # its state, and the temporaries of its step and of clipping
    window: int  # one window's tape, logits and the backward's working space

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.window

    def summary(self) -> str:
        """One line: the parameters and the MiB a training step holds, by part."""
        total, weights, optimizer, window = map(mib, (self.total, self.weights, self.optimizer, self.window))
        return (
            f"{self.parameters:,} parameters; a training step holds about {total} MiB (weights and "
            f"gradients {weights}, optimizer {optimizer}, the window's tape {window})"
        )


def mib(size: int) -> str:
    """``size`` bytes in MiB, to a tenth below 10."""
    return f"{size / MiB:,.1f}" if size < 10 * MiB else f"{size / MiB:,.0f}"


def parameter_count(cell: Cell, vocab_size: int, hidden_size: int, num_layers: int) -> int:
    """The model's parameters: each layer's as its cell makes them, and the output layer's."""
    V, H = vocab_size, hidden_size
    with torch.device("meta"):  # shapes only
        layers = [cell.init(V if l == 0 else H, H, None, first_layer=l == 0) for l in range(num_layers)]
    return sum(t.numel() for p in layers for t in p.values()) + H * V + V


def tensors_in(kept) -> list[torch.Tensor]:
    """Every tensor in what a step or an input share keeps, a tuple of tensors and tuples."""
    if isinstance(kept, torch.Tensor):
        return [kept]
    return [t for item in kept or () for t in tensors_in(item)]


def per_unit(kept, H: int) -> int:
    """The numbers ``kept`` holds per stream and unit, each tensor counted once."""
    distinct = {id(t): t for t in tensors_in(kept)}
    return sum(t.numel() for t in distinct.values()) // H


@functools.cache
def step_floats(cell: Cell) -> int:
    """The numbers a step of ``cell`` keeps for the backward pass, per stream and unit (its cache)."""
    H = 4
    with torch.device("meta"):
        p = cell.init(H, H, None, first_layer=False)
        state = tuple(torch.empty(1, H) for _ in cell.STATE)
        _, cache = cell.step(torch.empty(1, cell.GATES * H), state, p, plain_product(p["W_hh"]))
    return per_unit(cache, H)


@functools.cache
def share_floats(cell: Cell) -> int:
    """The numbers a layer above the first keeps of its input shares for their backward, per stream,
    step and unit (a layer-normalised cell's product before its normalisation; 0 for most cells)."""
    H = 4
    with torch.device("meta"):
        p = cell.init(H, H, None, first_layer=False)
        _, kept = cell.input_share(torch.empty(1, 1, H), p, plain_window_product)
    return per_unit(kept, H)


def footprint(
    cell: Cell,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    batch_size: int,
    seq_len: int,
    dropout: float = 0.0,
    optimizer_slots: float = 1.0,
    itemsize: int = 4,
) -> Footprint:
    """The module's formula for one training process."""
    V, H, L, B, T = vocab_size, hidden_size, num_layers, batch_size, seq_len
    P = parameter_count(cell, V, H, L)
    zoned = 2 * sum(1 for p in cell.zoneout if p)
    per_step = L * H * (step_floats(cell) + 2 + (dropout > 0) + zoned) + (L - 1) * H * share_floats(cell)
    per_step += 2 * cell.GATES * H + 3 * V
    return Footprint(
        parameters=P,
        weights=2 * P * itemsize,
        optimizer=int((optimizer_slots + 2) * P * itemsize),
        window=B * T * per_step * itemsize,
    )


# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top beyond which it goes back to the system


def keep_freed_memory() -> bool:
    """Keep freed memory in this process for the next step (see the module's docstring); whether
    it now does. Safe to call any number of times."""
    if os.environ.get("CHARRNN_KEEP_MEMORY", "1") == "0" or user_tuned_malloc():
        return False
    libc = _glibc()
    if libc is None:
        return False
    # both, or neither: setting either stops glibc's own adjustment of the other
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def user_tuned_malloc() -> bool:
    """Whether the environment already chose malloc's behaviour, which then stands."""
    return any(name.startswith("MALLOC_") for name in os.environ) or (
        "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    )


@functools.cache
def _glibc():
    """The C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


GiB = 2**30


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """The bytes new allocations can still get on ``device``, and what says so (for a message);
    None where it cannot be told. On a CPU, the memory the kernel calls available, or what an
    address-space limit (``ulimit -v``) leaves this process, whichever is less."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        name = torch.cuda.get_device_name(device)
        return free, f"{name} has {free / GiB:.1f} GiB free of {total / GiB:.1f} GiB"
    if device.type != "cpu":
        return None
    found = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        if "MemAvailable" in fields:
            free = int(fields["MemAvailable"].split()[0]) * 1024
            found = free, f"this machine has {free / GiB:.1f} GiB of memory available"
    try:
        import resource  # POSIX only
    except ImportError:
        return found
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        status = Path("/proc/self/status").read_text() if Path("/proc/self/status").is_file() else ""
        used = next(
            (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:")), 0
        )
        left = max(limit - used, 0)
        if found is None or left < found[0]:
            found = (
                left,
                f"the address-space limit (ulimit -v, {limit / GiB:.1f} GiB) leaves {left / GiB:.1f} GiB",
            )
    return found


def require_memory(needed: int, device: torch.device, what: str, lower: str) -> None:
    """A ConfigError where ``needed`` bytes (``what`` they are) are more than ``device`` has, naming
    the options to ``lower``; nothing where it fits, or where the memory cannot be told. The check
    is skipped with ``CHARRNN_MEMORY_CHECK=0``."""
    if os.environ.get("CHARRNN_MEMORY_CHECK", "1") == "0":
        return
    found = available_memory(device)
    if found is None or needed <= found[0]:
        return
    raise ConfigError(
        f"{what} need about {needed / GiB:.1f} GiB, but {found[1]}: lower {lower} "
        "(or set CHARRNN_MEMORY_CHECK=0 to try anyway)"
    )
