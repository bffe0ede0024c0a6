"""CharRNN: the public API, evaluation against NumPy, and checkpoints that rebuild the model."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from conftest import model_from_numpy

import reference_numpy as rn
from torch_charrnn import CharDataModule, CharRNN


def quiet_trainer(**kwargs):
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**defaults, **kwargs})


def test_forward_shapes_and_zero_default_state():
    model = CharRNN(vocab_size=7, hidden_size=5)
    inputs = torch.randint(0, 7, (3, 4))
    logits, h_last = model(inputs)
    assert logits.shape == (3, 4, 7) and h_last.shape == (3, 5)
    logits0, h0_last = model(inputs, torch.zeros(3, 5))
    torch.testing.assert_close(logits, logits0)
    torch.testing.assert_close(h_last, h0_last)


def test_parameters_are_named_and_initialised_as_specified():
    torch.manual_seed(0)
    model = CharRNN(vocab_size=60, hidden_size=50, whh_scale=0.3, init_std=0.05)
    assert [name for name, _ in model.named_parameters()] == list(rn.PARAM_NAMES)
    torch.testing.assert_close(model.W_hh.detach(), 0.3 * torch.eye(50))
    assert model.b_h.abs().max() == 0 and model.b_y.abs().max() == 0
    assert abs(model.W_xh.std().item() - 0.05) < 0.005 and abs(model.W_hy.std().item() - 0.05) < 0.005


def test_vocab_must_match_vocab_size():
    with pytest.raises(ValueError, match="`vocab` has 3 characters but `vocab_size` is 4"):
        CharRNN(vocab_size=4, vocab="abc")


def test_validation_and_test_bpc_match_numpy_with_carried_state(small_text):
    data = CharDataModule(text=small_text, batch_size=3, seq_len=12, val_fraction=0.2, test_fraction=0.2)
    params = rn.init_params(data.vocab_size, 16, np.random.default_rng(0), whh_scale=0.9, init_std=0.3)
    model = model_from_numpy(params, vocab=data.vocab)
    trainer = quiet_trainer(precision="64-true")
    val = trainer.validate(model, data)[0]
    test = trainer.test(model, data)[0]
    encoded = rn.encode(small_text, data.vocab)
    for split, result in (("val", val), ("test", test)):
        start, stop = data.split_bounds()[split]
        want = rn.evaluate(params, encoded[start:stop], 3, 12)
        assert result[f"{split}/loss"] == pytest.approx(want, rel=1e-12)
        assert result[f"{split}/bpc"] == pytest.approx(want / math.log(2), rel=1e-12)


def test_checkpoint_rebuilds_the_model_without_the_corpus(tmp_path, small_text):
    data = CharDataModule(text=small_text, batch_size=2, seq_len=8)
    model = CharRNN(data.vocab_size, hidden_size=12, lr=0.05, whh_scale=0.5, vocab=data.vocab)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = CharRNN.load_from_checkpoint(path, map_location="cpu")
    assert (
        loaded.hparams.vocab == data.vocab and loaded.hparams.hidden_size == 12 and loaded.hparams.lr == 0.05
    )
    for name in rn.PARAM_NAMES:
        torch.testing.assert_close(getattr(loaded, name), getattr(model, name))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0}, "`lr` must be positive, got 0"),
        ({"hidden_size": 0}, "`hidden_size` must be a positive integer, got 0"),
        ({"eps": -1.0}, "`eps` must be positive, got -1.0"),
    ],
)
def test_the_library_names_its_own_arguments_not_cli_flags(kwargs, message):
    with pytest.raises(ValueError) as err:
        CharRNN(vocab_size=5, **kwargs)
    assert str(err.value) == message
