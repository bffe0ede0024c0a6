"""The C++ kernels (``torch_charrnn/rnn/csrc/``): each cell's recurrence over a window, forward and
backward, with the loop over time in C++ rather than Python, for ``bptt="manual"`` on a CPU.

They are the derivatives of the cells' ``step_backward``, with each step's elementwise work in
one vectorized pass (``csrc/vec.h``) and the streams shared out among threads (``csrc/shares.h``);
tested equal to the pure-torch loop to 1e-12 in float64 (``tests/test_native.py``). What they save
is Python's cost per operation and a dozen elementwise kernels a step (docs/benchmarks.md,
"Training speed, CPU").

They are compiled with this machine's C++ compiler the first time they are needed (about a minute,
once per PyTorch version and installed copy; ``torch.utils.cpp_extension.load``, cached under
``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``), against the PyTorch that is installed,
so they always match it. Where they cannot be built or loaded (no compiler, say), or with
``CHARRNN_NATIVE=0``, the pure-torch loop runs instead, with the same results, and a warning says
so once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger("torch_charrnn")

SOURCES = sorted((Path(__file__).parent / "csrc").glob("*.cpp"))


ROWS_PER_THREAD = 4  # the fewest streams a thread of a window's loop over time takes on
UNITS_PER_THREAD = 32  # the fewest columns a thread of a weight gradient takes on


def parts(n: int, per_thread: int) -> int:
    """How many threads share out n rows or columns (``csrc/shares.h``): one per ``per_thread``
    of them, at most PyTorch's thread count."""
    return max(1, min(torch.get_num_threads(), n // per_thread))


def row_parts(B: int) -> int:
    """How many threads share out a window's B streams in a loop over time."""
    return parts(B, ROWS_PER_THREAD)


def column_parts(N: int) -> int:
    """How many threads share out a weight gradient's N rows or columns."""
    return parts(N, UNITS_PER_THREAD)


def usable(x: Tensor):
    """``torch.ops.charrnn`` for a window on ``x``'s device and dtype, or None where the pure-torch
    loop runs: a GPU, bf16, autograd recording (the oracle and the monitor), or no kernels."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or torch.is_grad_enabled():
        return None
    return kernels()


def zone_args(zone: tuple | None, like: Tensor) -> list[Tensor]:
    """A layer's zoneout (``bptt.layer_zone``) as the kernels take it (``csrc/zoneout.h``), a tensor
    per state: its keep masks (T, B, H), its rate as a 0-d tensor, or an empty one where the state
    is not zoned; an empty list without zoneout."""
    if zone is None:
        return []
    return list(
        like.new_empty(0) if z is None else z.contiguous() if isinstance(z, Tensor) else like.new_tensor(z)
        for z in zone
    )


@functools.cache
def kernels():
    """Build (once) and load the kernels: ``torch.ops.charrnn``, or None, said once."""
    if os.environ.get("CHARRNN_NATIVE", "1") == "0":
        return None
    from torch.utils.cpp_extension import load

    build = build_directory()
    try:
        build.mkdir(parents=True, exist_ok=True)
        clear_stale_lock(build)
        if not (build / "charrnn_kernels.so").exists():
            log.warning("building torch-charrnn's C++ kernels, once for this PyTorch (a minute) in %s", build)
        load(
            name="charrnn_kernels",
            sources=[str(s) for s in SOURCES],
            extra_cflags=build_flags(),
            extra_ldflags=_openmp_flags(),
            build_directory=str(build),
            is_python_module=False,
            verbose=False,
        )
        return torch.ops.charrnn
    except Exception as error:  # noqa: BLE001 - any failure to build or load means the fallback
        lines = [line for line in str(error).splitlines() if line.strip()]
        lines = [line for line in lines if "error:" in line][:1] or lines  # the compiler's first
        log.warning(
            "torch-charrnn's C++ kernels could not be built or loaded (%s: %s); the hand-written BPTT "
            "runs its pure-torch loop instead, with the same results, slower on a CPU. Install a C++ "
            "compiler (g++ or clang) to build them; CHARRNN_NATIVE=0 skips them without this warning.",
            type(error).__name__,
            lines[-1].strip() if lines else "no message",
        )
        return None


def build_directory() -> Path:
    """Where the kernels are built and cached: one folder per Python, PyTorch and installed copy of
    the package (two checkouts would rebuild each other's)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace('+', '-')}"
    where = hashlib.sha1(str(SOURCES[0].parent).encode()).hexdigest()[:8]
    return Path(root) / f"torch_charrnn-{tag}-{where}"


def build_flags() -> list[str]:
    """The compiler's flags for code that runs on the kernels' threads and vector units, and the
    headers' digest: torch rebuilds when its sources or flags change, and a header is neither."""
    return ["-O3", *_vector_flags(), *_openmp_flags(), f"-DCHARRNN_HEADERS={headers_digest()}"]


def headers_digest() -> str:
    """A digest of the kernels' headers (``csrc/*.h``)."""
    digest = hashlib.sha1()
    for header in sorted(SOURCES[0].parent.glob("*.h")):
        digest.update(header.read_bytes())
    return digest.hexdigest()[:12]


STALE_LOCK = 600  # seconds: a build takes about one; a lock this old was left by a build cut short


def clear_stale_lock(build: Path) -> bool:
    """Remove the build's lock where a build that was interrupted (Ctrl-C, a kill) left it: torch
    waits on a lock for as long as it exists, so every later run would hang before its first step."""
    lock = build / "lock"
    try:
        if time.time() - lock.stat().st_mtime < STALE_LOCK:
            return False
        lock.unlink()
    except FileNotFoundError:
        return False
    log.warning("removed %s, left by a build of the C++ kernels that was interrupted; building again", lock)
    return True


def _openmp_flags() -> list[str]:
    """OpenMP, so that ``at::parallel_for`` in the kernels runs on PyTorch's threads: its loop is
    a ``#pragma omp parallel`` in ATen's headers, which a build without -fopenmp runs on one
    thread. On Linux, where PyTorch's OpenMP runtime (libgomp) is the one the kernels then share;
    elsewhere the kernels run on the calling thread."""
    if sys.platform != "linux" or not torch.backends.openmp.is_available():
        return []
    return ["-fopenmp"]


def _vector_flags() -> list[str]:
    """What ATen's Vectorized needs to use the CPU's vector units, as PyTorch found them (the
    kernels are built on the machine that runs them): AVX-512 or AVX2 on x86; elsewhere its plain
    C++, which the compiler vectorizes as it can."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":
        isa = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"]
        return [*isa, "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if capability == "AVX2":
        return ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return ["-DCPU_CAPABILITY=DEFAULT"]
