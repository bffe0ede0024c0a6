"""What a training process does with the memory a step frees: keeps it for the next step.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc's hands every block of 32 MiB or
more (less, until its threshold has grown) straight back to the operating system when it is freed,
and trims the top of its heap, so the next step's tape, the same size, comes back as fresh pages:
one page fault, and the page zeroed, for every 4 KiB, every step. On this project's 2-core CPU a
training step of the LSTM at B128 T100 H512 took 81,000 page faults, and 27% less time without them;
``nn.LSTM``'s step 97,000, and 20% less. At B32 T64 H256 the C++ loop, alone in its process, took
3,000 a step (``benchmarks/bench_freed_memory.py``; docs/benchmarks.md, "Freed memory kept").

``keep_freed_memory`` tells glibc to serve large blocks from its heap and keep what is freed there
(``mallopt``: no ``mmap`` for blocks, trim only past 1 GiB free), the effect jemalloc or tcmalloc
have when preloaded, as PyTorch's CPU performance guide suggests. The cost is memory held: the
process keeps its peak, up to 1 GiB more than it uses between steps. ``charrnn fit`` (validate,
test, predict) calls it; a program that trains CharRNN in its own loop may call it too.

It does nothing elsewhere than glibc (macOS, musl), when the user tuned ``malloc`` themselves
(any ``MALLOC_*`` variable, or ``GLIBC_TUNABLES``), or with ``CHARRNN_KEEP_MEMORY=0``.

``available_memory`` and ``require_memory`` tell, before a model or a run allocates, whether what it
will hold (``rnn/footprint.py``) fits what the device has, so that too large a model or batch is
one clear error rather than an allocator's traceback.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

import torch

from torch_charrnn.errors import ConfigError

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
