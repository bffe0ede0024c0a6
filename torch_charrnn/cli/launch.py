"""Several training processes on one machine, started and watched by ``charrnn fit`` itself.

Lightning's own launcher makes the command's process rank 0 and starts the other ranks as its
children: when a child dies, rank 0 meets it as a traceback from the collective it was in (gloo's
"Connection reset by peer"), or Lightning's observer kills rank 0 with SIGKILL; when rank 0
dies, nobody is left to say so. Here the command's process trains nothing: it starts every rank
as ``python -m torch_charrnn`` with the command's own arguments and the environment Lightning
reads for processes started outside it (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``), and watches them. When one dies, the others are ended within seconds and the
run ends with one line: which rank, how (a signal or an exit code), the last intact checkpoint and
the command that resumes. A rank that stops answering (stopped, or stuck on a disk) is found when
the others give up on it after the strategy's ``timeout``: it is the one still running.

A rank that fails only because another did exits with ``PEER_LOST`` and says nothing (its
traceback with ``CHARRNN_TRACEBACK=1``): the watcher speaks for the run. A rank whose own error
line said why (a divergence, a bad option) exits with that code plus ``SAID``, and the run ends
with that code and no second line; any other end (a signal, a crash's traceback) gets the line.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
from torch.distributed.constants import default_pg_timeout

from torch_charrnn.cli import SAID, is_ckpt_path
from torch_charrnn.cli.versions import find_last_checkpoint
from torch_charrnn.errors import CharRNNError, ConfigError, RunError

PEER_LOST = 3  # exit code of a rank that stopped because another rank died or stopped answering
STALL_TIMEOUT = timedelta(minutes=2)  # what the others wait for a rank before giving up on it
MIN_STALL_TIMEOUT = timedelta(seconds=10)  # below it, an ordinary checkpoint write could look like a stall
OUTSIDE_LAUNCHERS = ("LOCAL_RANK", "RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")
DDP = "lightning.pytorch.strategies.DDPStrategy"
POLL = 0.2  # seconds between looks at the processes
GRACE = 3.0  # seconds a process is given to end on SIGTERM before SIGKILL


class Launch(Exception):  # noqa: N818 - not an error: how the parsed command hands over to the watcher
    """Raised once the command is parsed, before anything is built: start ``processes`` ranks of the
    same command, with ``extra`` arguments (the timeout the ranks wait for each other), writing
    under ``root``."""

    def __init__(self, processes: int, extra: list[str], root: Path):
        super().__init__(processes)
        self.processes, self.extra, self.root = processes, extra, root


def launch_for(trainer) -> Launch | None:
    """What ``charrnn fit`` starts itself for the trainer's options, or None (see ``processes_to_start``)."""
    n = processes_to_start(trainer)
    if not n:
        return None
    timeout = stall_timeout(trainer)
    extra = [] if hasattr(trainer.get("strategy"), "class_path") else ["--trainer.strategy=" + DDP]
    extra.append(f"--trainer.strategy.init_args.timeout={timeout}")
    return Launch(n, extra, Path(trainer.get("default_root_dir") or "."))


def supervised() -> bool:
    """Whether this process is a rank that ``supervise`` started."""
    return os.environ.get("CHARRNN_SUPERVISED") == "1"


def processes_to_start(trainer) -> int:
    """How many ranks ``charrnn fit`` starts itself for the trainer's options: those of a DDP run
    on one machine that Lightning would start as its children; 0 for a run of one process, a run
    across machines, another strategy, or ranks that a launcher outside (torchrun, SLURM) starts."""
    if any(name in os.environ for name in OUTSIDE_LAUNCHERS) or trainer.get("num_nodes", 1) != 1:
        return 0
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str):
        if strategy not in (
            "auto",
            "ddp",
            "ddp_find_unused_parameters_true",
            "ddp_find_unused_parameters_false",
        ):
            return 0
    else:
        class_path = getattr(strategy, "class_path", "")
        init_args = getattr(strategy, "init_args", None)
        if not class_path.endswith(".DDPStrategy") or getattr(init_args, "start_method", "popen") != "popen":
            return 0
    n = device_count(trainer.get("accelerator", "auto"), trainer.get("devices", "auto"))
    return n if n > 1 else 0


def device_count(accelerator, devices) -> int:
    """The processes ``devices`` asks for, as Lightning reads it (a count, a list, a comma list, -1)."""
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        if devices == "auto":
            return torch.cuda.device_count() if gpu else 1
        devices = int(devices)
    if isinstance(devices, list | tuple):
        return len(devices)
    if devices == -1:
        return torch.cuda.device_count() if gpu else 1
    return int(devices)


def stall_timeout(trainer) -> timedelta:
    """The DDP strategy's ``timeout`` for a run ``charrnn fit`` starts: torch's 30-minute default
    becomes STALL_TIMEOUT; one under MIN_STALL_TIMEOUT is refused."""
    strategy = trainer.get("strategy")
    init_args = getattr(strategy, "init_args", None)
    timeout = getattr(init_args, "timeout", None)
    if timeout is None or timeout == default_pg_timeout:  # not set: the strategy's signature gave torch's
        return STALL_TIMEOUT
    if timeout < MIN_STALL_TIMEOUT:
        raise ConfigError(
            f"--trainer.strategy.init_args.timeout {timeout} is shorter than a checkpoint write or a "
            f"validation pass may take while the other processes wait: give at least {MIN_STALL_TIMEOUT}"
        )
    return timeout


def supervise(launch: Launch, words: list[str]) -> None:
    """Start the ranks of ``charrnn <words>`` and watch them; return when all end well, raise a
    RunError (one line) when one dies or stops answering, the others ended first."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), NODE_RANK="0")
    env.update(WORLD_SIZE=str(launch.processes), CHARRNN_SUPERVISED="1")
    command = [sys.executable, "-m", "torch_charrnn", *words, *launch.extra]
    started = time.time()
    ranks = [subprocess.Popen(command, env={**env, "LOCAL_RANK": str(r)}) for r in range(launch.processes)]
    signal.signal(signal.SIGTERM, stop_watching)  # a scheduler ending the run ends every rank
    try:
        failed = watch(ranks)
    except KeyboardInterrupt:  # Ctrl-C reached every rank too: each writes last.ckpt and ends
        stopped(ranks)
        raise SystemExit(128 + signal.SIGINT) from None
    except Stopped:  # SIGTERM to the watcher alone (a scheduler): passed on, each rank does the same
        for p in ranks:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        stopped(ranks)
        raise SystemExit(128 + signal.SIGTERM) from None
    if failed is None:
        return
    if failed[1] in STOP_CODES:  # a rank was signalled itself: the run stops at one step, said by rank 0
        stopped(ranks)
        raise SystemExit(failed[1])
    alive = [r for r, p in enumerate(ranks) if p.poll() is None]
    states = {r: process_state(ranks[r].pid) for r in alive}
    end(ranks)
    if failed[1] in (1 + SAID, 2 + SAID):  # the rank's own error line said why, as a run alone does
        raise SystemExit(failed[1] - SAID)
    raise RunError(f"{what_happened(failed, alive, states, ranks)}. {resume(words, launch.root, started)}")


STOP_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # a rank that stopped as it was asked to
STOP_GRACE = 120.0  # seconds the ranks have to finish their step and write last.ckpt


def stopped(ranks: list[subprocess.Popen]) -> None:
    """Wait for the ranks, signalled, to write ``last.ckpt`` and end (training/interrupts.py); end
    those still running after STOP_GRACE, or at once on a second Ctrl-C."""
    deadline = time.monotonic() + STOP_GRACE
    try:
        while any(p.poll() is None for p in ranks) and time.monotonic() < deadline:
            time.sleep(POLL)
    except KeyboardInterrupt:
        end(ranks, first=signal.SIGINT)
        return
    end(ranks)


class Stopped(Exception):  # noqa: N818 - how SIGTERM reaches the watcher's loop
    """The watcher was sent SIGTERM."""


def stop_watching(signum, frame) -> None:
    raise Stopped


def end_with_watcher() -> None:
    """Called by a rank as it starts: SIGTERM to it when the watcher dies, even by SIGKILL, so no
    rank is left training alone (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the watcher died before the call above
        os.kill(os.getpid(), signal.SIGTERM)


def close_process_group() -> None:
    """Called by a rank whose run ended well: its process group closed while Python still runs. Left
    to the interpreter's exit, a gloo worker thread could drop its last collective's tensors after
    Python had stopped and abort the rank (SIGABRT, "terminate called without an active exception")
    with its work done. Lightning closes NCCL's groups at exit, not gloo's."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def watch(ranks: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Wait until every rank ends well (None) or one fails: the rank that caused it and its exit
    code (a rank that exited with PEER_LOST is never the cause while another can be)."""
    while True:
        codes = [p.poll() for p in ranks]
        if all(code == 0 for code in codes):
            return None
        failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            if all(c == PEER_LOST for _, c in failed):
                time.sleep(1.0)  # the one that took the others down may not have been reaped yet
                codes = [p.poll() for p in ranks]
                failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            causes = [(r, c) for r, c in failed if c != PEER_LOST]
            return causes[0] if causes else failed[0]
        time.sleep(POLL)


def what_happened(failed: tuple[int, int], alive: list[int], states: dict, ranks) -> str:
    """The rank that ended the run and how, for the one line."""
    rank, code = failed
    n = len(ranks)
    if code == PEER_LOST and alive:  # the others gave up waiting: the one still running stalled
        stalled = ", ".join(f"rank {r} (pid {ranks[r].pid}{states[r]})" for r in alive)
        return (
            f"{stalled} of {n} stopped answering: the others gave up waiting for it after the "
            "timeout (--trainer.strategy.init_args.timeout), and every process was ended"
        )
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return f"rank {rank} of {n} (pid {ranks[rank].pid}) {how}, and the other processes were ended"


def process_state(pid: int) -> str:
    """What the kernel says a still-running process is doing, where that explains a stall."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
    return {
        "T": ", stopped by a signal",
        "t": ", stopped by a debugger",
        "D": ", stuck waiting on a disk",
    }.get(state, "")


def resume(words: list[str], root: Path, since: float) -> str:
    """The checkpoint the run wrote last (after ``since``), and the command that resumes from it:
    the one ``--ckpt_path last`` finds."""
    try:
        last = Path(find_last_checkpoint(root))
    except CharRNNError:  # none under root
        last = None
    if last is None or last.stat().st_mtime < since:  # none, or an earlier run's
        return "This run wrote no checkpoint yet: run the same command again."
    try:
        step = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        intact = f"The checkpoints up to step {step} are intact ({last})"
    except Exception:  # noqa: BLE001 - a checkpoint that cannot be read is said as such, not raised
        intact = f"The newest checkpoint, {last}, could not be read"
    again = [w for i, w in enumerate(words) if not is_ckpt_path(words, i)]
    return f"{intact}: resume with {shlex.join(['charrnn', *again, '--ckpt_path', 'last'])}"


def end(ranks: list[subprocess.Popen], first: int = signal.SIGTERM, grace: float = GRACE) -> None:
    """End every rank still running: ``first``, then SIGKILL after ``grace`` seconds (which a
    stopped process, or one blocked in a collective, still obeys)."""
    for p in ranks:
        if p.poll() is None:
            p.send_signal(first)
    deadline = time.monotonic() + grace
    for p in ranks:
        try:
            p.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peer_lost(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another rank died or stopped answering
    (gloo says so in several ways: a reset connection, a timeout, "Application timeout caused pair
    closure")."""
    if isinstance(error, getattr(torch.distributed, "DistError", ())):
        return True
    said = str(error)
    return isinstance(error, RuntimeError) and any(word in said for word in PEER_WORDS)


PEER_WORDS = (
    "gloo",
    "Connection reset by peer",
    "Connection closed by peer",
    "pair closure",
    "Timed out",
    "NCCL",
)
