"""charrnn sample: determinism, every option, and bad arguments; from a checkpoint with no corpus."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.cli import main


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
    vocab = model.hparams.vocab
    with torch.no_grad():
        h, chars = torch.zeros(1, 32), []
        for c in "The c":
            x = torch.tensor([vocab.index(c)])
            h = torch.tanh(model.W_xh[x] + h @ model.W_hh + model.b_h)
        for _ in range(30):
            x = (h @ model.W_hy + model.b_y).argmax(-1)
            chars.append(vocab[x.item()])
            h = torch.tanh(model.W_xh[x] + h @ model.W_hh + model.b_h)
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
    with torch.no_grad():
        h, x = torch.zeros(1, 32), torch.tensor([index["T"]])
        for ch in text:
            h = torch.tanh(model.W_xh[x] + h @ model.W_hh + model.b_h)
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


def constant_model_params(logits: list[float]) -> dict[str, torch.Tensor]:
    """Weights whose next-character distribution is softmax(logits) whatever the state."""
    V, H = len(logits), 3
    return {
        "W_xh": torch.zeros(V, H),
        "W_hh": torch.zeros(H, H),
        "b_h": torch.zeros(H),
        "W_hy": torch.zeros(H, V),
        "b_y": torch.tensor(logits),
    }


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.5, None), (2.0, None), (1.0, 2)])
def test_generate_draws_from_the_tempered_softmax(temperature, top_k):
    from torch_charrnn.rnn import generate

    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    params = constant_model_params(logits.tolist())
    g = torch.Generator().manual_seed(0)
    draws = torch.cat(
        [
            c.reshape(-1)
            for c in generate(
                params, torch.zeros(8, 3), torch.zeros(8, dtype=torch.long), 5000, g, temperature, top_k
            )
        ]
    )
    want = torch.softmax(logits / temperature, dim=0)
    if top_k is not None:
        want = torch.where(logits >= torch.topk(logits, top_k).values[-1], want, 0)
        want /= want.sum()
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    torch.testing.assert_close(freq, want.double(), atol=0.01, rtol=0)  # 40,000 draws: sd < 0.0025


def test_sampling_does_not_import_lightning(ckpt):
    """`charrnn sample` and `charrnn --help` load torch and the checkpoint, not the training stack."""
    code = (
        "import sys\n"
        "from torch_charrnn.cli import main\n"
        f"assert main(['sample', '--ckpt_path', {str(ckpt)!r}, '--length', '20']) == 0\n"
        "assert main(['--help']) == 0\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
