"""Text from a model's weights, for any cell and depth: the prime encoded, the state warmed up on
it, symbols drawn one step of every layer a symbol (``generate``), text decoded as it comes.
``weights`` is ``{"layers": [...], "W_hy", "b_y"}`` as in ``reference_numpy``.

No Lightning here: ``charrnn sample`` uses this directly on a checkpoint's weights, ``CharRNN``'s
samples and the ONNX step (``portable.py``) too.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import torch
from torch import Tensor

from torch_charrnn.data.encoded import decode, encode, symbol_bytes
from torch_charrnn.rnn.bptt import run_layers, zoned
from torch_charrnn.rnn.cells import Cell
from torch_charrnn.rnn.products import plain_window_product, product


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


@torch.no_grad()
def generate(
    weights: dict,
    cell: Cell,
    state: tuple,
    x: Tensor,
    length: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    chunk: int = 256,
) -> Iterator[Tensor]:
    """Sample ``length`` characters after ``x`` (B,) from ``state`` (a tuple of (L, B, H)).

    Yields (B, n) index tensors ``chunk`` steps at a time, so a caller can stream text without a
    host sync per character. Draws use the Gumbel-max trick, ``argmax(logits / temperature + G)``
    with G = -log(-log(U)), an exact sample of softmax(logits / temperature) whose noise for a
    whole chunk comes from one vectorised draw, added as the output layer's bias.
    ``temperature=0`` is greedy; ``top_k`` keeps the k most likely characters.
    """
    layers, W_hy, b_y = weights["layers"], weights["W_hy"], weights["b_y"]
    if temperature > 0:
        W_hy, b_y = W_hy / temperature, b_y / temperature  # fold the temperature into the weights
    symbols = torch.arange(layers[0]["W_xh"].shape[0], device=x.device)
    xb, _ = cell.input_share(symbols, layers[0])  # (V, G*H): layer 0's input share of every character
    states = [tuple(s[l] for s in state) for l in range(len(layers))]
    recur = [product(p["W_hh"], x.shape[0]) for p in layers]  # + h W_hh, each prepared once
    rates = expectation(cell, W_hy)
    B, V = x.shape[0], W_hy.shape[1]
    noise_device = generator.device if generator is not None else x.device
    for start in range(0, length, chunk):
        n = min(chunk, length - start)
        bias = b_y.expand(n, B, V).clone()  # (n, B, V)
        if temperature > 0:
            u = torch.rand(n, B, V, generator=generator, device=noise_device, dtype=W_hy.dtype).to(x.device)
            bias -= u.log_().neg_().log_()  # Gumbel noise
        out = torch.empty(n, B, dtype=torch.long, device=x.device)
        for bias_t, out_t in zip(bias.unbind(0), out.unbind(0), strict=True):
            top = step_layers(torch.index_select(xb, 0, x), states, layers, cell, recur, rates)  # (B, H)
            z = torch.addmm(bias_t, top, W_hy)  # (B, V): logits plus noise
            if top_k is not None and top_k < V:
                clean = z - bias_t + b_y
                z.masked_fill_(clean < torch.topk(clean, top_k, dim=-1).values[:, -1:], float("-inf"))
            torch.argmax(z, dim=-1, out=out_t)
            x = out_t
        yield out.t()


def expectation(cell: Cell, like: Tensor) -> tuple | None:
    """A zoned cell's rates as ``step_layers`` takes them, each state's a 0-d tensor of ``like``'s
    dtype and device (None where a state is not zoned; a traced float would be float32 whatever the
    states' dtype, the ONNX export's), made once; None for a cell without zoneout."""
    return tuple(like.new_tensor(q) if q else None for q in cell.zoneout) if cell.zoneout else None


def step_layers(
    a: Tensor, states: list[tuple], layers: list[dict], cell: Cell, recur: list, rates: tuple | None
) -> Tensor:
    """One symbol through every layer: ``a`` (B, G*H) is layer 0's input share (its cell's
    ``input_share`` of the symbol: a row of W_xh plus b_h), ``states`` each layer's state tuple,
    replaced in place, ``recur`` each layer's product by W_hh. Returns the top layer's h (B, H).
    ``rates``: a zoned cell's (``expectation``), by which each state moves in expectation,
    p * previous + (1 - p) * new."""
    for l, p in enumerate(layers):
        if l > 0:
            a, _ = cell.input_share(states[l - 1][0], p, plain_window_product)  # from the layer below's h
        new, _ = cell.step(a, states[l], p, recur[l])
        if rates is not None:
            new = tuple(
                n if q is None else zoned(s, n, q) for s, n, q in zip(states[l], new, rates, strict=True)
            )
        states[l] = new
    return states[-1][0]
