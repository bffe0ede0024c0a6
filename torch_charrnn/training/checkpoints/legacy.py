"""Checkpoints written by earlier releases, brought to today's layout in one place: the flat tanh
model of release 0.1, and a schedule named by the module path it had before the package had folders.

No Lightning import: ``charrnn sample`` reads old checkpoints through this too.
"""

from __future__ import annotations

import torch

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
