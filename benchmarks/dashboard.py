"""The TensorBoard dashboard of one run, drawn into one picture for the README: the scalars a user
watches (bits per character, the gradient's norm and how often clipping fired, the learning rate,
the forget gate's mean and the gates' saturation) read back from the run's event file with
TensorBoard's own reader, and the gradient-through-time image the monitor writes.

It trains ``--config`` through ``charrnn fit`` for ``--minutes`` (or reads ``--logdir``, a run's
version folder, as it is):

    python benchmarks/dashboard.py --config configs/tinyshakespeare_lstm.yaml --minutes 3
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import warnings
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torch_charrnn.cli.fit import cli_main

PANELS = [  # (title, tags drawn together)
    ("bits per character", ["train/bpc", "val/bpc"]),
    ("gradient norm before clipping", ["grad/norm"]),
    ("learning rate", ["lr"]),
    ("gate means", ["gates/i_mean", "gates/f_mean", "gates/o_mean", "gates/r_mean", "gates/z_mean"]),
    ("share of units saturated", ["gates/i_saturation", "gates/f_saturation", "gates/g_saturation",
                                  "gates/o_saturation", "gates/h_saturation", "gates/n_saturation"]),
]  # fmt: skip


def train(config: str, minutes: float, root: Path) -> Path:
    budget = f"00:00:{int(minutes):02d}:{round(minutes % 1 * 60):02d}"
    cli_main(
        [
            "fit",
            f"--config={config}",
            f"--trainer.max_time={budget}",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=10",
            "--monitor.every_n_steps=100",
            "--trainer.val_check_interval=200",
            f"--lr_scheduler.init_args.minutes={minutes}",
            f"--trainer.default_root_dir={root}",
        ]
    )
    return next(root.glob("lightning_logs/version_*"))


def draw(logdir: Path, title: str, out: str) -> None:
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(2, 3).ravel()
    for ax, (name, wanted) in zip(axes, PANELS, strict=False):
        for tag in (t for t in wanted if t in tags):
            points = events.Scalars(tag)
            marker = "." if tag.startswith("val") else None
            ax.plot([p.step for p in points], [p.value for p in points], label=tag, marker=marker)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    shown = "grad/dh_through_time"
    images = events.Images(shown) if shown in events.Tags()["images"] else []
    ax = axes[-1]
    ax.axis("off")
    if images:
        ax.imshow(imread(io.BytesIO(images[-1].encoded_image_string), format="png"))
        ax.set_title(f"grad/dh_through_time, step {images[-1].step}")
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tinyshakespeare_lstm.yaml")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--logdir", type=Path, help="draw this run's version folder instead of training one")
    parser.add_argument("--out", default="docs/dashboard.png")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or train(args.config, args.minutes, Path(tmp))
        draw(logdir, f"TensorBoard's scalars of {args.config if not args.logdir else logdir}", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
