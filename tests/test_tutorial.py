"""The tutorial's RecurrentNN and ``python -m reference_numpy``: its program runs, each bug fixed."""

import os
import subprocess
import sys

import numpy as np
import pytest

import reference_numpy as rn
from reference_numpy.tutorial import RecurrentNN


def make_model(text, **kwargs):
    vocab = rn.build_vocab(text)
    kwargs = {"h_size": 16, "seq_len": 10, "epochs": 3, **kwargs}
    return RecurrentNN({c: i for i, c in enumerate(vocab)}, dict(enumerate(vocab)), len(vocab), **kwargs)


def test_tutorial_trains_end_to_end_and_its_loss_goes_down(small_text):
    model = make_model(small_text[:1000], epochs=10, learning_rate=0.1)
    losses, params = model.train(small_text[:1000])
    steps_per_epoch = (1000 - 1) // 10
    assert isinstance(losses, list) and len(losses) == 10 * steps_per_epoch  # a list, not a float
    assert all(isinstance(x, float) for x in losses)
    assert losses[-1] < losses[0] - 0.2
    assert set(rn.named_arrays(params)) == {"layers.0.W_xh", "layers.0.W_hh", "layers.0.b_h", "W_hy", "b_y"}


def test_tutorial_updates_every_parameter(small_text):
    model = make_model(small_text[:500])
    before = rn.named_arrays(rn.cast(model.params, np.float64))
    model.train(small_text[:500])
    for name, value in rn.named_arrays(model.params).items():  # the tutorial only ever computed dW_hh
        assert np.abs(value - before[name]).max() > 1e-4, name


def test_tutorial_accumulates_adagrad_memory(small_text):
    model = make_model(small_text[:500])
    model.train(small_text[:500])
    assert set(model.m_params) == set(rn.named_arrays(model.params))
    for name in model.m_params:  # the tutorial never updated its memory
        assert (model.m_params[name] > 0).any(), name
        assert (model.m_params[name] >= 0).all(), name


def test_tutorial_uses_its_clip_value(small_text):
    text = small_text[:500]
    tight, loose = make_model(text, clip_value=1e-3), make_model(text, clip_value=1e9)
    tight.train(text)
    loose.train(text)
    assert np.abs(tight.params["layers"][0]["W_hh"] - loose.params["layers"][0]["W_hh"]).max() > 1e-4


def test_tutorial_class_matches_the_reference_training_loop(small_text):
    """Same steps as reference_numpy.train with B=1, which carries the hidden state across windows
    (the tutorial's ``self.ho`` typo dropped it) and is itself checked against Lightning."""
    text = small_text[:400]
    model = make_model(text, epochs=2, learning_rate=0.05, clip_value=1.0, seed=3)
    init = rn.cast(model.params, np.float64)
    model.train(text)
    rn.train(init, rn.encode(text, rn.build_vocab(text)), 1, 10, 2 * 39, 0.05, clip_val=1.0)
    for name, value in rn.named_arrays(model.params).items():
        np.testing.assert_allclose(value, rn.named_arrays(init)[name], rtol=1e-12, atol=1e-14, err_msg=name)
    assert np.abs(model.h0).max() > 0, "the last window's state is kept"


def test_tutorial_sampling_carries_the_hidden_state(small_text):
    model = make_model(small_text[:500], seed=5)
    model.train(small_text[:500])
    out = model.test(40, 2)

    # The same draws written out by hand, feeding each state into the next character.
    model2 = make_model(small_text[:500], seed=5)
    model2.train(small_text[:500])
    rng = model2.rng
    p = {**model2.params["layers"][0], **model2.params}
    h, x, chars = np.zeros((1, 16)), np.array([2]), []
    for _ in range(40):
        h = np.tanh(p["W_xh"][x] + h @ p["W_hh"] + p["b_h"])
        x = rn.pick(h @ p["W_hy"] + p["b_y"], rng)
        chars.append(model2.idx_to_char[int(x[0])])
    assert out == "".join(chars)
    assert len(set(out)) > 3


def test_vocabulary_is_the_same_in_every_process():
    """set() order depends on PYTHONHASHSEED; the vocabulary must not."""
    text = "the quick brown fox jumps over 13 lazy dogs"
    code = f"import reference_numpy as rn; print(repr(rn.build_vocab({text!r})))"
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    assert len(outputs) == 1
    assert eval(outputs.pop()) == "".join(sorted(set(text)))


def test_python_m_reference_numpy_reads_the_file_and_trains(tmp_path, small_text):
    path = tmp_path / "corpus.txt"
    path.write_text(small_text[:1500] + "\u00e9\u00e9", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "reference_numpy", str(path), "--epochs", "3", "--hidden", "16"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines[:3]] == ["Epoch: 1", "Epoch: 2", "Epoch: 3"]
    losses = [float(line.split("Loss: ")[1]) for line in lines[:3]]
    assert losses[2] < losses[0]
    sample = result.stdout.split("(nats/char)\n", 1)[1]
    assert len(sample) >= 200 and set(sample) <= set(path.read_text(encoding="utf-8")) | {"\n"}


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\xfa"])
def test_python_m_reference_numpy_rejects_unusable_files(tmp_path, content):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "reference_numpy", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert str(path) in result.stderr and "Traceback" not in result.stderr
