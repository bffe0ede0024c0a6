"""When a process of a multi-process run dies or stops answering: charrnn fit, which starts and
watches the ranks itself (cli/launch.py), ends every other process within seconds and says in one
line which rank ended and how, that the checkpoints are intact, and how to resume; the resumed run
ends on the weights of a run that was never interrupted. Real processes (2 ranks, gloo, CPU),
real signals, and each test checks that what it relies on happened (the signal landed mid-run,
after a checkpoint)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torch_charrnn.data.corpus import builtin_text

CHARRNN = str(Path(sys.executable).parent / "charrnn")
ROOT = Path(__file__).resolve().parents[1]
STEPS = 200


def command(root: Path, corpus: Path, *extra: str) -> list[str]:
    return [
        CHARRNN,
        "fit",
        f"--config={ROOT / 'configs' / 'ddp_cpu.yaml'}",
        f"--data.corpus={corpus}",
        "--data.seq_len=16",
        "--data.batch_size=4",
        "--data.eval_batch_size=4",
        "--model.cell=lstm",
        "--model.hidden_size=16",
        "--model.lr=0.05",
        "--trainer.precision=64-true",
        f"--trainer.max_steps={STEPS}",
        "--trainer.max_epochs=null",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--monitor.every_n_steps=0",
        "--last.every_n_train_steps=10",
        f"--trainer.default_root_dir={root}",
        *extra,
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(builtin_text()[:20000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus) -> dict:
    """The last checkpoint of the run of ``command`` never stopped, trained once for every test that
    resumes to it."""
    root = tmp_path_factory.mktemp("whole")
    env = {**os.environ, "CHARRNN_CACHE": str(root / "cache")}
    whole = subprocess.run(command(root, corpus), capture_output=True, text=True, timeout=300, env=env)
    assert whole.returncode == 0, whole.stderr
    return torch.load(next(root.glob("**/checkpoints/last.ckpt")), weights_only=True)


def last_step(root: Path) -> int | None:
    """The step of the run's last.ckpt (written whole or not at all), or None before the first."""
    found = list(root.glob("**/checkpoints/last.ckpt"))
    return torch.load(found[0], weights_only=True)["global_step"] if found else None


def ranks_of(parent: int) -> dict[int, int]:
    """The rank processes the watcher ``parent`` started: {LOCAL_RANK: pid}."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
            rank = next(int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"LOCAL_RANK="))
        except (OSError, StopIteration, ValueError, IndexError):
            continue
        found[rank] = int(stat.parent.name)
    return found


def start_and_wait_for_a_checkpoint(args: list[str], root: Path) -> tuple[subprocess.Popen, dict, int]:
    run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while (step := last_step(root)) is None:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.1)
    ranks = ranks_of(run.pid)
    assert sorted(ranks) == [0, 1], ranks
    return run, ranks, step


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("charrnn: error:")]


def assert_resumes_to_the_uninterrupted_weights(args: list[str], root: Path, want: dict):
    """``args`` resumed with ``--ckpt_path last`` ends on the weights ``want`` of the same run never
    stopped."""
    resumed = subprocess.run([*args, "--ckpt_path", "last"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    newest = max(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    got = torch.load(newest, weights_only=True)
    assert got["global_step"] == want["global_step"] == STEPS
    for name, value in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][name], value, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_a_killed_process_ends_the_run_with_one_line_and_the_run_resumes_exactly(
    tmp_path, corpus, uninterrupted
):
    killed_root = tmp_path / "killed"
    args = command(killed_root, corpus)
    run, ranks, _ = start_and_wait_for_a_checkpoint(args, killed_root)
    os.kill(ranks[1], signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = run.communicate(timeout=60)
    ended_in = time.monotonic() - killed_at
    step = last_step(killed_root)
    # what the test relies on: the kill landed mid-run, after a checkpoint, and nobody survived it
    assert 0 < step < STEPS and gone(ranks[0]) and gone(ranks[1])
    assert run.returncode == 1 and ended_in < 30, (run.returncode, ended_in)
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert (
        f"rank 1 of 2 (pid {ranks[1]}) was killed by SIGKILL, and the other processes were ended" in lines[0]
    )
    assert f"The checkpoints up to step {step} are intact" in lines[0]
    assert lines[0].endswith("--ckpt_path last")

    assert_resumes_to_the_uninterrupted_weights(args, killed_root, uninterrupted)


@pytest.mark.slow
def test_a_stopped_process_ends_the_run_after_the_timeout_with_one_line_naming_it(tmp_path, corpus):
    root = tmp_path / "stalled"
    args = command(root, corpus, "--trainer.strategy.init_args.timeout=0:00:10")
    run, ranks, _ = start_and_wait_for_a_checkpoint(args, root)
    os.kill(ranks[1], signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        _, stderr = run.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever happened, leave no stopped process
            os.kill(ranks[1], signal.SIGKILL)
    ended_in = time.monotonic() - stopped_at
    assert run.returncode == 1 and 7 < ended_in < 50, (run.returncode, ended_in)
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"rank 1 (pid {ranks[1]}, stopped by a signal) of 2 stopped answering" in lines[0]
    assert "--trainer.strategy.init_args.timeout" in lines[0] and lines[0].endswith("--ckpt_path last")
    assert gone(ranks[0])


def test_a_stall_timeout_shorter_than_a_checkpoint_write_may_take_is_refused(tmp_path, capsys):
    from torch_charrnn.cli import main

    args = [
        "fit",
        f"--config={ROOT / 'configs' / 'ddp_cpu.yaml'}",
        "--trainer.strategy.init_args.timeout=0:00:02",
    ]
    assert main([*args, f"--trainer.default_root_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "--trainer.strategy.init_args.timeout 0:00:02 is shorter than a checkpoint write" in err
    assert "at least 0:00:10" in err


def test_a_checkpoint_write_or_validation_pass_near_the_timeout_is_said_once(caplog):
    from torch_charrnn.training.callbacks import StallMargin

    margin = StallMargin(timeout=20.0)
    with caplog.at_level("WARNING", logger="torch_charrnn"):
        margin.check("a checkpoint write", 9.0)  # under half: nothing
        margin.check("a checkpoint write", 12.0)
        margin.check("a checkpoint write", 15.0)  # said once
        margin.check("a validation pass", 11.0)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("charrnn: a checkpoint write took 12.0 s, more than half of the 20 s")
    assert said[1].startswith("charrnn: a validation pass took 11.0 s")


def test_ddp_without_a_timeout_waits_two_minutes_not_thirty():
    from jsonargparse import Namespace

    from torch_charrnn.cli.launch import STALL_TIMEOUT, launch_for

    ddp = Namespace(class_path="lightning.pytorch.strategies.DDPStrategy", init_args=Namespace())
    for strategy in ("ddp", ddp):
        trainer = Namespace(
            accelerator="cpu", devices=2, num_nodes=1, strategy=strategy, default_root_dir=None
        )
        launch = launch_for(trainer)
        assert (
            launch.processes == 2 and f"--trainer.strategy.init_args.timeout={STALL_TIMEOUT}" in launch.extra
        )
    for devices, strategy in ((1, "ddp"), (2, "ddp_spawn"), (2, "fsdp")):
        trainer = Namespace(accelerator="cpu", devices=devices, num_nodes=1, strategy=strategy)
        assert launch_for(trainer) is None


def test_the_resume_line_names_this_runs_checkpoint_and_drops_the_old_ckpt_path(tmp_path):
    from torch_charrnn.cli.launch import resume

    old = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    old.parent.mkdir(parents=True)
    torch.save({"global_step": 40}, old)
    os.utime(old, (1_000_000, 1_000_000))  # an earlier run's
    words = ["fit", "--ckpt_path", "x.ckpt", "--model.lr=0.1", "--ckpt_path=y.ckpt"]
    started = time.time() - 1
    assert resume(words, tmp_path, started) == "This run wrote no checkpoint yet: run the same command again."
    new = tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    new.parent.mkdir(parents=True)
    torch.save({"global_step": 75}, new)
    command = "charrnn fit --model.lr=0.1 --ckpt_path last"
    assert (
        resume(words, tmp_path, started)
        == f"The checkpoints up to step 75 are intact ({new}): resume with {command}"
    )


def test_a_rank_that_said_why_it_stopped_ends_the_run_with_its_code_and_no_second_line(tmp_path):
    """Every rank refuses a window of about 55 GiB at its memory check and says so in its own line;
    the watcher adds none of its own and exits with their code, 2."""
    args = [
        CHARRNN,
        "fit",
        f"--config={ROOT / 'configs' / 'ddp_cpu.yaml'}",
        "--model.cell=lstm",
        "--model.hidden_size=2048",
        "--data.batch_size=100",
        "--data.seq_len=2000",
        "--data.val_fraction=0",
        "--data.test_fraction=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    lines = error_lines(run.stderr)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert lines and all(line.startswith("charrnn: error: 2 training processes (") for line in lines), lines
    assert not [line for line in lines if "of 2 (pid" in line]  # no line of the watcher's


@pytest.mark.slow
def test_a_multi_process_run_sent_sigterm_stops_every_rank_at_one_step_and_resumes_exactly(
    tmp_path, corpus, uninterrupted
):
    """A scheduler's SIGTERM to the watcher: passed on to every rank, which agree on one step, write
    last.ckpt there and end; one line says so, and the resumed run ends on the uninterrupted weights."""
    stopped_root = tmp_path / "stopped"
    args = command(stopped_root, corpus)
    run, ranks, first = start_and_wait_for_a_checkpoint(args, stopped_root)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=150)
    step = last_step(stopped_root)
    assert run.returncode == 128 + signal.SIGTERM, stderr
    assert first <= step < STEPS and gone(ranks[0]) and gone(ranks[1]), (first, step)
    said = [line for line in stderr.splitlines() if line.startswith("charrnn: SIGTERM: ")]
    assert len(said) == 1 and f"stopped at step {step};" in said[0] and "Traceback" not in stderr, stderr
    assert said[0].endswith("--ckpt_path last")

    assert_resumes_to_the_uninterrupted_weights(args, stopped_root, uninterrupted)
