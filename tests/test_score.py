"""charrnn score: bits per character of whole files, exact against a plain loop and against
charrnn test on the same text; unknown characters, byte models, the outputs, no Lightning."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CELL_DEPTHS, SMALL_FIT, save_checkpoint

import reference_numpy as rn
from torch_charrnn import CharRNN
from torch_charrnn.cli import main
from torch_charrnn.cli.fit import cli_main
from torch_charrnn.inference.scoring import surprisal
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn.cells import get_cell

VOCAB = "abcdefg\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = CharRNN(len(VOCAB), 16, cell="gru", num_layers=2, vocab=VOCAB, init_std=0.5)
    return save_checkpoint(model, tmp_path_factory.mktemp("score") / "model.ckpt")


def score(capsys, *args) -> tuple[int, str, str]:
    code = main(["score", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("cell", "L"), CELL_DEPTHS)
def test_score_is_exactly_a_plain_one_character_at_a_time_loop(cell, L):
    """Chunked (7 symbols, so the state crosses chunks), against NumPy's reference stepping one
    character at a time with the state carried from the first, float64."""
    params = random_problem(7, 6, 1, 1, 1.5, 3, cell, L)[0]
    ids = np.random.default_rng(0).integers(0, 7, 40)
    weights = {
        "layers": [{k: torch.from_numpy(v) for k, v in p.items()} for p in params["layers"]],
        **{k: torch.from_numpy(params[k]) for k in ("W_hy", "b_y")},
    }
    got = surprisal(weights, get_cell(cell), torch.from_numpy(ids), chunk=7)
    state, want = rn.zero_state(params, 1, cell), []
    for x, y in zip(ids[:-1], ids[1:], strict=True):
        logits, state, _ = rn.forward(params, np.array([[x]]), state, cell)
        want.append(rn.cross_entropy(logits, np.array([[y]])))
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-12, atol=1e-12)


def test_score_equals_charrnn_test_on_the_same_text(tmp_path, capsys):
    """One test stream (eval_batch_size 1) whose windows cover the text exactly: charrnn test's
    test/loss and charrnn score's nats are the same figure."""
    args = [*SMALL_FIT, "--data.eval_batch_size=1", f"--trainer.default_root_dir={tmp_path}"]
    fit = cli_main(["fit", *args, "--trainer.max_steps=20", "--data.test_fraction=0.1"])
    ckpt = next(tmp_path.glob("**/last.ckpt"))
    tested = cli_main(["test", *args, "--data.test_fraction=0.1", f"--ckpt_path={ckpt}"])
    data, T = tested.datamodule, tested.datamodule.seq_len
    start, stop = data.split_bounds()["test"]
    windows = (stop - start - 1) // T
    text = data.encoded.decode(start, start + windows * T + 1)  # what the test windows read
    (tmp_path / "test.txt").write_text(text, encoding="utf-8")
    capsys.readouterr()  # what fit and test printed
    code, out, _ = score(capsys, "--ckpt_path", ckpt, tmp_path / "test.txt", "--json")
    row = json.loads(out)
    assert code == 0 and row["characters"] == windows * T
    assert row["nats"] == pytest.approx(tested.trainer.callback_metrics["test/loss"].item(), rel=1e-5)
    assert fit.trainer.global_step == 20


def test_one_line_per_file_and_json_for_scripts(tmp_path, capsys, ckpt):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("abcabcabc\n" * 20)
    b.write_text("gfedcba\n" * 3)
    code, out, _ = score(capsys, "--ckpt_path", ckpt, a, b)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"{a}: 199 characters, ") and " bits/character, " in lines[0]
    code, out, _ = score(capsys, "--ckpt_path", ckpt, a, b, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["characters"] for r in rows] == [199, 23] and all(r["skipped"] == 0 for r in rows)
    assert rows[0]["bpc"] == pytest.approx(rows[0]["nats"] / math.log(2))


def test_unknown_characters_are_one_error_listing_them_or_skipped_and_counted(tmp_path, capsys, ckpt):
    path = tmp_path / "odd.txt"
    path.write_text("abcXabcYYabc\n")
    code, out, err = score(capsys, "--ckpt_path", ckpt, path)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and "['X', 'Y']" in err and "--unknown skip" in err
    code, out, _ = score(capsys, "--ckpt_path", ckpt, path, "--unknown", "skip", "--json")
    row = json.loads(out)
    assert code == 0 and row["skipped"] == 3 and row["characters"] == len("abcabcabc\n") - 1


def test_per_char_writes_every_characters_surprisal(tmp_path, capsys, ckpt):
    path, table = tmp_path / "a.txt", tmp_path / "surprisal.tsv"
    path.write_text("abc\ndefg\n" * 5)
    code, out, _ = score(capsys, "--ckpt_path", ckpt, path, "--per_char", table, "--json")
    lines = table.read_text(encoding="utf-8").splitlines()
    assert code == 0 and lines[0] == "file\tposition\tcharacter\tbits" and len(lines) == 1 + 44
    rows = [line.split("\t") for line in lines[1:]]
    assert [json.loads(r[2]) for r in rows] == list(("abc\ndefg\n" * 5)[1:])
    assert np.mean([float(r[3]) for r in rows]) == pytest.approx(json.loads(out)["bpc"], abs=1e-4)


def test_a_byte_model_scores_any_file(tmp_path, capsys):
    torch.manual_seed(0)
    vocab = "".join(map(chr, range(256)))
    ckpt = save_checkpoint(CharRNN(256, 8, vocab=vocab, unit="bytes"), tmp_path / "bytes.ckpt")
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) + "caf\u00e9".encode() + b"\xff\xfe")
    code, out, _ = score(capsys, "--ckpt_path", ckpt, path, "--json")
    row = json.loads(out)
    assert code == 0 and row["bytes"] == 256 + 5 + 2 - 1 and row["bpc"] > 0


def test_bad_input_is_one_line(tmp_path, capsys, ckpt):
    code, _, err = score(capsys, "--ckpt_path", ckpt, tmp_path / "missing.txt")
    assert code == 2 and "missing.txt does not exist" in err
    (tmp_path / "one.txt").write_text("a")
    code, _, err = score(capsys, "--ckpt_path", ckpt, tmp_path / "one.txt")
    assert code == 2 and "fewer than two characters" in err
    (tmp_path / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    code, _, err = score(capsys, "--ckpt_path", ckpt, tmp_path / "latin.txt")
    assert code == 2 and "not valid utf-8" in err and "--encoding" in err


def test_score_imports_torch_not_lightning(tmp_path, ckpt):
    path = tmp_path / "a.txt"
    path.write_text("abcdefg\n" * 10)
    code = (
        "import sys; from torch_charrnn.cli import main; "
        f"assert main(['score', '--ckpt_path', {str(ckpt)!r}, {str(path)!r}]) == 0; "
        f"main(['sample', '--ckpt_path', {str(ckpt)!r}, '--length', '5']); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics')]"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: 79 characters")
