"""Every output of the package goes through one check (``cli/outputs.py``): a path that is a folder,
whose folder is missing, a file or read-only, that is one of the command's own inputs (by any name)
or another checkpoint is one ``charrnn: error:`` line with exit code 2 before any work, every input
byte for byte as it was; a write that fails or is interrupted leaves the earlier file whole. And a
reader that goes away (``| head``) or Ctrl-C ends ``sample`` and ``score`` quietly."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_FIT, save_checkpoint

from torch_charrnn import CharRNN
from torch_charrnn.cli import main
from torch_charrnn.cli import score as score_cli
from torch_charrnn.data.corpus import builtin_text

CHARRNN = str(Path(sys.executable).parent / "charrnn")
TEXT = builtin_text()[:2000]


@pytest.fixture
def work(tmp_path):
    """A checkpoint, a text it can score, another checkpoint, a file where a folder would be, and a
    read-only folder."""
    vocab = "".join(sorted(set(TEXT)))
    torch.manual_seed(0)
    ckpt = save_checkpoint(CharRNN(len(vocab), 8, "gru", vocab=vocab), tmp_path / "last.ckpt")
    other = save_checkpoint(CharRNN(len(vocab), 8, "gru", vocab=vocab), tmp_path / "other.ckpt")
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "a-file").write_text("not a folder")
    os.link(tmp_path / "t.txt", tmp_path / "t-again.txt")  # the same file by another name
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        yield {"dir": tmp_path, "ckpt": ckpt, "other": other}


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` read-only: its mode bits, and for root, whom those do not stop, the immutable
    attribute (ext4 and the like); where neither holds, the tests that need it skip."""
    os.chmod(folder, 0o555)
    immutable = (
        os.geteuid() == 0
        and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    )
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def writable(folder: Path) -> bool:
    try:
        (folder / "probe").touch()
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# (subcommand's arguments with {dir} for the folder, what the one line says): every case refused
SCORE = ["score", "--ckpt_path={dir}/last.ckpt", "{dir}/t.txt", "--per_char"]
EXPORT = ["export", "--ckpt_path={dir}/last.ckpt"]
FIT = ["fit", *SMALL_FIT, "--trainer.max_steps=1"]
CASES = {
    "per_char over the text it scores": ([*SCORE, "{dir}/t.txt"], "is the file this command reads as FILE"),
    "per_char over that text by another name": (
        [*SCORE, "{dir}/t-again.txt"],
        "is the file this command reads as FILE",
    ),
    "per_char over its checkpoint": ([*SCORE, "{dir}/last.ckpt"], "reads as --ckpt_path"),
    "per_char over another checkpoint": ([*SCORE, "{dir}/other.ckpt"], "is a torch-charrnn checkpoint"),
    "per_char in a missing folder": (
        [*SCORE, "{dir}/nofolder/x.tsv"],
        "the folder {dir}/nofolder does not exist",
    ),
    "per_char onto a folder": ([*SCORE, "{dir}/locked"], "is a folder: name the file to write"),
    "per_char under a file": ([*SCORE, "{dir}/a-file/x.tsv"], "{dir}/a-file is a file, not a folder"),
    "per_char in a read-only folder": ([*SCORE, "{dir}/locked/x.tsv"], "cannot be written to"),
    "export over its checkpoint": ([*EXPORT, "--format=torch", "{dir}/last.ckpt"], "reads as --ckpt_path"),
    "export over another checkpoint": (
        [*EXPORT, "--format=torch", "{dir}/other.ckpt"],
        "torch-charrnn checkpoint",
    ),
    "export in a missing folder": (
        [*EXPORT, "{dir}/nofolder/m.pt"],
        "the folder {dir}/nofolder does not exist",
    ),
    "export under a file": ([*EXPORT, "{dir}/a-file/m.pt"], "{dir}/a-file is a file, not a folder"),
    "export in a read-only folder": ([*EXPORT, "{dir}/locked/m.pt"], "cannot be written to"),
    "fit into a file": (
        [*FIT, "--trainer.default_root_dir={dir}/a-file"],
        "{dir}/a-file is a file, not a folder",
    ),
    "fit's checkpoints under a file": (
        [*FIT, "--checkpoint.dirpath={dir}/a-file/ckpts"],
        "--checkpoint.dirpath",
    ),
    "fit's logs in a read-only folder": (
        [*FIT, "--trainer.default_root_dir={dir}/locked/runs"],
        "cannot be written to",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_an_output_that_would_lose_work_is_one_line_and_every_input_stays(work, case, capsys, monkeypatch):
    args, said = CASES[case]
    folder = work["dir"]
    if "read-only" in case and writable(folder / "locked"):
        pytest.skip("no read-only folder can be made here")
    args = [a.format(dir=folder) for a in args]
    before = snapshot(folder)
    monkeypatch.chdir(folder)  # where a command that ran would write by default
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("charrnn: error: "), err
    assert said.format(dir=folder) in err
    assert snapshot(folder) == before, "every input byte for byte, and nothing new"


def test_fit_checks_its_folders_before_it_builds_the_model_or_reads_the_corpus(work, capsys):
    """A model that cannot be built and a corpus that does not exist: the folder is said first."""
    folder = work["dir"] / "a-file"
    args = [
        *FIT,
        f"--trainer.default_root_dir={folder}",
        "--data.corpus=/no/such.txt",
        "--model.hidden_size=0",
    ]
    assert main(args) == 2
    assert f"{folder} is a file, not a folder" in capsys.readouterr().err


def test_an_interrupted_per_char_table_leaves_the_earlier_one_whole(work, monkeypatch, capsys):
    table = work["dir"] / "surprisal.tsv"
    table.write_text("an earlier table")
    real, calls = score_cli.surprisal, []

    def second_file_interrupted(*args):
        if calls:
            raise KeyboardInterrupt  # Ctrl-C while the second file is scored
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(score_cli, "surprisal", second_file_interrupted)
    text = str(work["dir"] / "t.txt")
    assert main(["score", f"--ckpt_path={work['ckpt']}", text, text, "--per_char", str(table)]) == 130
    assert table.read_text() == "an earlier table"
    assert sorted(p.name for p in work["dir"].iterdir() if p.name.startswith(".")) == []
    assert capsys.readouterr().out.count("bits/character") == 1  # the first file's line, kept


def test_an_earlier_table_and_an_earlier_export_are_replaced_when_the_new_one_is_whole(work, capsys):
    table, export = work["dir"] / "surprisal.tsv", work["dir"] / "m.pt"
    table.write_text("an earlier table")
    export.write_bytes(b"an earlier export")
    text = str(work["dir"] / "t.txt")
    assert main(["score", f"--ckpt_path={work['ckpt']}", text, "--per_char", str(table)]) == 0
    assert table.read_text().startswith("file\tposition\tcharacter\tbits\n")
    assert main(["export", f"--ckpt_path={work['ckpt']}", str(export)]) == 0
    assert torch.load(export, weights_only=True)["format"] == "torch-charrnn plain 1"


SAMPLE = [CHARRNN, "sample", "--length=200000", "--seed=1"]


def test_sample_into_a_closed_pipe_ends_quietly(work):
    proc = subprocess.Popen(
        [*SAMPLE, f"--ckpt_path={work['ckpt']}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert len(os.read(proc.stdout.fileno(), 100)) > 0  # what `| head -c 100` reads, then it goes away
    proc.stdout.close()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE  # as the shell expects of a writer to a closed pipe
    assert proc.stderr.read() == b""


@pytest.mark.parametrize("command", ["sample", "score"])
def test_ctrl_c_ends_sample_and_score_with_130_and_keeps_the_text_so_far(work, command):
    big = work["dir"] / "big.txt"
    big.write_text(TEXT * 200, encoding="utf-8")
    args = SAMPLE if command == "sample" else [CHARRNN, "score", str(work["dir"] / "t.txt"), str(big)]
    proc = subprocess.Popen(
        [*args, f"--ckpt_path={work['ckpt']}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = os.read(proc.stdout.fileno(), 20)  # it is under way (unbuffered: communicate reads the pipe)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and err == b""
    assert len(first + out) >= 20
    if command == "score":
        assert (first + out).decode().startswith(f"{work['dir'] / 't.txt'}: ")  # the first file's line stays
