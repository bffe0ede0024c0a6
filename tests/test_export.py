"""charrnn export: the torch file (read in a process that cannot import torch_charrnn or Lightning)
and the ONNX file (through onnxruntime) give CharRNN's logits over a 2,000-character text with the
state carried, for every cell at 1 and 2 layers in float32 and at 2 in float64, a byte model and a
3-layer model trained with dropout; charrnn score's bits per character and charrnn sample's text come back
from them; the README's snippets run; bad input is one line."""

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CELL_DEPTHS, CELLS, FUSED_CELLS, save_checkpoint

from torch_charrnn import CharRNN
from torch_charrnn.cli import main
from torch_charrnn.data.corpus import builtin_text
from torch_charrnn.data.encoded import encode
from torch_charrnn.inference import plain, portable

ROOT = Path(__file__).resolve().parents[1]
TEXT = builtin_text()[:1985] + " café, naïve ☺\n"  # 2,000 characters, a few of them beyond ASCII
PRIME, LENGTH, SEED, TEMPERATURE = TEXT[:12], 200, 5, 0.8
# cell, layers, dtype, unit, dropout (off in the export, as in CharRNN's evaluation) and, where
# given, zoneout's rates on h and c (their expectation in the export, as in CharRNN's evaluation)
MODELS = [
    *((cell, L, "float32", "chars", 0.0) for cell, L in CELL_DEPTHS),
    *((cell, 2, "float64", "chars", 0.0) for cell in CELLS),
    ("lstm", 2, "float32", "bytes", 0.0),
    ("gru", 3, "float32", "chars", 0.3),
    ("lstm", 2, "float32", "chars", 0.3, 0.2, 0.1),
    ("lngru", 2, "float64", "chars", 0.0, 0.3),
]
# the models whose cell has a module in torch.nn, which the torch file holds; the others export to
# ONNX alone, and a torch file of theirs is refused in one line (a cell torch.nn lacks, zoneout)
PLAIN_MODELS = [m for m in MODELS if m[0] in FUSED_CELLS and not any(m[5:])]
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}  # relative, to the largest logit
needs_onnx = pytest.mark.skipif(portable.onnx_missing() is not None, reason="needs the export extra")

# Loads every torch file with only torch: torch_charrnn and Lightning cannot be imported. Logits of
# the whole text in one call and in chunks with the state carried, and a sample drawn the way
# charrnn sample draws (Gumbel-max, noise for the whole sample in one draw of the seeded generator).
PLAIN_PROCESS = """
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch_charrnn", "lightning", "pytorch_lightning"):
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, Refuse())
import torch

PlainCharRNN = runpy.run_path(sys.argv[1])["PlainCharRNN"]
jobs, results = torch.load(sys.argv[2]), {}
for name, job in jobs.items():
    saved = torch.load(job["path"], weights_only=True)
    model = PlainCharRNN(**saved["config"]).to(saved["state_dict"]["out.weight"].dtype).eval()
    model.load_state_dict(saved["state_dict"])
    ids, prime = job["ids"][None], job["prime"][None]
    with torch.no_grad():
        whole, _ = model(ids)
        chunks, state = [], None
        for start in range(0, ids.shape[1], 300):
            logits, state = model(ids[:, start : start + 300], state)
            chunks.append(logits)
        _, state = model(prime[:, :-1])
        x, drawn = prime[:, -1:], []
        V, generator = len(saved["config"]["vocab"]), torch.Generator().manual_seed(job["seed"])
        u = torch.rand(job["length"], 1, V, generator=generator, dtype=whole.dtype)
        for t in range(job["length"]):
            logits, state = model(x, state)
            x = (logits[0, -1] / job["temperature"] - u[t, 0].log().neg().log()).argmax().view(1, 1)
            drawn.append(int(x))
    chunked = torch.cat(chunks, 1)[0]
    results[name] = {"whole": whole[0], "chunked": chunked, "sample": drawn, "unit": saved["unit"]}
assert not [m for m in sys.modules if m.split(".")[0] in ("torch_charrnn", "lightning")]
torch.save(results, sys.argv[3])
"""


def name_of(model) -> str:
    return "-".join(map(str, model))


def a_model(
    cell: str, L: int, dtype: str, unit: str, dropout: float, zoneout: float = 0.0, zoneout_c: float = 0.0
) -> tuple[CharRNN, str]:
    """A CharRNN whose weights make every gate and unit work (not the near-silent initialisation),
    with the recurrence contracting as a trained model's does, so that rounding does not grow."""
    vocab = TEXT.encode().decode("latin-1") if unit == "bytes" else TEXT
    vocab = "".join(sorted(set(vocab)))
    torch.manual_seed(0)
    regularisers = {"dropout": dropout, "zoneout": zoneout, "zoneout_c": zoneout_c}
    model = CharRNN(len(vocab), 24, cell=cell, num_layers=L, vocab=vocab, unit=unit, **regularisers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            rows = p.shape[0] if p.dim() == 2 and name != "layers.0.W_xh" else 1
            p.copy_(torch.randn_like(p) * (0.9 if "W_hh" in name else 1.0) / math.sqrt(rows))
    return model.to(getattr(torch, dtype)).eval(), vocab


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model of MODELS: its checkpoint, CharRNN's logits over TEXT, both exported files, and
    what the torch files give in a process without torch_charrnn."""
    tmp = tmp_path_factory.mktemp("export")
    found, jobs = {}, {}
    for spec in MODELS:
        name = name_of(spec)
        model, vocab = a_model(*spec)
        ckpt = save_checkpoint(model, tmp / f"{name}.ckpt")
        ids = encode(TEXT, vocab, spec[3]).long()
        with torch.no_grad():
            want = model(ids[None])[0][0]  # (N, V), the state carried from the first symbol
        files = {"torch": tmp / f"{name}.pt"} if spec in PLAIN_MODELS else {}
        if portable.onnx_missing() is None:
            files["onnx"] = tmp / f"{name}.onnx"
        for path in files.values():
            assert main(["export", f"--ckpt_path={ckpt}", str(path)]) == 0
        found[name] = {"ckpt": ckpt, "ids": ids, "want": want, "vocab": vocab, "files": files}
        if "torch" not in files:
            continue
        jobs[name] = {
            "path": str(files["torch"]),
            "ids": ids,
            "prime": encode(PRIME, vocab, spec[3]).long(),
            **{"length": LENGTH, "seed": SEED, "temperature": TEMPERATURE},
        }
    torch.save(jobs, tmp / "jobs.pt")
    run = subprocess.run(
        [sys.executable, "-c", PLAIN_PROCESS, plain.__file__, tmp / "jobs.pt", tmp / "results.pt"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for name, result in torch.load(tmp / "results.pt").items():
        found[name]["plain"] = result
    return found


def assert_same_logits(got, want, dtype: str):
    tolerance = TOLERANCE[dtype]
    assert got.dtype == want.dtype == getattr(torch, dtype)
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance * want.abs().max().item())


@pytest.mark.parametrize("model", PLAIN_MODELS, ids=name_of)
def test_the_torch_export_gives_charrnns_logits_without_torch_charrnn(exported, model):
    found = exported[name_of(model)]
    assert_same_logits(found["plain"]["whole"], found["want"], model[2])
    assert_same_logits(found["plain"]["chunked"], found["want"], model[2])  # the state carried across calls
    assert found["plain"]["unit"] == model[3]


@needs_onnx
@pytest.mark.parametrize("model", MODELS, ids=name_of)
def test_the_onnx_export_gives_charrnns_logits_one_step_at_a_time(exported, model):
    found = exported[name_of(model)]
    got = portable.onnx_file_logits(found["files"]["onnx"], found["ids"])
    assert_same_logits(got, found["want"], model[2])


@needs_onnx
def test_the_onnx_step_takes_any_number_of_streams_and_says_what_it_holds(exported):
    import onnxruntime

    found = exported[name_of(("lstm", 2, "float32", "chars", 0.0))]
    session = onnxruntime.InferenceSession(str(found["files"]["onnx"]))
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["vocab"]) == found["vocab"] and meta["unit"] == "chars"
    assert (meta["cell"], meta["num_layers"], meta["hidden_size"]) == ("lstm", "2", "24")
    assert [i.name for i in session.get_inputs()] == ["x", "h", "c"]
    assert [o.name for o in session.get_outputs()] == ["logits", "h_next", "c_next"]
    rng = np.random.default_rng(0)
    x = np.array([3, 0, 7], np.int64)
    state = {n: rng.standard_normal((2, 3, 24)).astype(np.float32) for n in ("h", "c")}
    together = session.run(None, {"x": x, **state})
    for b in range(3):  # three streams at once are three streams alone
        alone = session.run(None, {"x": x[b : b + 1], **{n: s[:, b : b + 1] for n, s in state.items()}})
        np.testing.assert_allclose(together[0][b], alone[0][0], rtol=1e-6)
        np.testing.assert_allclose(together[2][:, b], alone[2][:, 0], rtol=1e-6)


def bits(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Bits per symbol of ``ids`` after the first, from the logits that predict each."""
    nats = torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:], reduction="mean")
    return nats.item() / math.log(2)


@pytest.mark.parametrize("model", [m for m in MODELS if m[2] == "float32"], ids=name_of)
def test_charrnn_scores_bits_come_back_from_the_exported_files(exported, model, tmp_path, capsys):
    found = exported[name_of(model)]
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    capsys.readouterr()
    assert main(["score", f"--ckpt_path={found['ckpt']}", str(text), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["bpc"]
    if "plain" in found:
        assert bits(found["plain"]["whole"], found["ids"]) == pytest.approx(scored, rel=1e-5)
    if "onnx" in found["files"]:
        onnx = portable.onnx_file_logits(found["files"]["onnx"], found["ids"])
        assert bits(onnx, found["ids"]) == pytest.approx(scored, rel=1e-5)


@pytest.mark.parametrize("model", [m for m in PLAIN_MODELS if m[2] == "float32"], ids=name_of)
def test_a_sample_from_the_torch_export_is_charrnn_samples_with_the_same_seed(exported, model, capsys):
    found = exported[name_of(model)]
    capsys.readouterr()
    args = [f"--ckpt_path={found['ckpt']}", f"--prime={PRIME}", f"--length={LENGTH}", f"--seed={SEED}"]
    assert main(["sample", *args, f"--temperature={TEMPERATURE}"]) == 0
    drawn = "".join(found["vocab"][i] for i in found["plain"]["sample"])
    if model[3] == "bytes":
        drawn = drawn.encode("latin-1").decode("utf-8", errors="replace")
    assert capsys.readouterr().out == PRIME + drawn + "\n"


def test_export_imports_torch_not_lightning(ckpt, tmp_path):
    code = (
        "import sys; from torch_charrnn.cli import main; "
        f"assert main(['export', '--ckpt_path', {str(ckpt)!r}, {str(tmp_path / 'm.pt')!r}]) == 0; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics')]"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {tmp_path / 'm.pt'} (torch: nn.GRU + nn.Linear, gru 1 x 24")


def test_a_half_precision_checkpoint_exports_its_weights_exactly_in_float32(tmp_path, capsys):
    model, _ = a_model("lstm", 1, "float32", "chars", 0.0)
    ckpt = save_checkpoint(model.to(torch.bfloat16), tmp_path / "bf16.ckpt")
    assert main(["export", f"--ckpt_path={ckpt}", str(tmp_path / "m.pt")]) == 0
    saved = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert saved["out.weight"].dtype == torch.float32
    assert torch.equal(saved["out.weight"], model.W_hy.t().float())
    assert ", float32); its logits" in capsys.readouterr().out


def test_a_checkpoint_of_release_0_1_exports(tmp_path, capsys):
    fixture = ROOT / "tests" / "fixtures" / "flat_tanh_v0.1.ckpt"
    assert main(["export", f"--ckpt_path={fixture}", str(tmp_path / "old.pt")]) == 0
    saved = torch.load(tmp_path / "old.pt", weights_only=True)
    assert saved["config"]["cell"] == "RNN" and saved["config"]["num_layers"] == 1
    assert "its logits are the checkpoint's within" in capsys.readouterr().out


def readme_snippets() -> list[str]:
    """The README's export section's Python blocks: loading the torch file, sampling the ONNX file."""
    section = (ROOT / "README.md").read_text().split("## Take a model elsewhere")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("which", ["torch", "onnx"])
def test_the_readmes_snippets_run_with_only_what_they_import(exported, which, tmp_path):
    if which == "onnx" and portable.onnx_missing() is not None:
        pytest.skip("needs the export extra")
    found = exported[name_of(("lstm", 2, "float32", "chars", 0.0))]
    copy = tmp_path / f"model.{'pt' if which == 'torch' else 'onnx'}"
    copy.write_bytes(found["files"][which].read_bytes())
    (tmp_path / "plain.py").write_text(Path(plain.__file__).read_text())  # as the README says to
    snippet = readme_snippets()[0 if which == "torch" else 1]
    refused = ("torch_charrnn", "lightning") if which == "torch" else ("torch_charrnn", "lightning", "torch")
    guard = textwrap.dedent(f"""
        import importlib.abc, sys
        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {refused!r}:
                    raise ImportError(name + " is not installed here")
        sys.meta_path.insert(0, Refuse())
        """)
    run = subprocess.run(
        [sys.executable, "-c", guard + snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout.rstrip("\n")
    assert out and set(out) <= set(found["vocab"])


def export_error(capsys, *args) -> str:
    assert main(["export", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("charrnn: error: ") and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model, _ = a_model("gru", 1, "float32", "chars", 0.0)
    return save_checkpoint(model, tmp_path_factory.mktemp("bad") / "model.ckpt")


def test_export_rejects_an_unknown_format(tmp_path, capsys, ckpt):
    err = export_error(capsys, f"--ckpt_path={ckpt}", "--format=tflite", tmp_path / "m.tflite")
    assert "invalid choice: 'tflite'" in err and "'torch', 'onnx'" in err
    err = export_error(capsys, f"--ckpt_path={ckpt}", tmp_path / "m.bin")
    assert "pass --format torch or --format onnx" in err


def test_export_rejects_an_output_path_that_cannot_be_written(tmp_path, capsys, ckpt):
    missing = tmp_path / "no" / "such" / "m.pt"
    err = export_error(capsys, f"--ckpt_path={ckpt}", missing)
    assert f"the folder {missing.parent} does not exist" in err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    err = export_error(capsys, f"--ckpt_path={ckpt}", blocked / "m.pt")
    assert f"cannot write {blocked / 'm.pt'}" in err
    assert "is a folder" in export_error(capsys, f"--ckpt_path={ckpt}", tmp_path)


@pytest.mark.parametrize("cell", sorted(set(CELLS) - set(FUSED_CELLS)))
def test_a_torch_file_of_a_cell_torch_nn_lacks_is_refused_naming_onnx(tmp_path, capsys, cell):
    model, _ = a_model(cell, 1, "float32", "chars", 0.0)
    ckpt = save_checkpoint(model, tmp_path / "m.ckpt")
    err = export_error(capsys, f"--ckpt_path={ckpt}", tmp_path / "m.pt")
    assert f"the {cell} cell has none" in err and "export to ONNX instead" in err
    assert list(tmp_path.iterdir()) == [ckpt]


def test_a_torch_file_of_a_zoned_model_is_refused_naming_onnx(tmp_path, capsys):
    model, _ = a_model("lstm", 1, "float32", "chars", 0.0, 0.1)
    ckpt = save_checkpoint(model, tmp_path / "m.ckpt")
    err = export_error(capsys, f"--ckpt_path={ckpt}", tmp_path / "m.pt")
    assert "nn.LSTM, which cannot hold this model's zoneout" in err and "export to ONNX instead" in err
    assert list(tmp_path.iterdir()) == [ckpt]


def test_onnx_without_its_packages_names_the_extra(tmp_path, capsys, ckpt, monkeypatch):
    monkeypatch.setattr(portable, "onnx_missing", lambda: "onnxruntime")
    err = export_error(capsys, f"--ckpt_path={ckpt}", tmp_path / "m.onnx")
    assert 'needs the package onnxruntime, of the export extra: pip install -e ".[export]"' in err
    assert not (tmp_path / "m.onnx").exists()


def test_an_export_that_fails_its_check_leaves_an_earlier_file_as_it_was(tmp_path, capsys, ckpt, monkeypatch):
    out = tmp_path / "m.pt"
    out.write_bytes(b"an earlier export")
    wrong = portable.model_logits
    monkeypatch.setattr(portable, "model_logits", lambda *args: wrong(*args) + 1)
    assert main(["export", f"--ckpt_path={ckpt}", str(out)]) == 1
    assert "logits differ from the checkpoint's" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier export" and list(tmp_path.iterdir()) == [out]
