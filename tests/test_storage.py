"""What a run leaves on disk: a version folder of its own even beside another run started at the same
moment, one ``last.ckpt``, and checkpoints that are whole or absent, also on a full disk."""

import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import SMALL_FIT
from lightning.pytorch.loggers import TensorBoardLogger

from torch_charrnn.cli.fit import cli_main
from torch_charrnn.cli.versions import claim_version
from torch_charrnn.training.saving import last_checkpoint

CHARRNN = str(Path(sys.executable).parent / "charrnn")
SMALL = [*SMALL_FIT, "--model.hidden_size=8"]


def _claim(root: str, barrier, out) -> None:
    logger = TensorBoardLogger(root)
    barrier.wait()  # every process lists the folder at the same moment
    claim_version(logger)
    out.put(logger.version)


def test_runs_claiming_together_each_get_their_own_version(tmp_path):
    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)  # an earlier run
    # forked, not spawned: six fresh interpreters importing torch and Lightning took 30 s of CI
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(tmp_path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    versions = sorted(out.get() for _ in range(n))
    assert versions == list(range(1, n + 1))
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == [
        f"version_{i}" for i in range(n + 1)
    ]


def test_two_fits_started_together_both_finish_in_their_own_folders(tmp_path):
    args = [CHARRNN, "fit", *SMALL, "--trainer.max_steps=4", f"--trainer.default_root_dir={tmp_path}"]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    assert procs[0].poll() is None, "both runs are alive at once: the race this guards against can happen"
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        # what is not ours and reads like a problem is filtered in the product itself
        assert "Tip:" not in out + err and "LeafSpec" not in err, err
    runs = sorted((tmp_path / "lightning_logs").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    for run in runs:
        assert (run / "config.yaml").is_file()
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    outs = [out for out, _ in results]
    assert {out.split("logs:        ")[1].split()[0] for out in outs} == {str(r) for r in runs}


def test_a_run_keeps_one_last_checkpoint_the_newest(tmp_path, capsys):
    cli = cli_main(
        [
            "fit",
            *SMALL,
            "--trainer.max_steps=23",  # past a validation at step 10 and 20, not a multiple of 4
            "--trainer.val_check_interval=10",
            "--last.every_n_train_steps=4",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    folder = Path(cli.trainer.log_dir) / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert [n for n in names if n.startswith("last")] == ["last.ckpt"], names
    assert any(n.startswith("best-") for n in names)
    last = folder / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 23, "the end of training is saved"
    assert last_checkpoint(cli.trainer).last_model_path == str(last)
    out = capsys.readouterr().out
    assert f"last:      {last}" in out and f"charrnn sample --ckpt_path {last}" in out


def _write_under_a_size_limit(folder: str, limit: int, queue) -> None:
    """Save a small checkpoint, then one too large for RLIMIT_FSIZE, to the same path."""
    from torch_charrnn.errors import RunError
    from torch_charrnn.training.saving import AtomicCheckpointIO

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    io_ = AtomicCheckpointIO()
    path = Path(folder) / "last.ckpt"
    io_.save_checkpoint({"state": torch.zeros(10)}, path)
    try:
        io_.save_checkpoint({"state": torch.zeros(100_000)}, path)
    except RunError as err:
        queue.put(str(err))
    else:
        queue.put(None)


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path):
    # forked, not spawned: six fresh interpreters importing torch and Lightning took 30 s of CI
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_write_under_a_size_limit, args=(str(tmp_path), 100_000, queue))
    proc.start()
    proc.join(60)
    message = queue.get(timeout=5)
    assert message is not None, "the write past the limit must fail"
    assert f"could not write the checkpoint {tmp_path / 'last.ckpt'}" in message
    assert f"it needs 0.4 MiB in {tmp_path}" in message and "are free" in message
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["state"], torch.zeros(10))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file is left"


def _other_filesystem_than(path: Path) -> Path | None:
    for candidate in (Path("/dev/shm"), Path("/run/user") / str(os.getuid()), Path("/tmp")):
        if (
            candidate.is_dir()
            and os.access(candidate, os.W_OK)
            and candidate.stat().st_dev != path.stat().st_dev
        ):
            return candidate
    return None


def test_fit_on_a_full_disk_stops_with_one_line_and_no_torn_checkpoint(tmp_path):
    """RLIMIT_FSIZE makes every checkpoint write fail as a full disk would; the temp folder is on
    another filesystem than the run where the machine has one, as with a tmpfs /tmp."""
    env = dict(os.environ)
    other = _other_filesystem_than(tmp_path)
    if other is not None:
        env["TMPDIR"] = str(other)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # below one checkpoint of H=64

    args = [
        CHARRNN,
        "fit",
        *SMALL,
        "--model.hidden_size=64",
        "--trainer.max_steps=3",
        "--last.every_n_train_steps=1",
    ]
    started = time.time()
    result = subprocess.run(
        [*args, f"--trainer.default_root_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limit,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("charrnn: error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "could not write the checkpoint" in lines[0] and "File too large" in lines[0]
    assert (
        "MiB in " in lines[0] and "--trainer.default_root_dir" in lines[0] and "--ckpt_path last" in lines[0]
    )
    assert not list(tmp_path.rglob("*.ckpt")), "nothing half-written under a checkpoint's name"
    assert not [p for p in tmp_path.rglob("*.tmp")], "no temporary file left behind"
    if other is not None:
        leftovers = [p for p in other.iterdir() if p.stat().st_mtime >= started and "ckpt" in p.name]
        assert not leftovers, leftovers
