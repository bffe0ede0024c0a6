"""Text from a model's parameters: warm up on a prime, then draw characters (no Lightning needed).

``charrnn sample`` uses this directly on a checkpoint's weights, so sampling imports torch and
nothing of the training stack.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from torch_charrnn.corpus import encode
from torch_charrnn.rnn import PARAM_NAMES, generate, rnn_forward


def default_prime(vocab: str) -> str:
    """Start after a newline, or after the vocabulary's first character if it has none."""
    return "\n" if "\n" in vocab else vocab[:1]


@torch.no_grad()
def sample_chunks(
    params: dict[str, Tensor],
    vocab: str,
    length: int,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    num_streams: int = 1,
) -> Iterator[list[str]]:
    """Generate ``length`` characters after ``prime``, yielding text a chunk at a time per stream.

    The hidden state is warmed up on the prime (or on ``default_prime``) and carried from one
    character to the next. Unknown prime characters raise a CharRNNError that lists them.
    """
    W_hh = params["W_hh"]
    ids = encode(prime or default_prime(vocab), vocab).to(W_hh.device).expand(num_streams, -1)  # (B, P)
    h = W_hh.new_zeros(num_streams, W_hh.shape[0])  # (B, H)
    if ids.shape[1] > 1:
        h = rnn_forward(ids[:, :-1], h, *(params[k] for k in PARAM_NAMES))[1][:, -1]  # warm up on the prime
    for chunk in generate(params, h, ids[:, -1], length, generator, temperature, top_k):
        yield ["".join(vocab[i] for i in row) for row in chunk.tolist()]


def sample_text(params: dict[str, Tensor], vocab: str, length: int, prime: str = "", **kwargs) -> str:
    """The ``length`` characters generated after ``prime`` (one stream), as one string."""
    return "".join(chunk[0] for chunk in sample_chunks(params, vocab, length, prime, **kwargs))
