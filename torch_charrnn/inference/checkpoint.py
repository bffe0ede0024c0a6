"""Reading a checkpoint written by ``charrnn fit``: the one place that opens one for any subcommand,
and that brings one written by an earlier release to today's layout (``upgrade_checkpoint``: the
flat tanh model of release 0.1, a schedule named by the module path it had before the package had
folders).

It loads with ``torch.load(weights_only=True)`` (tensors and plain values only, so a file from
someone else cannot run code) and imports nothing of Lightning, so ``charrnn sample`` starts fast.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from torch_charrnn.errors import CharRNNError
from torch_charrnn.rnn.cells import Cell, get_cell

OLD_SCHEDULES = "torch_charrnn.schedules."  # WarmupCosine's module until 0.2
FLAT_LAYER = ("W_xh", "W_hh", "b_h")  # release 0.1: one tanh layer, its parameters at the top level


def upgrade_checkpoint(checkpoint: dict) -> dict:
    """Bring a checkpoint of release 0.1 (flat ``W_xh ... b_y``, a (B, H) carried state, one tanh
    layer) to the layout of ``layers.{l}.W_xh`` and a tuple state, in place; others pass as they are."""
    state = checkpoint.get("state_dict", {})
    if "W_hh" in state:
        for name in FLAT_LAYER:
            state[f"layers.0.{name}"] = state.pop(name)
    scheduler = (checkpoint.get("optimizer_config") or {}).get("lr_scheduler") or {}
    if scheduler.get("class_path", "").startswith(OLD_SCHEDULES):  # before the package had folders
        scheduler["class_path"] = scheduler["class_path"].replace(
            OLD_SCHEDULES, "torch_charrnn.training.schedules."
        )
    carried = checkpoint.get("carried_state")
    if isinstance(carried, torch.Tensor):
        checkpoint["carried_state"] = (carried[None],)  # (B, H) -> one layer's (h,)
    return checkpoint


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at ``path`` as a dict (upgraded), or a CharRNNError that says what the file is not."""
    path = Path(path)
    if not path.is_file():
        raise CharRNNError(f"checkpoint {path} does not exist (charrnn fit prints where it saves them)")
    try:
        checkpoint = torch.load(io.BytesIO(path.read_bytes()), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not a whole checkpoint
        raise CharRNNError(
            f"{path} is not a readable checkpoint (not a torch file, or truncated): {type(err).__name__}"
        ) from err
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    if not {"W_hy", "b_y"} <= set(state) or not hparams.get("vocab"):
        raise CharRNNError(
            f"{path} is a checkpoint of another model, not a torch-charrnn CharRNN with a vocabulary"
        )
    return upgrade_checkpoint(checkpoint)


def checkpoint_weights(checkpoint: dict) -> tuple[dict, Cell]:
    """The model's weights as ``{"layers": [...], "W_hy", "b_y"}`` and its cell (with the model's
    zoneout, by which its state moves in evaluation), from a checkpoint read by ``read_checkpoint``."""
    state, hparams = checkpoint["state_dict"], checkpoint["hyper_parameters"]
    layers = []
    for l in range(hparams.get("num_layers", 1)):
        prefix = f"layers.{l}."
        layers.append({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    weights = {"layers": layers, "W_hy": state["W_hy"], "b_y": state["b_y"]}
    zoneout = {"h": hparams.get("zoneout", 0.0), "c": hparams.get("zoneout_c", 0.0)}
    return weights, get_cell(hparams.get("cell", "tanh")).zoned(**zoneout)
