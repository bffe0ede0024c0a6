"""The character-level tanh RNN in torch: the equations, and nothing else.

This file mirrors ``reference_numpy/rnn.py`` line for line: same names, same order, same
row-vector convention (``h @ W_hh``, as in the tutorial). V = vocabulary size,
H = hidden size, B = streams, T = window.

    h_t      = tanh(W_xh[x_t] + h_{t-1} @ W_hh + b_h)
    logits_t = h_t @ W_hy + b_y
    loss     = mean over the B*T predicted characters of cross_entropy(logits_t, y_t)

References: Karpathy's min-char-rnn, Le et al. 2015 "A Simple Way to Initialize Recurrent
Networks of Rectified Linear Units" (identity W_hh).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")
LN2 = math.log(2.0)


def rnn_states(inputs: Tensor, h0: Tensor, W_xh, W_hh, b_h) -> list[Tensor]:
    """The hidden states h_1 .. h_T (each (B, H)) through plain autograd."""
    B, T = inputs.shape
    hs = []
    h = h0
    for t in range(T):
        h = torch.tanh(W_xh[inputs[:, t]] + h @ W_hh + b_h)  # (B, H)
        hs.append(h)
    return hs


def rnn_forward(inputs: Tensor, h0: Tensor, W_xh, W_hh, b_h, W_hy, b_y) -> tuple[Tensor, Tensor]:
    """Run the recurrence through plain autograd; returns logits (B, T, V) and states (B, T, H)."""
    hs = torch.stack(rnn_states(inputs, h0, W_xh, W_hh, b_h), dim=1)  # (B, T, H)
    logits = hs @ W_hy + b_y  # (B, T, V)
    return logits, hs


def hidden_gradients(inputs: Tensor, targets: Tensor, h0: Tensor, W_xh, W_hh, b_h, W_hy, b_y):
    """How the gradient fades or explodes through time, for one window.

    Returns the mean over streams of ||dL/dh_t|| for the whole window's loss L, the same for the
    last character's loss alone (how far back one prediction reaches), both (T,), and the states
    (B, T, H).
    """
    with torch.enable_grad():
        W_xh, W_hh, b_h, W_hy, b_y = (w.detach().requires_grad_() for w in (W_xh, W_hh, b_h, W_hy, b_y))
        hs = rnn_states(inputs, h0.detach(), W_xh, W_hh, b_h)
        logits = torch.stack(hs, dim=1) @ W_hy + b_y  # (B, T, V)
        dL = torch.autograd.grad(cross_entropy(logits, targets), hs, retain_graph=True)
        dlast = torch.autograd.grad(cross_entropy(logits[:, -1:], targets[:, -1:]), hs, allow_unused=True)
    norms = torch.stack([d.norm(dim=-1).mean() for d in dL])  # (T,)
    last = torch.stack([d.norm(dim=-1).mean() if d is not None else norms.new_zeros(()) for d in dlast])
    return norms, last, torch.stack(hs, dim=1).detach()


class ManualBPTT(torch.autograd.Function):
    """The recurrence with its backward pass written by hand, as in ``reference_numpy.backward``.

    forward(inputs (B, T), h0 (B, H), W_xh, W_hh, b_h, W_hy, b_y) -> logits (B, T, V), hs (T, B, H).

    Work is laid out time-major so every step reads and writes contiguous (B, H) rows of
    preallocated buffers: the input projection is one gather for the whole window (its backward
    one ``index_add_``), the output projection and every weight gradient are one matmul over all
    T*B states, and the per-step work in both directions is the recurrence alone (two kernels a
    step). Nothing in it synchronises with the host, so it runs unchanged on CUDA.
    """

    @staticmethod
    def forward(ctx, inputs, h0, W_xh, W_hh, b_h, W_hy, b_y):
        B, T = inputs.shape
        x_t = inputs.t()  # (T, B)
        hs = torch.nn.functional.embedding(x_t, W_xh)  # (T, B, H): W_xh[x_t] for every t at once
        hs.add_(b_h)
        h = h0
        for xb_t in hs.unbind(0):  # hs[t] holds W_xh[x_t] + b_h until it is overwritten by h_t
            torch.addmm(xb_t, h, W_hh, out=xb_t).tanh_()  # (B, H)
            h = xb_t
        logits = torch.addmm(b_y, hs.view(T * B, -1), W_hy).view(T, B, -1)  # (T, B, V)
        ctx.save_for_backward(x_t, h0, W_xh, W_hh, W_hy, hs)
        ctx.set_materialize_grads(False)
        return logits.transpose(0, 1), hs  # (B, T, V), (T, B, H)

    @staticmethod
    def backward(ctx, dlogits, dhs_out):
        x_t, h0, W_xh, W_hh, W_hy, hs = ctx.saved_tensors
        T, B, H = hs.shape
        V = W_hy.shape[1]
        hs2d = hs.view(T * B, H)
        if dlogits is None:
            dlogits = hs.new_zeros(B, T, V)
        dy = dlogits.transpose(0, 1).reshape(T * B, V)  # (T*B, V), time-major like hs
        dW_hy = hs2d.t() @ dy  # (H, V)
        db_y = dy.sum(0)  # (V,)
        dhs = (dy @ W_hy.t()).view(T, B, H)  # the output's share of dL/dh_t
        if dhs_out is not None:
            dhs += dhs_out
        steps = dhs.unbind(0)
        hs_t = hs.unbind(0)
        for t in range(T - 1, -1, -1):
            # backprop through tanh, in place: steps[t] becomes dL/d(pre-activation) at t
            torch.ops.aten.tanh_backward.grad_input(steps[t], hs_t[t], grad_input=steps[t])
            if t > 0:
                steps[t - 1].addmm_(steps[t], W_hh.t())  # backprop into h_{t-1}
        draw = dhs.view(T * B, H)
        dh0 = steps[0] @ W_hh.t()  # (B, H)
        dW_hh = torch.addmm(h0.t() @ steps[0], hs[:-1].reshape(-1, H).t(), draw[B:])  # sum_t h_{t-1}^T draw_t
        db_h = draw.sum(0)
        dW_xh = torch.zeros_like(W_xh).index_add_(0, x_t.reshape(-1), draw)  # backprop into the gathered rows
        return None, dh0, dW_xh, dW_hh, db_h, dW_hy, db_y


def rnn_forward_manual(inputs: Tensor, h0: Tensor, W_xh, W_hh, b_h, W_hy, b_y) -> tuple[Tensor, Tensor]:
    """Same as ``rnn_forward``, through ``ManualBPTT``; returns logits (B, T, V) and states (B, T, H).

    Under autocast the whole recurrence runs in the autocast dtype (as cuDNN's RNN does): the
    weights are cast once per window, and autograd casts their gradients back.
    """
    weights = (h0, W_xh, W_hh, b_h, W_hy, b_y)
    device = inputs.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            logits, hs = ManualBPTT.apply(inputs, *(w.to(dtype) for w in weights))
    else:
        logits, hs = ManualBPTT.apply(inputs, *weights)
    return logits, hs.transpose(0, 1)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood in nats over every (stream, step) position."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def generate(
    params: dict[str, Tensor],
    h: Tensor,
    x: Tensor,
    length: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    chunk: int = 256,
):
    """Sample ``length`` characters after ``x`` (B,) from state ``h`` (B, H), carrying the state.

    Yields (B, n) index tensors ``chunk`` steps at a time, so a caller can stream text without a
    host sync per character. Draws use the Gumbel-max trick, ``argmax(logits / temperature + G)``
    with G = -log(-log(U)), an exact sample of softmax(logits / temperature) whose noise for a
    whole chunk comes from one vectorised draw. One matmul per step, ``h_t @ [W_hh | W_hy]``, gives
    both h_t's share of the next pre-activation and the logits of the next character, with the
    noise as its bias. ``temperature=0`` is greedy; ``top_k`` keeps the k most likely characters.
    """
    W_xh, W_hh, b_h, W_hy, b_y = (params[k] for k in PARAM_NAMES)
    if temperature > 0:
        W_hy, b_y = W_hy / temperature, b_y / temperature  # fold the temperature into the weights
    B, H = h.shape
    V = W_hy.shape[1]
    xb = W_xh + b_h  # (V, H): the input projection and its bias, gathered once per step
    W = torch.cat([W_hh, W_hy], dim=1)  # (H, H + V)
    z = torch.zeros(B, H + V, dtype=h.dtype, device=h.device)
    z_rec, z_out = z[:, :H], z[:, H:]  # views: h_t @ W_hh and the logits (+ noise) of x_{t+1}
    torch.mm(h, W_hh, out=z_rec)
    noise_device = generator.device if generator is not None else h.device
    for start in range(0, length, chunk):
        n = min(chunk, length - start)
        bias = torch.zeros(n, B, H + V, dtype=h.dtype, device=h.device)
        if temperature > 0:
            u = torch.rand(n, B, V, generator=generator, device=noise_device, dtype=h.dtype).to(h.device)
            bias[:, :, H:] = u.log_().neg_().log_().neg_()  # Gumbel noise
        bias[:, :, H:] += b_y
        out = torch.empty(n, B, dtype=torch.long, device=h.device)
        for bias_t, out_t in zip(bias.unbind(0), out.unbind(0), strict=True):
            h = torch.index_select(xb, 0, x).add_(z_rec).tanh_()  # (B, H)
            torch.addmm(bias_t, h, W, out=z)  # (B, H + V)
            if top_k is not None and top_k < V:
                clean = z_out - bias_t[:, H:] + b_y
                z_out.masked_fill_(clean < torch.topk(clean, top_k, dim=-1).values[:, -1:], float("-inf"))
            torch.argmax(z_out, dim=-1, out=out_t)
            x = out_t
        yield out.t()
