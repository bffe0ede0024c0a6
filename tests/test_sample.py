"""charrnn sample: determinism, every option, and bad arguments; from a checkpoint with no corpus."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CELL_DEPTHS

import reference_numpy as rn
from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.cli import main
from torch_charrnn.inference.sampling import generate, sample_text
from torch_charrnn.oracle import random_problem
from torch_charrnn.rnn.cells import get_cell


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small trained-looking model saved the way charrnn fit saves it."""
    import lightning as L

    tmp = tmp_path_factory.mktemp("ckpt")
    data = CharDataModule(max_chars=30_000, batch_size=8, seq_len=32)
    torch.manual_seed(0)
    model = CharRNN(data.vocab_size, 32, lr=0.05, whh_scale=0.5, vocab=data.vocab)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=150,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    path = tmp / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def sample(capsys, ckpt, *args):
    assert main(["sample", f"--ckpt_path={ckpt}", *args]) == 0
    return capsys.readouterr().out


def test_same_seed_same_text_other_seed_other_text(capsys, ckpt):
    a = sample(capsys, ckpt, "--seed=1", "--length=200")
    b = sample(capsys, ckpt, "--seed=1", "--length=200")
    c = sample(capsys, ckpt, "--seed=2", "--length=200")
    assert a == b and a != c
    assert len(a) == 201  # 200 characters and a newline


def test_prime_is_printed_first(capsys, ckpt):
    out = sample(capsys, ckpt, "--prime=The ", "--length=50", "--seed=0")
    assert out.startswith("The ") and len(out) == 4 + 50 + 1


def test_temperature_zero_is_greedy_after_warming_up_on_the_prime(capsys, ckpt):
    model = CharRNN.load_from_checkpoint(ckpt, map_location="cpu")
    out = sample(capsys, ckpt, "--prime=The c", "--length=30", "--temperature=0", "--seed=5")
    assert out == sample(capsys, ckpt, "--prime=The c", "--length=30", "--temperature=0", "--seed=6")
    # Greedy by hand: read the prime, then feed the argmax back in, carrying the state throughout.
    vocab, layer = model.hparams.vocab, model.layers[0]
    with torch.no_grad():
        h, chars = torch.zeros(1, 32), []
        for c in "The c":
            x = torch.tensor([vocab.index(c)])
            h = torch.tanh(layer.W_xh[x] + h @ layer.W_hh + layer.b_h)
        for _ in range(30):
            x = (h @ model.W_hy + model.b_y).argmax(-1)
            chars.append(vocab[x.item()])
            h = torch.tanh(layer.W_xh[x] + h @ layer.W_hh + layer.b_h)
    assert out == "The c" + "".join(chars) + "\n"


def test_top_k_one_is_greedy(capsys, ckpt):
    greedy = sample(capsys, ckpt, "--prime=x", "--length=40", "--temperature=0")
    assert sample(capsys, ckpt, "--prime=x", "--length=40", "--top_k=1", "--seed=3") == greedy


def test_top_k_limits_the_choices(ckpt):
    model = CharRNN.load_from_checkpoint(ckpt, map_location="cpu")
    g = torch.Generator().manual_seed(0)
    # With k=2 every character must be one of the two most likely given the state before it.
    text = model.sample_text(100, prime="T", top_k=2, generator=g)
    vocab, index = model.hparams.vocab, {c: i for i, c in enumerate(model.hparams.vocab)}
    layer = model.layers[0]
    with torch.no_grad():
        h, x = torch.zeros(1, 32), torch.tensor([index["T"]])
        for ch in text:
            h = torch.tanh(layer.W_xh[x] + h @ layer.W_hh + layer.b_h)
            top2 = torch.topk(h @ model.W_hy + model.b_y, 2).indices[0].tolist()
            assert index[ch] in top2
            x = torch.tensor([index[ch]])
    assert set(text) <= set(vocab)


def test_num_samples_gives_that_many_samples(capsys, ckpt):
    out = sample(capsys, ckpt, "--num_samples=3", "--length=20")
    assert [line for line in out.splitlines() if line.startswith("--- sample")] == [
        "--- sample 1 of 3 ---",
        "--- sample 2 of 3 ---",
        "--- sample 3 of 3 ---",
    ]


def test_sample_streams_from_the_console_script(ckpt):
    result = subprocess.run(
        [
            Path(sys.executable).parent / "charrnn",
            "sample",
            "--ckpt_path",
            str(ckpt),
            "--length",
            "64",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 65


def constant_model_weights(logits: list[float]) -> dict:
    """Weights whose next-character distribution is softmax(logits) whatever the state."""
    V, H = len(logits), 3
    layer = {"W_xh": torch.zeros(V, H), "W_hh": torch.zeros(H, H), "b_h": torch.zeros(H)}
    return {"layers": [layer], "W_hy": torch.zeros(H, V), "b_y": torch.tensor(logits)}


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.5, None), (2.0, None), (1.0, 2)])
def test_generate_draws_from_the_tempered_softmax(temperature, top_k):
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    weights = constant_model_weights(logits.tolist())
    g = torch.Generator().manual_seed(0)
    state, x = (torch.zeros(1, 8, 3),), torch.zeros(8, dtype=torch.long)
    chunks = generate(weights, get_cell("tanh"), state, x, 5000, g, temperature, top_k)
    draws = torch.cat([c.reshape(-1) for c in chunks])
    want = torch.softmax(logits / temperature, dim=0)
    if top_k is not None:
        want = torch.where(logits >= torch.topk(logits, top_k).values[-1], want, 0)
        want /= want.sum()
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    torch.testing.assert_close(freq, want.double(), atol=0.01, rtol=0)  # 40,000 draws: sd < 0.0025


@pytest.mark.parametrize(("cell", "L"), CELL_DEPTHS)
def test_greedy_sampling_matches_numpy_for_every_cell_and_depth(cell, L):
    """The torch sampler (prime warm-up, then one step of every layer a character) against the
    NumPy reference's, greedy, from random weights."""
    vocab, texts = "abcdefg", set()
    for seed in range(6):
        params = random_problem(7, 6, 1, 1, 3.0, seed, cell, L)[0]
        params["b_y"][:] = 0  # so that the state, not a bias, decides the next character
        weights = {
            "layers": [{k: torch.from_numpy(v) for k, v in p.items()} for p in params["layers"]],
            **{k: torch.from_numpy(params[k]) for k in ("W_hy", "b_y")},
        }
        text = sample_text(weights, get_cell(cell), vocab, 30, prime="cab", temperature=0.0)
        state = rn.zero_state(params, 1, cell)
        _, state, _ = rn.forward(params, np.array([[2, 0]]), state, cell)  # the prime but its last character
        idx, _ = rn.sample(params, state, np.array([1]), 30, np.random.default_rng(0), cell, temperature=0)
        assert text == "".join(vocab[i] for i in idx[0]), seed
        texts.add(text)
    assert max(len(set(t)) for t in texts) > 1, "some weights must make the choice depend on the state"


@pytest.mark.parametrize(("cell", "L"), [("gru", 2), ("lstm", 2)])
def test_every_option_samples_from_a_gated_model(cell, L):
    model = CharRNN(5, 8, cell=cell, num_layers=L, vocab="abcd\n", init_std=1.0)
    g = torch.Generator().manual_seed(0)
    streams = list(model.sample(50, prime="ab", temperature=0.7, top_k=3, generator=g, num_streams=3))
    texts = ["".join(chunk[i] for chunk in streams) for i in range(3)]
    assert all(len(t) == 50 and set(t) <= set("abcd\n") for t in texts)
    again = list(
        model.sample(
            50,
            prime="ab",
            temperature=0.7,
            top_k=3,
            generator=torch.Generator().manual_seed(0),
            num_streams=3,
        )
    )
    assert again == streams, "the same seed gives the same text"
    assert len(set(texts)) > 1, "every stream draws its own characters"
