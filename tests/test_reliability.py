"""Bad input, interruption, divergence: a clear error and exit code, no traceback, no lost work."""

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SMALL_FIT

from torch_charrnn.cli import main
from torch_charrnn.data.corpus import builtin_text

CHARRNN = str(Path(sys.executable).parent / "charrnn")
SMALL = [*SMALL_FIT, "--model.hidden_size=8"]


def run_main(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.fixture
def corpus(tmp_path):
    def write(content: bytes) -> str:
        path = tmp_path / "corpus.txt"
        path.write_bytes(content)
        return str(path)

    return write


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (b"", [], "is empty"),
        (
            b"ab" * 20,
            [],
            "train split .* has 36 characters, too short .* needs at least 68 .*batch 4 x .*seq_len 16",
        ),
        (b"caf\xe9 " * 100, [], r"not valid utf-8: byte 3 \(0xe9\) .*--data.encoding"),
        (b"zzzzzzzz" * 100, [], "a single distinct character"),
        (
            b"ab" * 200,
            ["--data.val_fraction=0.02"],
            "val split .* too short .*--data.val_fraction to 0 to turn",
        ),
        (b"ab" * 200, ["--data.val_fraction=1.2"], r"val_fraction must be in \[0, 1\), got 1.2"),
        (b"ab" * 200, ["--data.val_fraction=0.5", "--data.test_fraction=0.5"], "leaves no training text"),
    ],
)
def test_bad_corpus_gets_a_clear_error(tmp_path, capsys, corpus, content, extra, message):
    path = corpus(content)
    code, err = run_main(
        capsys, ["fit", f"--data.corpus={path}", f"--trainer.default_root_dir={tmp_path}", *SMALL, *extra]
    )
    assert code == 2
    assert err.startswith("charrnn: error: ") and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "lightning_logs").exists(), "nothing may be written for a run that cannot start"


def test_missing_corpus_file_gets_a_clear_error(tmp_path, capsys):
    code, err = run_main(capsys, ["fit", f"--data.corpus={tmp_path / 'nope.txt'}", *SMALL])
    assert code == 2 and "does not exist" in err and "--data.corpus builtin, tinyshakespeare" in err


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--model.hidden_size=0", "--model.hidden_size must be a positive integer, got 0"),
        ("--data.seq_len=0", "--data.seq_len must be a positive integer, got 0"),
        ("--data.batch_size=-3", "--data.batch_size must be a positive integer, got -3"),
        ("--model.lr=0", "--model.lr must be positive, got 0"),
        ("--model.eps=-1e-10", "--model.eps must be positive"),
        ("--trainer.gradient_clip_val=-1", "--trainer.gradient_clip_val must be positive, got -1.0"),
        ("--trainer.gradient_clip_val=0", "--trainer.gradient_clip_val must be positive, got 0"),
        ("--trainer.enable_checkpointing=false", "--trainer.enable_checkpointing false: charrnn keeps"),
        ("--trainer.check_val_every_n_epoch=0", "--trainer.check_val_every_n_epoch must be positive, got 0"),
        ("--trainer.val_check_interval=0", "--trainer.val_check_interval must be positive, got 0"),
        # Lightning's own check, its message in flags:
        ("--trainer.gradient_clip_algorithm=foo", "--trainer.gradient_clip_algorithm foo is invalid"),
        ("--model.init_std=-0.1", "--model.init_std must be non-negative, got -0.1"),
        ("--model.whh_scale=-1", "--model.whh_scale must be non-negative, got -1"),
        ("--model.zoneout=1", r"--model.zoneout must be in [0, 1), got 1"),
        ("--model.zoneout=-0.1", r"--model.zoneout must be in [0, 1), got -0.1"),
        ("--model.zoneout_c=1.5", r"--model.zoneout_c must be in [0, 1), got 1.5"),
        ("--model.zoneout_c=0.1", "--model.zoneout_c zones out c, and the tanh cell carries none"),
    ],
)
def test_bad_hyperparameters_get_a_clear_error(tmp_path, capsys, flag, message):
    code, err = run_main(
        capsys, ["fit", "--data.max_chars=5000", f"--trainer.default_root_dir={tmp_path}", *SMALL, flag]
    )
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "lightning_logs").exists()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    assert (
        main(
            [
                "fit",
                "--data.max_chars=5000",
                "--trainer.max_steps=2",
                f"--trainer.default_root_dir={root}",
                *SMALL,
            ]
        )
        == 0
    )
    return next(root.glob("**/last.ckpt"))


def sample_error(capsys, *args):
    code = main(["sample", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("charrnn: error: "), err
    return err


def test_sample_rejects_unknown_prime_characters(capsys, ckpt):
    err = sample_error(capsys, f"--ckpt_path={ckpt}", "--prime=hi \u263a\u2603")
    assert "not in the model's vocabulary: ['\u2603', '\u263a']" in err


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--length=-1", "--length must be 0 or more, got -1"),
        ("--temperature=-0.5", "--temperature must be 0 (greedy) or more, got -0.5"),
        ("--top_k=0", "--top_k must be between 1 and the vocabulary size"),
        ("--top_k=100000", "--top_k must be between 1 and the vocabulary size"),
        ("--num_samples=0", "--num_samples must be at least 1"),
    ],
)
def test_sample_rejects_bad_options(capsys, ckpt, flag, message):
    assert message in sample_error(capsys, f"--ckpt_path={ckpt}", flag)


def test_checkpoints_load_with_weights_only(ckpt):
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert isinstance(checkpoint["hyper_parameters"]["vocab"], str)


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    args = ["fit", "--data.max_chars=5000", f"--trainer.default_root_dir={tmp_path}", *SMALL]
    assert main([*args, "--trainer.max_steps=3", "--last.every_n_train_steps=1"]) == 0
    last = next(tmp_path.glob("**/last.ckpt"))
    good = last.read_bytes()
    # lr 1e38: the first Adagrad step moves every weight by 1e38, so the logits overflow to inf
    code, err = run_main(
        capsys, [*args, "--trainer.max_steps=20", "--model.lr=1e38", "--last.every_n_train_steps=1"]
    )
    assert code == 1 and "Traceback" not in err
    assert "training diverged at step 1" in err and "lower --model.lr" in err
    assert "--trainer.gradient_clip_val" in err and "(--ckpt_path last)" in err
    assert last.read_bytes() == good, "the last good checkpoint is never overwritten"
    for path in tmp_path.glob("**/*.ckpt"):
        weights = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(w).all() for w in weights.values()), path


# --- interruption -------------------------------------------------------------------------------

RESUME = [
    "fit",
    "--data.max_chars=4000",
    "--data.batch_size=4",
    "--data.seq_len=16",
    "--model.hidden_size=12",
    "--model.cell=lstm",  # a tuple state (h, c) of two layers: carried, saved and restored
    "--model.num_layers=2",
    "--model.dropout=0.3",  # masks drawn from the model's generator: its state must resume too
    "--optimizer=Adam",  # an optimizer state and a schedule state to restore exactly, too
    "--optimizer.lr=0.005",
    "--lr_scheduler=CosineAnnealingLR",
    "--lr_scheduler.T_max=150",
    "--trainer.precision=64-true",
    "--trainer.accelerator=cpu",
    "--trainer.max_steps=120",  # two epochs and a bit: 56 windows an epoch
    "--trainer.enable_progress_bar=false",
    "--last.every_n_train_steps=1",  # a checkpoint every step, so kills land inside writes too
    "--monitor.every_n_steps=0",
]


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    newest = max(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    checkpoint = torch.load(newest, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 120
    return checkpoint["state_dict"]


def newest_checkpoint(root: Path) -> tuple[Path | None, int]:
    """The newest last.ckpt under root and its global step (-1 when there is none yet)."""
    paths = list(root.glob("**/checkpoints/last.ckpt"))
    if not paths:
        return None, -1
    path = max(paths, key=lambda p: p.stat().st_mtime)
    return path, torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def on_a_corpus_file(tmp_path: Path) -> list[str]:
    """RESUME on a corpus file, so the runs read the memory-mapped encoded cache."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:4000], encoding="utf-8")
    return [*RESUME, f"--data.corpus={corpus}"]


def one_cache(tmp_path: Path) -> bool:
    return sorted(p.suffix for p in (tmp_path / "cache" / "encoded").iterdir()) == [".bin", ".json"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """RESUME run through to its end without a stop: the weights a stopped and resumed run must reach."""
    tmp = tmp_path_factory.mktemp("straight")
    env = {**os.environ, "PYTHONHASHSEED": "0", "CHARRNN_CACHE": str(tmp / "cache")}
    subprocess.run([CHARRNN, *on_a_corpus_file(tmp), f"--trainer.default_root_dir={tmp / 'runs'}"],
                   check=True, env=env, capture_output=True)  # fmt: skip
    return final_weights(tmp / "runs")


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_ends_exactly_where_an_uninterrupted_run_ends(
    tmp_path, straight_run
):
    broken = tmp_path / "broken"
    env = {**os.environ, "PYTHONHASHSEED": "0", "CHARRNN_CACHE": str(tmp_path / "cache")}
    run = on_a_corpus_file(tmp_path)

    killed_at = []
    for target in (20, 70):  # two kills, each once its run has checkpointed this step, then resumed
        args = [CHARRNN, *run, f"--trainer.default_root_dir={broken}"]
        if killed_at:
            args.append("--ckpt_path=last")
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while newest_checkpoint(broken)[1] < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run must still be running when it is killed"
        path, step = newest_checkpoint(broken)
        assert target <= step < 120, f"killed mid-run, not after the end: newest checkpoint at step {step}"
        killed_at.append(step)
        if len(killed_at) == 1:
            early = torch.load(path, weights_only=True)["state_dict"]
        for path in broken.glob("**/*.ckpt"):  # written then renamed: never torn
            torch.load(path, map_location="cpu", weights_only=True)
    assert killed_at[0] < killed_at[1], "the second run resumed and got further before its kill"

    subprocess.run(
        [CHARRNN, *run, f"--trainer.default_root_dir={broken}", "--ckpt_path=last"], check=True, env=env
    )

    want, got = straight_run, final_weights(broken)
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert not torch.equal(want["layers.1.W_hh"], early["layers.1.W_hh"]), "the weights moved after the kill"
    assert one_cache(tmp_path), "every run read the one memory-mapped cache"


def test_mid_epoch_resume_in_process_continues_the_same_windows(tmp_path, monkeypatch):
    """Stop at step 30 of a 56-window epoch, resume to 80: same weights as one run to 80."""
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    base = [a for a in on_a_corpus_file(tmp_path) if not a.startswith("--trainer.max_steps")]
    assert main([*base, "--trainer.max_steps=80", f"--trainer.default_root_dir={tmp_path / 'a'}"]) == 0
    assert main([*base, "--trainer.max_steps=30", f"--trainer.default_root_dir={tmp_path / 'b'}"]) == 0
    assert (
        main(
            [
                *base,
                "--trainer.max_steps=80",
                f"--trainer.default_root_dir={tmp_path / 'b'}",
                "--ckpt_path=last",
            ]
        )
        == 0
    )
    a = torch.load(max((tmp_path / "a").glob("**/last.ckpt")), weights_only=True)["state_dict"]
    newest = max((tmp_path / "b").glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime)
    b = torch.load(newest, weights_only=True)["state_dict"]
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert one_cache(tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_run_stopped_by_a_signal_writes_its_step_and_resumes_to_the_uninterrupted_weights(
    tmp_path, straight_run, signum
):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM mid-run: last.ckpt holds the step reached (not the
    last periodic one), one line says so with the command that resumes, and that command ends on
    the weights of a run never stopped."""
    root = tmp_path / "runs"
    env = {**os.environ, "PYTHONHASHSEED": "0", "CHARRNN_CACHE": str(tmp_path / "cache")}
    run = [*on_a_corpus_file(tmp_path), f"--trainer.default_root_dir={root}", "--last.every_n_train_steps=25"]
    proc = subprocess.Popen(
        [CHARRNN, *run], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while newest_checkpoint(root)[1] < 25 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)  # a few steps past the periodic checkpoint
    proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signum, err
    path, step = newest_checkpoint(root)
    assert 25 < step < 120, f"stopped mid-run, past its periodic checkpoint: last.ckpt at step {step}"
    line = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert line.startswith(
        f"charrnn: {name}: stopped at step {step}; {path} holds that step: resume with charrnn fit "
    )
    assert "Traceback" not in err
    command = shlex.split(line.split("resume with ", 1)[1])
    assert command[-2:] == ["--ckpt_path", "last"]
    resumed = subprocess.run([CHARRNN, *command[1:]], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    got = final_weights(root)
    for name_, want in straight_run.items():
        assert torch.equal(got[name_], want), name_


def test_two_ctrl_c_in_a_row_end_the_run_without_a_traceback_or_a_torn_checkpoint(tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ, "CHARRNN_CACHE": str(tmp_path / "cache")}
    run = [*on_a_corpus_file(tmp_path), f"--trainer.default_root_dir={root}", "--trainer.max_steps=100000"]
    proc = subprocess.Popen(
        [CHARRNN, *run], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while newest_checkpoint(root)[1] < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # the second stops at once, wherever the run is
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert newest_checkpoint(root)[1] < 100000, "stopped long before its end"
    for path in root.glob("**/*.ckpt"):  # written beside and renamed: whole, whatever the moment
        torch.load(path, map_location="cpu", weights_only=True)
