"""What a training process does with the memory a step frees: keeps it for the next step.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc's hands every block of 32 MiB or
more (less, until its threshold has grown) straight back to the operating system when it is freed,
and trims the top of its heap, so the next step's tape, the same size, comes back as fresh pages:
one page fault, and the page zeroed, for every 4 KiB, every step. On this project's 2-core CPU a
training step of the LSTM at B128 T100 H512 took 81,000 page faults, and 27% less time without them;
``nn.LSTM``'s step 97,000, and 20% less. At B32 T64 H256 the C++ loop, alone in its process, took
3,000 a step (``benchmarks/bench_freed_memory.py``; README, "Speed").

``keep_freed_memory`` tells glibc to serve large blocks from its heap and keep what is freed there
(``mallopt``: no ``mmap`` for blocks, trim only past 1 GiB free), the effect jemalloc or tcmalloc
have when preloaded, as PyTorch's CPU performance guide suggests. The cost is memory held: the
process keeps its peak, up to 1 GiB more than it uses between steps. ``charrnn fit`` (validate,
test, predict) calls it; a program that trains CharRNN in its own loop may call it too.

It does nothing elsewhere than glibc (macOS, musl), when the user tuned ``malloc`` themselves
(any ``MALLOC_*`` variable, or ``GLIBC_TUNABLES``), or with ``CHARRNN_KEEP_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

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
