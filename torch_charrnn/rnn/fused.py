"""``bptt="fused"``: the same window through PyTorch's own fused recurrent kernels (cuDNN on a GPU,
oneDNN for the LSTM on a CPU), on the model's own parameters.

The cell's ``torch.nn`` module (``FUSED``: nn.RNN, nn.GRU or nn.LSTM) is built once per shape
and run with ``torch.func.functional_call`` on views of the model's parameters: ``weight_ih_l{l}``
is ``W_xh.t()``, ``weight_hh_l{l}`` is ``W_hh.t()``, and the biases come from the cell's
``fused_biases``. No second copy of the weights is kept and nothing is renamed: checkpoints are
the same whichever backend wrote them. The hand-written BPTT stays the reference the proofs are
about; this path is tested equal to it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torch_charrnn.rnn.cells import Cell


@functools.lru_cache(maxsize=16)
def _module(kind: str, input_size: int, hidden_size: int, num_layers: int, dtype, device) -> nn.Module:
    """The torch.nn module for these shapes; its own weights are never used (functional_call)."""
    return getattr(nn, kind)(input_size, hidden_size, num_layers, dtype=dtype, device=device)


def fused_parameters(layers: list[dict], cell: Cell) -> dict[str, Tensor]:
    """The model's parameters under the torch.nn module's names, as views (the biases as the cell
    adds them)."""
    named = {}
    for l, p in enumerate(layers):
        bias_ih, bias_hh = cell.fused_biases(p)
        named[f"weight_ih_l{l}"] = p["W_xh"].t()
        named[f"weight_hh_l{l}"] = p["W_hh"].t()
        named[f"bias_ih_l{l}"] = bias_ih
        named[f"bias_hh_l{l}"] = bias_hh
    return named


FUSED_ZONEOUT = (
    "`zoneout` and `zoneout_c` above 0 need `bptt` manual or autograd: fused runs PyTorch's own "
    "kernels, which have no zoneout"
)


def forward_fused(
    inputs, state, layers, W_hy, b_y, cell: Cell, masks=None, zones=None
) -> tuple[Tensor, tuple]:
    """Same as ``bptt.forward_autograd``, through the cell's torch.nn module: logits (B, T, V) and
    the last state. Layer 0 reads the one-hot characters, as the model does. PyTorch's kernels draw
    their own dropout masks, so dropout's (``masks``) cannot be run here, and have no zoneout."""
    if masks is not None:
        raise ValueError(
            "`dropout` above 0 needs `bptt` manual or autograd: fused runs PyTorch's own kernels, "
            "which draw masks of their own"
        )
    if zones is not None or cell.zoneout:
        raise ValueError(FUSED_ZONEOUT)
    V, H = layers[0]["W_xh"].shape[0], W_hy.shape[0]
    module = _module(cell.FUSED, V, H, len(layers), W_hy.dtype, W_hy.device)
    x = F.one_hot(inputs.t(), V).to(W_hy.dtype)  # (T, B, V)
    hx = state if len(state) > 1 else state[0]
    named = fused_parameters(layers, cell)
    if x.is_cuda:
        # cuDNN packs the weights into one buffer in place before each call, which a transposed
        # view of a parameter cannot take: it is given a transient contiguous copy (gradients
        # flow through the copy to the parameter; nothing is kept).
        named = {name: w.contiguous() for name, w in named.items()}
    out, last = torch.func.functional_call(module, named, (x, hx))  # (T, B, H)
    logits = out @ W_hy + b_y  # (T, B, V)
    return logits.transpose(0, 1), last if isinstance(last, tuple) else (last,)
