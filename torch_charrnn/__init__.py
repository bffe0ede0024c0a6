"""torch-charrnn: character-level RNNs (tanh, GRU, LSTM, LN-LSTM, LN-GRU), hand-written BPTT."""

from __future__ import annotations

import importlib

__all__ = ["CharDataModule", "CharRNN"]
__version__ = "0.1.0"

_LAZY = {"CharDataModule": "torch_charrnn.data.datamodule", "CharRNN": "torch_charrnn.training.module"}


def __getattr__(name: str):
    # Lazily, so that `charrnn sample` and `charrnn --help` do not import Lightning.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'torch_charrnn' has no attribute {name!r}")
