"""What a resumed run keeps and what it takes anew: the one rule both the module (which restores
the optimizer) and the command line (which refuses what cannot change) apply."""

from __future__ import annotations


def schedule_owns_lr(checkpoint: dict) -> bool:
    """A run saved with a schedule: the restored schedule sets the learning rate from then on, so
    a new one given on resume could not take effect."""
    return bool(checkpoint.get("lr_schedulers"))


def take_current_optimizer_settings(checkpoint: dict, fresh) -> None:
    """Keep the saved optimizer's state (Adagrad's sums, Adam's moments) but the settings given now
    (``eps``, betas; ``lr`` unless a schedule owns it), in place in ``checkpoint``: restoring the
    saved param groups as they are would bring the old settings back. ``fresh`` is the optimizer
    built from the current options."""
    saved = checkpoint.get("optimizer_states") or []
    if not saved:
        return
    keep = {"params", "lr"} if schedule_owns_lr(checkpoint) else {"params"}
    for state, group in zip(saved[0]["param_groups"], fresh.param_groups, strict=True):
        state.update({k: v for k, v in group.items() if k not in keep})
