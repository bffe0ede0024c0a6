"""``charrnn score`` on a corpus's test split against the ``test/bpc`` that ``charrnn test``
reports for the same checkpoints: the same text, read as one stream by score and as
``eval_batch_size`` streams of ``seq_len`` windows (each starting from a zero state) by test.

    python benchmarks/score_test_split.py run_a/last.ckpt run_b/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from torch_charrnn import CharDataModule
from torch_charrnn.cli.fit import cli_main

CHARRNN = Path(sys.executable).parent / "charrnn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(
        "| checkpoint | cell | test split (chars) | charrnn test test/bpc | charrnn score bpc | score (s) |"
    )
    print("|---|---|---|---|---|---|")
    for ckpt in args.checkpoints:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        hparams = saved["datamodule_hyper_parameters"]
        data = CharDataModule(**{k: v for k, v in hparams.items() if not k.startswith("_")})
        data.prepare_data()
        start, stop = data.split_bounds()["test"]
        with tempfile.TemporaryDirectory() as root:
            text = Path(root) / "test.txt"
            text.write_text(data.encoded.decode(start, stop), encoding="utf-8")
            tested = cli_main(["test", f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={root}"])
            began = time.perf_counter()
            scored = subprocess.run(
                [CHARRNN, "score", "--ckpt_path", str(ckpt), str(text), "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds = time.perf_counter() - began
        row = json.loads(scored.stdout)
        test_bpc = tested.trainer.callback_metrics["test/bpc"].item()
        cell = saved["hyper_parameters"].get("cell", "tanh")
        print(
            f"| {ckpt} | {cell} | {stop - start:,} | {test_bpc:.4f} | {row['bpc']:.4f} | {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
