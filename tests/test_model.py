"""CharRNN: the public API, evaluation against NumPy, and checkpoints that rebuild the model."""

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CELL_DEPTHS, SMALL_FIT, model_from_numpy

import reference_numpy as rn
from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.cli.fit import cli_main


def quiet_trainer(**kwargs):
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(**{**defaults, **kwargs})


@pytest.mark.parametrize(("cell", "L"), CELL_DEPTHS)
def test_forward_shapes_and_zero_default_state(cell, L):
    model = CharRNN(vocab_size=7, hidden_size=5, cell=cell, num_layers=L)
    inputs = torch.randint(0, 7, (3, 4))
    logits, last = model(inputs)
    assert logits.shape == (3, 4, 7)
    assert len(last) == len(rn.get_cell(cell).STATE) and all(s.shape == (L, 3, 5) for s in last)
    logits0, last0 = model(inputs, tuple(torch.zeros(L, 3, 5) for _ in last))
    torch.testing.assert_close(logits, logits0)
    for s, s0 in zip(last, last0, strict=True):
        torch.testing.assert_close(s, s0)


@pytest.mark.parametrize(("cell", "L"), CELL_DEPTHS)
def test_parameters_are_named_as_the_numpy_reference_names_them(cell, L):
    model = CharRNN(vocab_size=6, hidden_size=4, cell=cell, num_layers=L)
    want = rn.named_arrays(rn.init_params(6, 4, np.random.default_rng(0), cell=cell, num_layers=L))
    mine = dict(model.named_parameters())
    assert set(mine) == set(want)
    assert all(mine[k].shape == want[k].shape for k in want)
    assert model.layers[L - 1].W_hh is mine[f"layers.{L - 1}.W_hh"]


def test_tanh_parameters_start_identity_recurrent_small_input_and_zero_bias():
    torch.manual_seed(0)
    model = CharRNN(vocab_size=60, hidden_size=50, whh_scale=0.3, init_std=0.05)
    layer = model.layers[0]
    torch.testing.assert_close(layer.W_hh.detach(), 0.3 * torch.eye(50))
    assert layer.b_h.abs().max() == 0 and model.b_y.abs().max() == 0
    assert abs(layer.W_xh.std().item() - 0.05) < 0.005 and abs(model.W_hy.std().item() - 0.05) < 0.005


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
def test_input_std_draws_layer_0s_character_rows_and_nothing_else(cell):
    torch.manual_seed(0)
    plain = CharRNN(vocab_size=60, hidden_size=50, cell=cell, num_layers=2)
    torch.manual_seed(0)
    loud = CharRNN(vocab_size=60, hidden_size=50, cell=cell, num_layers=2, input_std=1.5)
    assert abs(loud.layers[0].W_xh.std().item() - 1.5) < 0.1
    assert abs(loud.layers[0].W_xh.mean().item()) < 0.1
    assert plain.layers[0].W_xh.std().item() < 0.2  # the cell's own init is far smaller
    for name in ("layers.0.W_hh", "layers.0.b_h", "layers.1.W_xh", "layers.1.W_hh"):
        torch.testing.assert_close(loud.get_parameter(name), plain.get_parameter(name), rtol=0, atol=0)
    with pytest.raises(ValueError, match="`input_std` must be non-negative, got -1"):
        CharRNN(vocab_size=5, input_std=-1)


def test_an_unknown_cell_names_the_known_ones():
    with pytest.raises(ValueError, match="`cell` must be one of tanh, gru, lstm, lnlstm, lngru, got 'rnn'"):
        CharRNN(vocab_size=5, cell="rnn")


def test_vocab_must_match_vocab_size():
    with pytest.raises(ValueError, match="`vocab` has 3 characters but `vocab_size` is 4"):
        CharRNN(vocab_size=4, vocab="abc")


@pytest.mark.parametrize(("cell", "L"), [("tanh", 1), ("gru", 2), ("lstm", 2)])
def test_validation_and_test_bpc_match_numpy_with_carried_state(small_text, cell, L):
    data = CharDataModule(text=small_text, batch_size=3, seq_len=12, val_fraction=0.2, test_fraction=0.2)
    params = rn.init_params(
        data.vocab_size, 16, np.random.default_rng(0), cell, L, whh_scale=0.9, init_std=0.3
    )
    model = model_from_numpy(params, cell, vocab=data.vocab)
    trainer = quiet_trainer(precision="64-true")
    val = trainer.validate(model, data)[0]
    test = trainer.test(model, data)[0]
    encoded = rn.encode(small_text, data.vocab)
    for split, result in (("val", val), ("test", test)):
        start, stop = data.split_bounds()[split]
        want = rn.evaluate(params, encoded[start:stop], 3, 12, cell)
        assert result[f"{split}/loss"] == pytest.approx(want, rel=1e-12)
        assert result[f"{split}/bpc"] == pytest.approx(want / math.log(2), rel=1e-12)


@pytest.mark.parametrize(("cell", "L"), [("tanh", 1), ("lstm", 2)])
def test_checkpoint_rebuilds_the_model_without_the_corpus(tmp_path, small_text, cell, L):
    data = CharDataModule(text=small_text, batch_size=2, seq_len=8)
    model = CharRNN(data.vocab_size, 12, cell, L, lr=0.05, whh_scale=0.5, vocab=data.vocab)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = CharRNN.load_from_checkpoint(path, map_location="cpu")
    assert (
        loaded.hparams.vocab == data.vocab and loaded.hparams.hidden_size == 12 and loaded.hparams.lr == 0.05
    )
    assert loaded.hparams.cell == cell and loaded.hparams.num_layers == L
    for (name, p), (_, q) in zip(loaded.named_parameters(), model.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_a_checkpoint_of_release_0_1_still_loads_samples_and_resumes(tmp_path):
    """tests/fixtures/flat_tanh_v0.1.ckpt was written by `charrnn fit` of release 0.1 (flat W_xh ... b_y,
    a (B, H) carried state): H=8 on the built-in corpus's first 5,000 characters, 5 steps."""
    fixture = Path(__file__).parent / "fixtures" / "flat_tanh_v0.1.ckpt"
    flat = torch.load(fixture, weights_only=True)
    assert "W_hh" in flat["state_dict"] and flat["carried_state"].shape == (4, 8)
    model = CharRNN.load_from_checkpoint(fixture, map_location="cpu")
    assert model.hparams.cell == "tanh" and model.hparams.num_layers == 1
    torch.testing.assert_close(model.layers[0].W_hh, flat["state_dict"]["W_hh"])
    torch.testing.assert_close(model.W_hy, flat["state_dict"]["W_hy"])
    assert len(model.sample_text(30, prime="The")) == 30
    cli = cli_main(
        [
            "fit",
            *SMALL_FIT,
            f"--ckpt_path={fixture}",
            "--trainer.max_steps=8",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.hparams.hidden_size == 8 and cli.trainer.global_step == 8
    resumed = torch.load(Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert "layers.0.W_hh" in resumed["state_dict"] and resumed["carried_state"][0].shape == (1, 4, 8)
    sums = resumed["optimizer_states"][0]["state"]
    assert sums[0]["sum"].shape == flat["state_dict"]["W_xh"].shape, "Adagrad's state resumed in order"


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
