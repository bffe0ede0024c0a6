"""Text from a model's weights: the prime encoded, the state warmed up on it, symbols drawn by
``rnn.generation.generate``, text decoded as it comes, for any cell and depth.

No Lightning here: ``charrnn sample`` uses this directly on a checkpoint's weights, so sampling
imports torch and nothing of the training stack.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import torch

from torch_charrnn.data.encoded import decode, encode, symbol_bytes
from torch_charrnn.rnn.bptt import run_layers
from torch_charrnn.rnn.cells import Cell
from torch_charrnn.rnn.generation import generate


def default_prime(vocab: str) -> str:
    """Start after a newline, or after the vocabulary's first character if it has none."""
    return "\n" if "\n" in vocab else vocab[:1]


@torch.no_grad()
def sample_chunks(
    weights: dict,
    cell: Cell,
    vocab: str,
    length: int,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    num_streams: int = 1,
    unit: str = "chars",
) -> Iterator[list[str]]:
    """Generate ``length`` symbols after ``prime``, yielding text a chunk at a time per stream.

    The state is warmed up on the prime (or on ``default_prime``) and carried from one symbol
    to the next. Unknown prime characters raise a CharRNNError that lists them. A byte model
    (``unit="bytes"``) reads the prime's UTF-8 bytes and its output is decoded as UTF-8 (a
    character split across chunks comes out whole; invalid bytes as U+FFFD).
    """
    W_hy = weights["W_hy"]
    ids = encode(prime, vocab, unit) if prime else encode(default_prime(vocab), vocab)  # (P,)
    ids = ids.to(W_hy.device).expand(num_streams, -1)  # (B, P)
    L, H = len(weights["layers"]), W_hy.shape[0]
    state = tuple(W_hy.new_zeros(L, num_streams, H) for _ in cell.STATE)
    if ids.shape[1] > 1:
        state = run_layers(ids[:, :-1], state, weights["layers"], cell)[1]  # warm up on the prime
    chunks = (
        c.cpu() for c in generate(weights, cell, state, ids[:, -1], length, generator, temperature, top_k)
    )
    if unit != "bytes":
        for chunk in chunks:
            yield [decode(row, vocab) for row in chunk]
        return
    # a character's bytes may straddle two chunks: one incremental UTF-8 decoder per stream
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(num_streams)]
    for chunk in chunks:
        yield [d.decode(symbol_bytes(row, vocab)) for d, row in zip(decoders, chunk, strict=True)]
    yield [d.decode(b"", final=True) for d in decoders]


def sample_text(weights: dict, cell: Cell, vocab: str, length: int, prime: str = "", **kwargs) -> str:
    """The ``length`` characters generated after ``prime`` (one stream), as one string."""
    return "".join(chunk[0] for chunk in sample_chunks(weights, cell, vocab, length, prime, **kwargs))
