"""The charrnn command in-process: fit, validate, test, predict, every config, and TensorBoard."""

from pathlib import Path

import pytest
import torch
import yaml
from conftest import SMALL_FIT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torch_charrnn import CharRNN
from torch_charrnn.cli.fit import cli_main
from torch_charrnn.cli.flags import with_flags
from torch_charrnn.training.saving import last_checkpoint

ROOT = Path(__file__).resolve().parents[1]

TINY = [*SMALL_FIT, "--data.max_chars=20000", "--data.seq_len=20", "--model.hidden_size=16"]


def fit(tmp_path, *extra):
    args = ["fit", *TINY, f"--trainer.default_root_dir={tmp_path}", *extra]
    return cli_main(args)


def events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0, "histograms": 0}
    )
    acc.Reload()
    return acc


# What the monitor shows of each cell's gates and states (written out, not derived from the code).
GATE_TAGS = {
    "tanh": ["gates/h_saturation"],
    "gru": ["gates/r_saturation", "gates/r_mean", "gates/z_saturation", "gates/z_mean", "gates/n_saturation"],
    "lstm": [
        *("gates/i_saturation", "gates/i_mean", "gates/f_saturation", "gates/f_mean"),
        *("gates/g_saturation", "gates/o_saturation", "gates/o_mean", "hidden/c_norm"),
    ],
}
GATE_TAGS["lnlstm"] = [*GATE_TAGS["lstm"], "gates/tanh_ln_c_saturation"]  # tanh(LN(c_t)), h_t's unit


@pytest.mark.parametrize(("cell", "L"), [("tanh", 1), ("gru", 1), ("lstm", 2), ("lnlstm", 2)])
def test_fit_on_builtin_corpus_writes_checkpoints_config_and_tensorboard(tmp_path, capsys, cell, L):
    cli = fit(
        tmp_path,
        f"--model.cell={cell}",
        f"--model.num_layers={L}",
        "--trainer.max_steps=12",
        "--trainer.val_check_interval=6",
        "--trainer.log_every_n_steps=2",
        "--monitor.every_n_steps=4",
        "--monitor.sample_length=50",
    )
    log_dir = Path(cli.trainer.log_dir)
    ckpts = sorted(p.name for p in (log_dir / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(name.startswith("best-") for name in ckpts)
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["model"]["hidden_size"] == 16 and config["data"]["corpus"] == "builtin"
    assert config["model"]["cell"] == cell and config["model"]["num_layers"] == L

    acc = events(log_dir)
    scalars = set(acc.Tags()["scalars"])
    for tag in [
        "train/loss",
        "train/bpc",
        "val/loss",
        "val/bpc",
        "grad/norm",
        "grad/clipped",
        "lr",
        "throughput/chars_per_s",
        "hidden/saturation",
        "grad/dh_first",
        "grad/dh_last",
        "hp_metric",
    ]:
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    # every layer's gradient through time and gates: layer 0 unsuffixed, the layers above _l1, ...
    per_layer = ["grad/dh_first", "grad/dh_last", "grad/dh_first_over_last", *GATE_TAGS[cell]]
    for l in range(L):
        for tag in per_layer:
            tag += f"_l{l}" if l else ""
            assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
            values = [e.value for e in acc.Scalars(tag)]
            assert len(values) == 3  # steps 4, 8 and 12 (--monitor.every_n_steps=4)
            if "saturation" in tag:
                assert all(0 <= v <= 1 for v in values)
            elif tag.endswith(("_mean", "_mean_l1")):
                assert all(0 < v < 1 for v in values)  # a sigmoid's mean
            else:
                assert all(v > 0 for v in values)
    assert not any(t.endswith(f"_l{L}") for t in scalars), "no tags for a layer the model lacks"
    top = f"layers.{L - 1}.W_hh"
    assert {f"params/{top}", f"grads/{top}", "params/W_hy", "hidden/h"} <= set(acc.Tags()["histograms"])
    # every parameter's distribution, a layer-normalised cell's gains among them
    named = {f"params/{name}" for name, _ in cli.model.named_parameters()}
    assert named <= set(acc.Tags()["histograms"])
    assert "grad/dh_through_time" in acc.Tags()["images"]
    assert "samples/text_summary" in acc.Tags()["tensors"]
    assert all(0 <= e.value <= 1 for e in acc.Scalars("hidden/saturation"))
    assert acc.Scalars("hp_metric")[-1].value == pytest.approx(min(e.value for e in acc.Scalars("val/bpc")))
    assert all(e.value > 0 for e in acc.Scalars("throughput/chars_per_s"))

    out = capsys.readouterr().out
    assert "--- sample (300 characters" in out and "last.ckpt" in out and str(log_dir) in out


def test_validate_test_and_predict_from_a_checkpoint(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps=3", "--trainer.limit_val_batches=1")
    ckpt = Path(last_checkpoint(cli.trainer).last_model_path)
    base = [*TINY, f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={ckpt}"]
    val = cli_main(["validate", *base])
    assert "val/bpc" in val.trainer.callback_metrics
    test = cli_main(["test", *base])
    assert "test/bpc" in test.trainer.callback_metrics
    acc = events(Path(test.trainer.log_dir))
    assert "test/bpc" in acc.Tags()["scalars"]
    predict = cli_main(["predict", *base, "--trainer.limit_predict_batches=2"])
    assert predict.trainer.predict_loop.predictions  # strings of predicted next characters


def test_fit_on_a_text_file(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question:\n" * 200, encoding="utf-8")
    cli = fit(tmp_path, f"--data.corpus={corpus}", "--trainer.max_steps=4")
    assert cli.model.hparams.vocab == "".join(sorted(set(corpus.read_text())))
    assert cli.model.hparams.vocab_size == len(cli.model.hparams.vocab)


def test_fast_dev_run_trains_samples_and_says_it_wrote_nothing(tmp_path, capsys):
    cli = fit(tmp_path, "--trainer.fast_dev_run=true")
    out = capsys.readouterr().out
    assert cli.trainer.global_step == 1  # Lightning's trial run: one step
    assert "--- sample" in out and "wrote no logs and no checkpoints" in out
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_a_run_that_trains_no_step_says_so_instead_of_an_empty_checkpoint_path(tmp_path, capsys):
    cli = fit(tmp_path, "--trainer.limit_train_batches=0")
    out = capsys.readouterr().out
    assert cli.trainer.global_step == 0
    assert "last:      (none: no training step ran)" in out and "sample more" not in out


def progress_bars(cli) -> list:
    from lightning.pytorch.callbacks import ProgressBar

    return [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]


def test_the_progress_bar_redraws_every_10_steps_unless_turned_off_or_given(tmp_path, capsys):
    # TINY turns the bar off; the later option wins
    (bar,) = progress_bars(fit(tmp_path, "--trainer.max_steps=2", "--trainer.enable_progress_bar=true"))
    assert bar.refresh_rate == 10 and bar.is_enabled
    assert "Epoch 0" in capsys.readouterr().out  # it is drawn (Lightning draws on stdout)
    assert progress_bars(fit(tmp_path, "--trainer.max_steps=2")) == []
    given = ["--trainer.callbacks+=TQDMProgressBar", "--trainer.callbacks.refresh_rate=1"]
    cli = fit(tmp_path, "--trainer.max_steps=2", "--trainer.enable_progress_bar=true", *given)
    (bar,) = progress_bars(cli)
    assert bar.refresh_rate == 1
    assert cli.trainer.log_every_n_steps == 50  # metrics are written as often as Lightning's default


def test_the_model_summary_counts_parameters_without_a_flops_column_unless_turned_off(tmp_path, caplog):
    from lightning.pytorch.callbacks import ModelSummary

    with caplog.at_level("INFO"):
        cli = fit(tmp_path, "--trainer.max_steps=1", "--trainer.enable_model_summary=true")
    summaries = [c for c in cli.trainer.callbacks if isinstance(c, ModelSummary)]
    assert len(summaries) == 1  # ours in place of Lightning's, not beside it
    said = caplog.text
    assert "| Name " in said and "| Params |" in said and "Total params" in said
    assert "Trainable params" in said and "FLOPs" not in said and "Total Flops" not in said
    assert "Trainer already configured" not in said
    caplog.clear()
    with caplog.at_level("INFO"):
        cli = fit(tmp_path, "--trainer.max_steps=1")  # TINY turns the summary off
    assert not [c for c in cli.trainer.callbacks if isinstance(c, ModelSummary)]
    assert "Total params" not in caplog.text


def config_paths():
    return sorted((ROOT / "configs").glob("*.yaml"))


def readme_config_table() -> dict[str, dict[str, str]]:
    """The README's table of configs, one dict of column -> cell per config file name."""
    import itertools

    lines = (ROOT / "README.md").read_text().split("Configs in [`configs/`]")[1].splitlines()
    table = itertools.takewhile(
        lambda line: line.startswith("|"), itertools.dropwhile(lambda line: not line.startswith("|"), lines)
    )
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    header, body = rows[0], rows[2:]
    return {row[0].strip("`"): dict(zip(header, row, strict=True)) for row in body}


def test_the_readme_config_table_is_what_each_config_sets():
    """Every config is in the table, and every figure there is what the file (or a default) sets."""
    import inspect

    from torch_charrnn import CharDataModule
    from torch_charrnn.cli.fit import TRAINER_DEFAULTS

    table = readme_config_table()
    assert set(table) == {p.name for p in config_paths()}
    defaults = {
        "model": {k: p.default for k, p in inspect.signature(CharRNN).parameters.items()},
        "data": {k: p.default for k, p in inspect.signature(CharDataModule).parameters.items()},
        "trainer": TRAINER_DEFAULTS,
    }
    for path in config_paths():
        cfg = yaml.safe_load(path.read_text())

        def value(section, key, cfg=cfg):
            return cfg.get(section, {}).get(key, defaults[section].get(key))

        row = table[path.name]
        assert row["corpus"] == value("data", "corpus"), path.name
        assert int(row["H"]) == value("model", "hidden_size"), path.name
        assert int(row["B"].removesuffix(" per process")) == value("data", "batch_size"), path.name
        assert int(row["T"]) == value("data", "seq_len"), path.name
        assert row["cell"] == value("model", "cell"), path.name
        optimizer = cfg.get("optimizer")
        if optimizer is None:  # the model's own Adagrad
            assert row["optimizer"] == f"Adagrad {value('model', 'lr'):g}", path.name
        else:
            name = optimizer["class_path"].rsplit(".", 1)[-1]
            schedule = cfg.get("lr_scheduler", {}).get("class_path", "").rsplit(".", 1)[-1]
            want = f"{name} {optimizer['init_args']['lr']:g}" + (", warmup + cosine" if schedule else "")
            assert row["optimizer"] == want, path.name
            init = cfg.get("lr_scheduler", {}).get("init_args", {})
            if schedule == "WarmupCosineInTime":  # the decay ends with the time budget, measured
                assert f"00:00:{int(init['minutes']):02d}:00" == value("trainer", "max_time"), path.name
            elif schedule:  # the decay ends with the budget: at max_steps
                assert init["total_steps"] == value("trainer", "max_steps"), path.name
        amount, unit = row["stops after"].split()
        if unit == "epochs":
            assert int(amount) == value("trainer", "max_epochs") and not value("trainer", "max_time"), (
                path.name
            )
        else:
            assert unit == "minutes" and value("trainer", "max_time") == f"00:00:{int(amount):02d}:00", (
                path.name
            )


@pytest.mark.parametrize(
    "config", [p for p in config_paths() if p.name != "ddp_cpu.yaml"], ids=lambda p: p.name
)
def test_every_config_trains_a_few_steps(tmp_path, config):
    # A config for a downloaded corpus runs here on the built-in one (no network in the tests; the
    # download itself is tested in test_download.py): everything else in it is exercised as written.
    corpus = yaml.safe_load(config.read_text()).get("data", {}).get("corpus", "builtin")
    assert corpus in ("builtin", "tinyshakespeare"), "a corpus this test does not know"
    cli = cli_main(
        [
            "fit",
            f"--config={config}",
            "--data.corpus=builtin",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=1",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.precision=32-true",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


def test_seed_config_is_the_tutorials_run():
    cfg = yaml.safe_load((ROOT / "configs" / "seed.yaml").read_text())
    assert (
        cfg["model"]["hidden_size"] == 75 and cfg["model"]["whh_scale"] == 0.01 and cfg["model"]["lr"] == 0.01
    )
    assert (
        cfg["data"]["seq_len"] == 20 and cfg["data"]["batch_size"] == 1 and cfg["data"]["max_chars"] == 20000
    )
    assert cfg["trainer"]["gradient_clip_val"] == 5


def test_default_config_is_what_charrnn_fit_does_with_no_arguments():
    import inspect

    from torch_charrnn import CharDataModule
    from torch_charrnn.cli.fit import TRAINER_DEFAULTS

    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert cfg["trainer"] == TRAINER_DEFAULTS
    for section, cls in (("model", CharRNN), ("data", CharDataModule)):
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        assert {k: defaults[k] for k in cfg[section]} == cfg[section], f"configs/default.yaml: {section}"


def test_checkpoint_loads_on_cpu_without_the_corpus(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps=2", "--trainer.limit_val_batches=0")
    model = CharRNN.load_from_checkpoint(last_checkpoint(cli.trainer).last_model_path, map_location="cpu")
    assert model.hparams.vocab == cli.datamodule.vocab
    text = model.sample_text(20, prime="The")
    assert len(text) == 20 and set(text) <= set(model.hparams.vocab)


def test_a_byte_model_trains_samples_and_decodes_utf8(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Caf\u00e9 cr\u00e8me, \u65e5\u672c\u8a9e \u00e0 la carte.\n" * 400, encoding="utf-8")
    cli = fit(tmp_path, f"--data.corpus={corpus}", "--data.unit=bytes", "--trainer.max_steps=3")
    raw = corpus.read_bytes()
    assert cli.model.hparams.unit == "bytes" and cli.model.hparams.vocab == "".join(
        map(chr, sorted(set(raw)))
    )
    ckpt = last_checkpoint(cli.trainer).last_model_path
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["unit"] == "bytes"
    capsys.readouterr()
    from torch_charrnn.cli import main

    assert (
        main(["sample", f"--ckpt_path={ckpt}", "--prime=Caf\u00e9", "--length=200", "--temperature=0"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("Caf\u00e9") and len(out.encode("utf-8")) >= 200  # 200 bytes, decoded as UTF-8


@pytest.mark.parametrize(
    ("message", "optimizer", "want"),
    [
        ("`lr` must be positive", False, "--model.lr must be positive"),
        ("lower `lr`", True, "lower --optimizer.lr"),
        ("`unit` must be one of", False, "--data.unit must be one of"),  # linked into the model
        ("resume (`ckpt_path` last)", False, "resume (--ckpt_path last)"),
        ("`gradient_clip_val` 5", False, "--trainer.gradient_clip_val 5"),
        ("`max_chars` and `not_an_option`", False, "--data.max_chars and `not_an_option`"),
    ],
)
def test_argument_names_become_the_flags_a_user_can_pass(message, optimizer, want):
    assert with_flags(message, optimizer=optimizer) == want


@pytest.mark.parametrize(("steps", "want"), [(12, [11]), (40, [19, 39]), (45, [19, 39, 44])])
def test_the_last_training_step_is_always_written(tmp_path, steps, want):
    """A run shorter than log_every_n_steps (here 20) still draws its training curve: the last step
    is written too, once, at its own step."""
    cli = fit(
        tmp_path,
        f"--trainer.max_steps={steps}",
        "--trainer.log_every_n_steps=20",
        "--trainer.limit_val_batches=0",
        "--monitor.every_n_steps=0",
    )
    acc = events(Path(cli.trainer.log_dir))
    assert [s.step for s in acc.Scalars("train/loss")] == want
    assert [s.step for s in acc.Scalars("train/bpc")] == want
    last = acc.Scalars("train/loss")[-1].value
    assert last == pytest.approx(cli.model._loss.item(), rel=1e-6), "the last step's own loss"


def test_the_progress_bar_reads_the_models_figures_only_on_the_steps_that_write_metrics(monkeypatch):
    """On a GPU each read waits for the device: between written steps the bar shows the last
    figures again (``StepBar``)."""
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar

    from torch_charrnn import CharDataModule, CharRNN
    from torch_charrnn.training.callbacks import StepBar

    read_at = []
    original = TQDMProgressBar.get_metrics

    def spy(self, trainer, pl_module):
        if trainer.training:
            read_at.append(trainer.global_step)
        return original(self, trainer, pl_module)

    monkeypatch.setattr(TQDMProgressBar, "get_metrics", spy)
    data = CharDataModule(max_chars=4000, batch_size=3, seq_len=8)
    model = CharRNN(data.vocab_size, 8, vocab=data.vocab)
    bar = StepBar(refresh_rate=1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=10,
        log_every_n_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    trainer.fit(model, data)
    assert read_at[0] == 1, "the first refresh reads them"
    assert [s for s in read_at[1:] if s < 10] == [3, 6, 9], read_at
    assert "train/loss" in bar.get_metrics(trainer, model)
