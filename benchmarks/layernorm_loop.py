"""The layer-normalised cells as PyTorch's users write them, the baseline of ``bench_train.py`` for
``lnlstm`` and ``lngru``: ``nn.LayerNorm`` and the products in a Python loop over time, through
autograd (PyTorch's fused modules cannot normalise inside the recurrence), or the same loop compiled
by TorchScript, as PyTorch's own ``benchmarks/fastrnns/custom_lstms.py`` does. The same model as
``CharRNN(cell="lnlstm"|"lngru")`` (LN with a gain on each product, the bias after; for the LSTM
LN(c) inside the output with the raw c carried), with each layer's input product and its
normalisation made for the whole window before the loop, which is the faster way to write it.

``forward(inputs, state) -> (logits, state)``, the state a tuple, as CharRNN's.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def lstm_loop(a: Tensor, h: Tensor, c: Tensor, W_hh: Tensor, g_h: Tensor, g_c: Tensor, b_c: Tensor):
    """The LSTM's recurrence from its input shares a (T, B, 4H) = LN(x W_ih) + b: every h, last h and c."""
    H = h.shape[-1]
    hs = []
    for t in range(a.shape[0]):
        z = a[t] + F.layer_norm(h @ W_hh, [4 * H], g_h, None, 1e-5)
        i, f, g, o = z.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, [H], g_c, b_c, 1e-5))
        hs.append(h)
    return torch.stack(hs), h, c


def gru_loop(a: Tensor, h: Tensor, W_hh: Tensor, g_h: Tensor, b_hn: Tensor):
    """The GRU's recurrence from its input shares a (T, B, 3H) = LN(x W_ih) + b: every h, last h."""
    H = h.shape[-1]
    hs = []
    for t in range(a.shape[0]):
        u = F.layer_norm(h @ W_hh, [3 * H], g_h, None, 1e-5)
        a_r, a_z, a_n = a[t].chunk(3, 1)
        u_r, u_z, u_n = u.chunk(3, 1)
        r, z = torch.sigmoid(a_r + u_r), torch.sigmoid(a_z + u_z)
        n = torch.tanh(a_n + r * (u_n + b_hn))
        h = (1 - z) * n + z * h
        hs.append(h)
    return torch.stack(hs), h


class LayerNormLoop(nn.Module):
    """``cell`` ``lnlstm`` or ``lngru``, ``num_layers`` of ``hidden_size``, then nn.Linear; ``script``
    compiles the loops over time with TorchScript."""

    def __init__(
        self, cell: str, vocab_size: int, hidden_size: int, num_layers: int = 1, script: bool = False
    ):
        super().__init__()
        self.lstm = cell == "lnlstm"
        G, H = (4 if self.lstm else 3), hidden_size
        self.layers = nn.ModuleList()
        for l in range(num_layers):
            layer = nn.Module()
            k = H**-0.5
            layer.W_ih = nn.Parameter(torch.empty(vocab_size if l == 0 else H, G * H).uniform_(-k, k))
            layer.W_hh = nn.Parameter(torch.empty(H, G * H).uniform_(-k, k))
            layer.ln_x = nn.LayerNorm(G * H)  # its bias is the gates' bias
            layer.ln_h = nn.LayerNorm(G * H, bias=False)
            if self.lstm:
                layer.ln_c = nn.LayerNorm(H)
            else:
                layer.b_hn = nn.Parameter(torch.empty(H).uniform_(-k, k))
            self.layers.append(layer)
        self.out = nn.Linear(H, vocab_size)
        loop = lstm_loop if self.lstm else gru_loop
        with warnings.catch_warnings():  # TorchScript is deprecated: measured here as users still write it
            warnings.simplefilter("ignore", DeprecationWarning)
            self.loop = torch.jit.script(loop) if script else loop

    def forward(self, inputs: Tensor, state=None):
        B, H = inputs.shape[0], self.out.in_features
        below = inputs.t()  # (T, B), time-major
        if state is None:
            zeros = self.out.weight.new_zeros(len(self.layers), B, H)
            state = (zeros, zeros.clone()) if self.lstm else (zeros,)
        last = []
        for l, layer in enumerate(self.layers):
            product = F.embedding(below, layer.W_ih) if l == 0 else below @ layer.W_ih
            a = layer.ln_x(product)  # (T, B, G*H) for the whole window
            if self.lstm:
                below, h, c = self.loop(a, state[0][l], state[1][l], layer.W_hh, layer.ln_h.weight,
                                        layer.ln_c.weight, layer.ln_c.bias)  # fmt: skip
                last.append((h, c))
            else:
                below, h = self.loop(a, state[0][l], layer.W_hh, layer.ln_h.weight, layer.b_hn)
                last.append((h,))
        logits = self.out(below).transpose(0, 1)  # (B, T, V)
        return logits, tuple(torch.stack(s) for s in zip(*last, strict=True))
