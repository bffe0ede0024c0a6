"""Lightning DDP on CPU (gloo): 2 processes give the same run as 1 process on the same streams."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL_FIT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import reference_numpy as rn
from torch_charrnn.data.corpus import builtin_text

CHARRNN = str(Path(sys.executable).parent / "charrnn")
ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "fit",
    *SMALL_FIT,
    "--data.max_chars=20000",
    "--model.hidden_size=16",
    "--model.lr=0.05",
    "--trainer.precision=64-true",
    "--trainer.max_steps=12",
    "--trainer.val_check_interval=12",
]


def last_run(root: Path):
    ckpt = torch.load(next(root.glob("**/checkpoints/last.ckpt")), map_location="cpu", weights_only=True)
    acc = EventAccumulator(str(next(root.glob("**/events.out.tfevents.*")).parent))
    acc.Reload()
    return ckpt, acc.Scalars("val/bpc")[-1].value


@pytest.mark.slow
@pytest.mark.parametrize(("cell", "L"), [("tanh", 1), ("lstm", 2)])
def test_two_process_ddp_matches_one_process_on_the_same_global_streams(tmp_path, cell, L, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    # a corpus file: every process reads the memory-mapped cache that prepare_data encoded once
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_text()[:30000], encoding="utf-8")
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    model = [f"--model.cell={cell}", f"--model.num_layers={L}", f"--data.corpus={corpus}"]
    # 1 process with 8 streams against 2 processes with 4 streams each: the same 8 global streams.
    subprocess.run(
        [CHARRNN, *COMMON, *model, "--data.batch_size=8", f"--trainer.default_root_dir={one}"], check=True
    )
    run = subprocess.run(
        [
            CHARRNN,
            "fit",
            f"--config={ROOT / 'configs' / 'ddp_cpu.yaml'}",
            *COMMON[1:],
            *model,
            "--data.batch_size=4",
            "--data.eval_batch_size=4",
            f"--trainer.default_root_dir={two}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "sync_dist" not in run.stderr, "no advice of Lightning's the user can do nothing about"
    ckpt1, bpc1 = last_run(one)
    ckpt2, bpc2 = last_run(two)
    assert ckpt1["global_step"] == ckpt2["global_step"] == 12
    assert ckpt1["hyper_parameters"]["cell"] == cell and len(ckpt1["carried_state"]) == len(
        rn.get_cell(cell).STATE
    )
    assert set(ckpt1["state_dict"]) == set(ckpt2["state_dict"])
    for name in ckpt1["state_dict"]:
        torch.testing.assert_close(
            ckpt2["state_dict"][name], ckpt1["state_dict"][name], rtol=1e-12, atol=1e-14
        )
    assert bpc2 == pytest.approx(bpc1, rel=1e-6)  # logged in float32 by TensorBoard
    # what the runs relied on: one encoded cache, written whole, shared by all three processes
    assert sorted(p.suffix for p in (tmp_path / "cache" / "encoded").iterdir()) == [".bin", ".json"]


CLOSES = """
import sys, torch, torch.distributed as dist
from torch_charrnn.cli.launch import close_process_group
close_process_group()  # no group yet: nothing to close
dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}", rank=0, world_size=1)
work = dist.all_reduce(torch.ones(1000), async_op=True)  # a collective the group still holds
close_process_group()
print(dist.is_initialized())
"""


def test_a_rank_that_ended_well_closes_its_process_group(tmp_path):
    """What keeps a gloo rank from aborting at exit (cli/launch.py close_process_group): the group,
    with a collective still held, is closed while Python runs, and the process ends well."""
    done = subprocess.run(
        [sys.executable, "-c", CLOSES, str(tmp_path / "store")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
