"""The vanishing gradient, drawn: how far back in time one prediction's gradient reaches, for the
tanh, GRU and LSTM cells trained to the same wall-clock budget on the same text.

Each cell trains with its shipped config (``configs/tinyshakespeare.yaml``, ``_gru.yaml``,
``_lstm.yaml``) through ``charrnn fit`` for ``--minutes``; then, on validation windows of
``--window`` characters (the state carried in from the window before), the gradient of the last
character's loss with respect to each earlier h_t is taken by autograd
(``torch_charrnn.rnn.diagnostics.hidden_gradients``), its norm averaged over streams and windows and divided
by its value at the last step. The same is drawn for each model at initialisation (dashed).

    python benchmarks/gradient_through_time.py --minutes 5 --out docs/gradient_through_time.png
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings

import torch
from harness import eval_windows
from matplotlib.figure import Figure

from torch_charrnn.cli.fit import cli_main
from torch_charrnn.rnn.diagnostics import hidden_gradients

CONFIGS = {
    "tanh": "configs/tinyshakespeare.yaml",
    "GRU": "configs/tinyshakespeare_gru.yaml",
    "LSTM": "configs/tinyshakespeare_lstm.yaml",
}
COLOURS = {"tanh": "tab:red", "GRU": "tab:blue", "LSTM": "tab:green"}


def reach(model, windows) -> torch.Tensor:
    """Mean over windows of ||dL_T/dh_t|| / ||dL_T/dh_T|| for t = 1..T (layer 0), L_T the last
    character's loss; the state of each window is carried in from the one before."""
    w = model.weights()
    state, curves = model.initial_state(windows[0][0].shape[0]), []
    for inputs, targets in windows:
        _, last, _, _ = hidden_gradients(inputs, targets, state, w["layers"], w["W_hy"], w["b_y"], model.cell)
        curves.append(last[0] / last[0, -1])
        with torch.no_grad():
            _, state = model(inputs, state)
    return torch.stack(curves).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of each cell")
    parser.add_argument("--window", type=int, default=100, help="characters back from the prediction")
    parser.add_argument("--windows", type=int, default=8, help="validation windows averaged")
    parser.add_argument("--out", default="docs/gradient_through_time.png")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    windows = eval_windows("tinyshakespeare", args.window)[: args.windows]  # as the race measures
    minutes = f"00:00:{int(args.minutes):02d}:{round(args.minutes % 1 * 60):02d}"
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    lag = torch.arange(args.window - 1, -1, -1)  # characters between h_t and the prediction
    for name, config in CONFIGS.items():
        with tempfile.TemporaryDirectory() as root:
            base = [
                "--config",
                config,
                "--trainer.default_root_dir",
                root,
                "--trainer.enable_progress_bar",
                "false",
            ]
            untrained = cli_main(["fit", *base, "--trainer.max_steps", "0"])
            before = reach(untrained.model, windows)
            cli = cli_main(["fit", *base, "--trainer.max_time", minutes])
            after = reach(cli.model, windows)
            steps = cli.trainer.global_step
        print(
            f"{name}: {steps} steps; reach at 10/50/{args.window - 1} characters back: "
            + " / ".join(f"{after[args.window - 1 - k]:.2e}" for k in (10, 50, args.window - 1)),
            flush=True,
        )
        ax.semilogy(
            lag, after, color=COLOURS[name], label=f"{name}, trained {args.minutes:g} min ({steps} steps)"
        )
        ax.semilogy(
            lag, before, color=COLOURS[name], linestyle="--", alpha=0.6, label=f"{name}, at initialisation"
        )
    ax.set(
        xlabel="characters back from the predicted one (T - t)",
        ylabel="‖dL_T / dh_t‖ / ‖dL_T / dh_T‖",
        title="How far back one prediction's gradient reaches (tinyshakespeare, validation)",
    )
    ax.legend(fontsize=8)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
