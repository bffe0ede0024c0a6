"""Resuming from a checkpoint (``--ckpt_path``) for every subcommand: bad files get one clear line,
options that fix the model's shape must match it, optimisation options are honoured."""

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SMALL_FIT

from torch_charrnn.cli import main
from torch_charrnn.cli.fit import cli_main

SMALL = SMALL_FIT
SUBCOMMANDS = ["fit", "validate", "test", "predict"]


def files(root: Path) -> dict[str, str]:
    """Every file under root with a hash of its bytes: what a command must leave as it was."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A hidden-12 model trained 3 steps at lr 0.05 on the first 5,000 characters of the built-in corpus."""
    root = tmp_path_factory.mktemp("trained")
    args = ["fit", *SMALL, "--model.hidden_size=12", "--model.lr=0.05", "--trainer.max_steps=3"]
    assert main([*args, f"--trainer.default_root_dir={root}"]) == 0
    return next(root.glob("**/checkpoints/last.ckpt"))


def refused(capsys, tmp_path, args) -> str:
    """Run the command and check the contract of a refusal: exit 2, one line, nothing written (a
    command of SUBCOMMANDS writes under ``tmp_path``)."""
    if args[0] in SUBCOMMANDS:
        args = [*args, f"--trainer.default_root_dir={tmp_path}"]
    before = files(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), err
    assert "Traceback" not in err
    assert files(tmp_path) == before, "nothing may be written or changed"
    return lines[0]


# every subcommand that reads a checkpoint, and what each needs around --ckpt_path
EVERY_SUBCOMMAND = [*SUBCOMMANDS, "sample", "score", "export"]


def command(subcommand: str, root: Path) -> list[str]:
    """``subcommand`` with what it needs besides --ckpt_path, its inputs and outputs under ``root``
    (``refused`` puts the runs of SUBCOMMANDS there)."""
    if subcommand in SUBCOMMANDS:
        return [subcommand, *SMALL]
    if subcommand == "score":
        text = root / "text.txt"
        text.write_text("some text to score\n")
        return ["score", str(text)]
    return ["export", str(root / "model.pt")] if subcommand == "export" else [subcommand]


def cut_in_half(path: Path, trained: Path) -> None:
    data = trained.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# how a checkpoint can be bad, and what the one line says of it
BAD_CHECKPOINTS = {
    "missing": (lambda path, trained: None, "does not exist"),
    "not a torch file": (
        lambda path, trained: path.write_text("not a checkpoint"),
        "is not a readable checkpoint (not a torch file, or truncated)",
    ),
    "truncated": (cut_in_half, "is not a readable checkpoint (not a torch file, or truncated)"),
    "a dict of something else": (
        lambda path, trained: torch.save({"a": 1}, path),
        "is a checkpoint of another model",
    ),
    "another model's": (
        lambda path, trained: torch.save(
            {"state_dict": {"encoder.weight": torch.zeros(2, 2)}, "hyper_parameters": {"d_model": 2}}, path
        ),
        "is a checkpoint of another model",
    ),
}


@pytest.mark.parametrize("bad", BAD_CHECKPOINTS)
@pytest.mark.parametrize("subcommand", EVERY_SUBCOMMAND)
def test_a_bad_checkpoint_is_one_line_for_every_subcommand(capsys, tmp_path, trained, subcommand, bad):
    make, says = BAD_CHECKPOINTS[bad]
    path = tmp_path / "bad.ckpt"
    make(path, trained)
    err = refused(capsys, tmp_path, [*command(subcommand, tmp_path), f"--ckpt_path={path}"])
    assert f"{path} {says}" in err


@pytest.mark.parametrize("subcommand", [*EVERY_SUBCOMMAND, "gradcheck"])
def test_a_bad_flag_is_one_line_for_every_subcommand(capsys, tmp_path, trained, subcommand):
    args = command(subcommand, tmp_path) + ([f"--ckpt_path={trained}"] if subcommand != "gradcheck" else [])
    err = refused(capsys, tmp_path, [*args, "--no_such_option=1"])
    assert "--no_such_option=1" in err and f"(charrnn {subcommand} --help lists the options)" in err


@pytest.mark.parametrize(
    ("option", "value", "saved"),
    [("hidden_size", "64", "12"), ("cell", "lstm", "tanh"), ("num_layers", "2", "1")],
)
def test_a_shape_option_that_differs_is_refused_with_both_values_and_the_fix(
    capsys, tmp_path, trained, option, value, saved
):
    before = trained.read_bytes()
    err = refused(capsys, tmp_path, ["fit", *SMALL, f"--ckpt_path={trained}", f"--model.{option}={value}"])
    assert f"--model.{option} {value} does not match the checkpoint's {option} {saved}" in err
    assert f"Drop --model.{option}" in err and "leave out --ckpt_path to start a new run" in err
    assert trained.read_bytes() == before


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_a_different_hidden_size_is_refused_with_both_values_and_the_fix(
    capsys, tmp_path, trained, subcommand
):
    before = trained.read_bytes()
    err = refused(capsys, tmp_path, [subcommand, *SMALL, f"--ckpt_path={trained}", "--model.hidden_size=64"])
    assert "--model.hidden_size 64 does not match the checkpoint's hidden_size 12" in err
    assert "Drop --model.hidden_size" in err and "leave out --ckpt_path to start a new run" in err
    assert trained.read_bytes() == before


def test_another_corpus_is_refused_because_the_vocabulary_differs(capsys, tmp_path, trained):
    corpus = tmp_path / "other.txt"
    corpus.write_text("abc \n" * 2000, encoding="utf-8")
    err = refused(capsys, tmp_path, ["fit", *SMALL, f"--ckpt_path={trained}", f"--data.corpus={corpus}"])
    assert "the corpus's vocabulary (5 characters) is not the checkpoint's" in err
    assert "--data.corpus builtin" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch sees no GPU")
@pytest.mark.parametrize(
    "args",
    [["--trainer.accelerator=gpu"], [f"--config={Path(__file__).parents[1] / 'configs' / 'gpu.yaml'}"]],
)
def test_asking_for_a_gpu_where_torch_sees_none_says_what_torch_sees(capsys, tmp_path, args):
    err = refused(capsys, tmp_path, ["fit", "--data.max_chars=5000", *args])
    assert "torch.cuda.is_available() is False" in err and torch.__version__ in err
    assert "Install a CUDA build of torch" in err and "--trainer.accelerator cpu" in err


def test_resuming_without_options_continues_the_same_model(tmp_path, trained):
    cli = cli_main(
        [
            "fit",
            *SMALL,
            f"--ckpt_path={trained}",
            "--trainer.max_steps=5",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.model.hparams.hidden_size == 12 and cli.model.hparams.lr == 0.05
    assert cli.trainer.global_step == 5
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.05


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_a_checkpoint_builds_its_model_without_repeating_its_options(
    tmp_path, trained, subcommand
):
    cli = cli_main([subcommand, *SMALL, f"--ckpt_path={trained}", f"--trainer.default_root_dir={tmp_path}"])
    assert cli.model.hparams.hidden_size == 12
    weights = torch.load(trained, weights_only=True)["state_dict"]
    torch.testing.assert_close(cli.model.layers[0].W_hh.detach(), weights["layers.0.W_hh"])


def test_a_new_learning_rate_is_honoured_recorded_and_reported(tmp_path, trained, capsys):
    root = tmp_path / "resumed"
    args = ["fit", *SMALL, f"--ckpt_path={trained}", "--model.lr=0.001", "--trainer.max_steps=5"]
    cli = cli_main([*args, f"--trainer.default_root_dir={root}"])
    assert "--model.lr 0.05 -> 0.001" in capsys.readouterr().err
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.001
    saved_sums = torch.load(trained, weights_only=True)["optimizer_states"][0]["state"][0]["sum"]
    assert saved_sums.abs().sum() > 0, "Adagrad's state comes back with the new learning rate"
    log_dir = Path(cli.trainer.log_dir)
    assert yaml.safe_load((log_dir / "config.yaml").read_text())["model"]["lr"] == 0.001
    checkpoint = torch.load(log_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 5
    assert checkpoint["hyper_parameters"]["lr"] == 0.001
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 0.001


def test_after_a_divergence_resuming_with_a_lower_lr_trains_on(tmp_path, capsys):
    args = ["fit", *SMALL, "--model.hidden_size=12", f"--trainer.default_root_dir={tmp_path}"]
    assert main([*args, "--trainer.max_steps=3"]) == 0
    good = next(tmp_path.glob("**/last.ckpt"))
    good_bytes = good.read_bytes()
    # lr 1e38: the first Adagrad step moves every weight by 1e38; the next step's loss is not finite
    code = main([*args, "--ckpt_path=last", "--model.lr=1e38", "--trainer.max_steps=10"])
    err = capsys.readouterr().err
    assert code == 1 and "training diverged at step 4" in err
    assert "lower --model.lr (now 1e+38)" in err, "the message names the learning rate in use"
    assert good.read_bytes() == good_bytes
    assert list(tmp_path.glob("**/last.ckpt")) == [good], "the diverged run saved nothing"

    resumed = [
        "--ckpt_path=last",
        "--model.lr=0.001",
        "--trainer.max_steps=10",
        "--trainer.log_every_n_steps=1",
    ]
    cli = cli_main([*args, *resumed])
    assert cli.trainer.global_step == 10
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.001
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    newest = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(newest, weights_only=True)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 0.001
    assert checkpoint["hyper_parameters"]["lr"] == 0.001
    assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values())


def test_resume_last_without_a_checkpoint_says_so(tmp_path, capsys):
    err = refused(capsys, tmp_path, ["fit", *SMALL, "--ckpt_path=last"])
    assert "no last.ckpt under" in err


# --- the optimizer and the schedule (--optimizer, --lr_scheduler) --------------------------------

ADAM = ["--optimizer=Adam", "--optimizer.lr=0.01", "--optimizer.betas=[0.5, 0.9]"]
COSINE = ["--lr_scheduler=CosineAnnealingLR", "--lr_scheduler.T_max=40"]
EXACT = [*SMALL, "--model.hidden_size=12", "--trainer.precision=64-true", "--last.every_n_train_steps=1"]


def newest(root: Path) -> dict:
    return torch.load(max(root.glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime), weights_only=True)


WARMUP_COSINE = [
    "--lr_scheduler=torch_charrnn.training.schedules.WarmupCosine",
    "--lr_scheduler.total_steps=25",
    "--lr_scheduler.warmup_steps=4",
]


@pytest.mark.parametrize("schedule", [COSINE, WARMUP_COSINE], ids=["CosineAnnealingLR", "WarmupCosine"])
def test_an_optimizer_and_its_schedule_resume_exactly(tmp_path, capsys, schedule):
    """Adam with a schedule, stopped at step 12 (mid-epoch) and resumed with nothing but
    --ckpt_path: the same weights, bit for bit, as one run to 30; the schedule stepped every step."""
    a, b = tmp_path / "a", tmp_path / "b"
    cli_main(["fit", *EXACT, *ADAM, *schedule, "--trainer.max_steps=30", f"--trainer.default_root_dir={a}"])
    cli_main(["fit", *EXACT, *ADAM, *schedule, "--trainer.max_steps=12", f"--trainer.default_root_dir={b}"])
    stopped = newest(b)
    assert stopped["global_step"] == 12 and stopped["lr_schedulers"][0]["last_epoch"] == 12
    assert stopped["optimizer_config"]["optimizer"]["class_path"] == "torch.optim.Adam"
    cli = cli_main(
        ["fit", *EXACT, "--trainer.max_steps=30", f"--trainer.default_root_dir={b}", "--ckpt_path=last"]
    )
    assert "charrnn: resuming" not in capsys.readouterr().err, "nothing was changed"
    assert isinstance(cli.trainer.optimizers[0], torch.optim.Adam)
    assert cli.trainer.optimizers[0].param_groups[0]["betas"] == (0.5, 0.9)
    assert yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())["optimizer"][
        "class_path"
    ] == ("torch.optim.Adam")
    want, got = newest(a), newest(b)
    assert got["global_step"] == want["global_step"] == 30
    assert got["lr_schedulers"][0]["last_epoch"] == 30
    for name, w in want["state_dict"].items():
        assert torch.equal(got["state_dict"][name], w), name


def test_a_schedule_saved_under_its_old_module_path_resumes(tmp_path):
    """Checkpoints written before the package had folders name ``torch_charrnn.schedules.WarmupCosine``."""
    cli_main(
        [
            "fit",
            *EXACT,
            *ADAM,
            *WARMUP_COSINE,
            "--trainer.max_steps=6",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    path = max(tmp_path.glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime)
    old = torch.load(path, weights_only=True)
    old["optimizer_config"]["lr_scheduler"]["class_path"] = "torch_charrnn.schedules.WarmupCosine"
    torch.save(old, path)
    cli = cli_main(
        [
            "fit",
            *EXACT,
            "--trainer.max_steps=9",
            f"--trainer.default_root_dir={tmp_path}",
            f"--ckpt_path={path}",
        ]
    )
    assert (
        cli.trainer.global_step == 9
        and type(cli.trainer.lr_scheduler_configs[0].scheduler).__name__ == "WarmupCosine"
    )
    assert newest(tmp_path)["optimizer_config"]["lr_scheduler"]["class_path"] == (
        "torch_charrnn.training.schedules.WarmupCosine"
    )


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adam")
    assert (
        main(["fit", *SMALL, *ADAM, *COSINE, "--trainer.max_steps=3", f"--trainer.default_root_dir={root}"])
        == 0
    )
    return next(root.glob("**/last.ckpt"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--optimizer=SGD", "--optimizer.lr=0.1"],
            "--optimizer torch.optim.SGD does not match the checkpoint's torch.optim.Adam",
        ),
        (["--optimizer=Adam", "--optimizer.lr=0.1"], "--optimizer.lr differs from the checkpoint's"),
        (["--lr_scheduler=CosineAnnealingLR", "--lr_scheduler.T_max=99"], "--lr_scheduler.T_max differs"),
        (["--model.lr=0.5"], "--model.lr differs from the checkpoint's"),
    ],
)
def test_an_optimizer_or_schedule_that_cannot_resume_is_refused(capsys, tmp_path, adam_run, args, message):
    err = refused(capsys, tmp_path, ["fit", *SMALL, f"--ckpt_path={adam_run}", *args])
    assert message in err and "leave out --ckpt_path to start a new run" in err


def test_another_optimizer_than_the_models_own_is_refused_on_resume(capsys, tmp_path, trained):
    err = refused(capsys, tmp_path, ["fit", *SMALL, f"--ckpt_path={trained}", *ADAM])
    assert "does not match the checkpoint's none (the model's own Adagrad)" in err


def test_a_new_optimizer_argument_is_honoured_and_the_others_kept(tmp_path, capsys, adam_run):
    cli = cli_main(
        [
            "fit",
            *SMALL,
            f"--ckpt_path={adam_run}",
            "--optimizer=Adam",
            "--optimizer.eps=1e-6",
            "--trainer.max_steps=5",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert "--optimizer.eps 1e-08 -> 1e-06" in capsys.readouterr().err
    group = cli.trainer.optimizers[0].param_groups[0]
    assert group["eps"] == 1e-6 and group["betas"] == (0.5, 0.9) and cli.trainer.global_step == 5


def test_divergence_names_the_optimizers_learning_rate_option(tmp_path, capsys):
    # Adam's first step moves every weight with a gradient by lr, tanh saturates, and the next
    # loss is lr times a sum of signs (about 25 here): at 3e37 it overflows to inf. (At 1e30 it stays
    # finite, and whether a run diverged hung on one pre-activation summing to exactly 0 by chance.)
    args = ["fit", *SMALL, "--optimizer=Adam", "--optimizer.lr=3e37", "--trainer.max_steps=10"]
    code = main([*args, f"--trainer.default_root_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1 and "training diverged at step 1" in err, err
    assert "a lower --optimizer.lr (now 3e+37)" in err, err


def test_an_optimizer_step_that_overflows_is_a_divergence_not_a_traceback(tmp_path, capsys):
    # Adam's step size is lr / (1 - beta1): at 1e38 torch.optim.Adam raises its own RuntimeError
    args = ["fit", *SMALL, "--optimizer=Adam", "--optimizer.lr=1e38", "--trainer.max_steps=10"]
    code = main([*args, f"--trainer.default_root_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert "training diverged at step 0: the optimizer's step overflowed float32" in err, err
    assert "a lower --optimizer.lr (now 1e+38)" in err and "(--ckpt_path last)" in err, err
    assert not list(tmp_path.glob("**/*.ckpt")), "nothing from the run was saved"


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_the_checkpoint_is_read_from_disk_once(tmp_path, trained, monkeypatch, subcommand):
    """charrnn's own check reads it; Lightning's restore is served that same read."""
    loads = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        loads.append(f)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    cli = cli_main(
        [
            subcommand,
            *SMALL,
            f"--ckpt_path={trained}",
            "--trainer.max_steps=4",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert len(loads) == 1, loads
    if subcommand == "fit":
        assert cli.trainer.global_step == 4, "restored from the checkpoint's step 3"
