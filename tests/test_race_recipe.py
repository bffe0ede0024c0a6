"""benchmarks/race.py --recipe: the baselines are trained with what `charrnn fit --config` trains
with, read from the same file and options. A lead over them is the engine's, so the recipe they
get must be the config's own: checked against what LightningCLI instantiates for each config."""

import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import instantiate_class

from torch_charrnn import CharRNN
from torch_charrnn.data.corpus import builtin_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import race  # noqa: E402  (a script beside its harness, not a package)
from harness import TorchRNN, fit_with  # noqa: E402

# gpu.yaml needs a GPU to instantiate its trainer; ddp_cpu.yaml starts processes
CONFIGS = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if p.name not in ("gpu.yaml", "ddp_cpu.yaml")]


class Built(Exception):
    """Raised from the hook: ``charrnn fit`` has built everything and not trained."""

    def __init__(self, cli):
        self.cli = cli


def built(args):
    """``charrnn fit args`` up to the start of training: the CLI with its model, data and trainer."""

    def hook(cli):
        raise Built(cli)

    with pytest.raises(Built) as stopped:
        fit_with(args, hook)
    return stopped.value.cli


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "options",
    [[], ["--model.hidden_size=24", "--model.input_std=1.5", "--model.init_std=0.2", "--data.seq_len=7"]],
)
def test_the_baselines_recipe_is_what_charrnn_fit_trains_with(tmp_path, config, options):
    corpus = tmp_path / "text.txt"
    corpus.write_text(builtin_text())
    recipe = race.Recipe.of_config(str(config), options)
    args = [
        "--config",
        str(config),
        *options,
        f"--data.corpus={corpus}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = built(args)
    hp, data, trainer = cli.model.hparams, cli.datamodule, cli.trainer

    assert (recipe.hidden, recipe.layers, recipe.dropout) == (hp.hidden_size, hp.num_layers, hp.dropout)
    assert recipe.init == {key: hp[key] for key in race.INIT}
    assert (recipe.batch, recipe.seq, recipe.clip) == (
        data.batch_size,
        data.seq_len,
        trainer.gradient_clip_val,
    )

    configured = cli.model.configure_optimizers()
    if isinstance(configured, dict):  # an optimizer and a schedule, as charrnn fit hands them to Lightning
        optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    else:  # an optimizer alone (the config's, or the model's own Adagrad)
        optimizer, schedule = configured, None
    params = [torch.nn.Parameter(torch.zeros(2))]
    mine = instantiate_class(params, recipe.optimizer)
    assert type(mine) is type(optimizer)
    assert {k: v for k, v in mine.defaults.items() if k != "params"} == {
        k: v for k, v in optimizer.defaults.items() if k != "params"
    }
    if schedule is None:
        assert recipe.schedule is None
        return
    theirs = instantiate_class(mine, recipe.schedule)
    assert type(theirs) is type(schedule)
    for name in ("total_steps", "warmup_steps", "final_lr_ratio", "budget_s"):
        assert getattr(theirs, name, None) == getattr(schedule, name, None), name


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
def test_the_one_hot_baseline_starts_from_charrnns_own_weights(cell):
    """The same model from the same initial point: before any step, PyTorch's module given the
    CharRNN's weights computes its logits and state, for a recipe's non-default init options."""
    torch.manual_seed(0)
    model = CharRNN(7, 5, cell, num_layers=2, input_std=1.5, init_std=0.3, whh_scale=0.5).double().eval()
    kind = model.cell.FUSED
    baseline = TorchRNN(kind, 7, 5, num_layers=2, start_from=model).double().eval()
    inputs = torch.randint(0, 7, (3, 4))
    logits, state = model(inputs)
    theirs, their_state = baseline(inputs)
    torch.testing.assert_close(theirs, logits)
    for a, b in zip(their_state, state, strict=True):
        torch.testing.assert_close(a, b)
    fresh = TorchRNN(kind, 7, 5, num_layers=2).double().eval()  # its own init: not the same model
    assert not torch.allclose(fresh(inputs)[0], logits)
    with pytest.raises(ValueError, match="can start from a CharRNN of its cell only"):
        TorchRNN("GRU" if kind != "GRU" else "LSTM", 7, 5, num_layers=2, start_from=model)
