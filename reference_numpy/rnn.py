"""The character-level RNN in plain NumPy: parameters, sampling, finite differences.

The BPTT itself is in ``reference_numpy/bptt.py``, the cells in ``reference_numpy/cells/``, and
clipping and the optimizers in ``reference_numpy/optim.py``.
Row vectors, as in the tutorial; V = vocabulary size, H = hidden size, L = layers, B = streams,
T = window. Parameters are ``{"layers": [{"W_xh", "W_hh", "b_h", ...}, ...], "W_hy", "b_y"}``; the
state is a tuple of (L, B, H) arrays, ``(h,)`` or ``(h, c)``.

References: Karpathy's min-char-rnn, Le et al. 2015 "A Simple Way to Initialize Recurrent
Networks of Rectified Linear Units" (identity W_hh).
"""

from __future__ import annotations

import numpy as np

from reference_numpy.bptt import cross_entropy, forward
from reference_numpy.cells import cell_options, get_cell

OUTPUT_NAMES = ("W_hy", "b_y")


def init_params(
    vocab_size: int,
    hidden_size: int,
    rng: np.random.Generator,
    cell: str = "tanh",
    num_layers: int = 1,
    whh_scale: float = 0.01,
    init_std: float = 0.01,
    forget_bias: float = 0.0,
    dtype=np.float64,
) -> dict:
    """Every layer as its cell initialises it (``whh_scale`` and ``init_std`` are the tanh cell's
    options, ``forget_bias`` the LSTM's); the output layer W_hy ~ N(0, init_std^2), b_y = 0."""
    c = get_cell(cell)
    V, H = vocab_size, hidden_size
    options = cell_options(c, whh_scale=whh_scale, init_std=init_std, forget_bias=forget_bias)
    layers = [c.init(V if l == 0 else H, H, rng, first_layer=l == 0, **options) for l in range(num_layers)]
    params = {"layers": layers, "W_hy": rng.standard_normal((H, V)) * init_std, "b_y": np.zeros(V)}
    return cast(params, dtype)


def cast(params: dict, dtype) -> dict:
    """A copy of the parameters as arrays of ``dtype``."""
    return {
        "layers": [{k: np.array(v, dtype=dtype) for k, v in p.items()} for p in params["layers"]],
        **{k: np.array(params[k], dtype=dtype) for k in OUTPUT_NAMES},
    }


def named_arrays(params: dict) -> dict[str, np.ndarray]:
    """Every parameter by its state-dict name (``layers.0.W_xh`` ... ``b_y``), the arrays themselves."""
    named = {f"layers.{l}.{k}": v for l, p in enumerate(params["layers"]) for k, v in p.items()}
    return {**named, **{k: params[k] for k in OUTPUT_NAMES}}


def zero_state(params: dict, batch_size: int, cell: str = "tanh") -> tuple:
    """The state every stream starts from: zeros, a tuple of (L, B, H) arrays."""
    L, H = len(params["layers"]), params["W_hy"].shape[0]
    return tuple(np.zeros((L, batch_size, H), dtype=params["W_hy"].dtype) for _ in get_cell(cell).STATE)


def numerical_grads(
    params, inputs, targets, state, cell="tanh", delta=1e-5, indices=None, masks=None, zones=None
):
    """Central-difference gradients of the mean loss, keyed by state-dict name plus ``state.h``
    (and ``state.c``) for the initial state; ``masks`` and ``zones``, dropout's and zoneout's
    (fixed), or None.

    ``indices`` optionally maps a name to the flat indices to check (others are left NaN), so that
    large parameters can be spot-checked.
    """
    work = cast(params, np.float64)
    work_state = tuple(np.array(s, dtype=np.float64) for s in state)
    named = {**named_arrays(work), **state_names(work_state, cell)}
    out = {}
    for name, array in named.items():
        flat = array.reshape(-1)  # a view: writes below perturb the parameter itself
        grad = np.full(flat.size, np.nan)
        for i in range(flat.size) if indices is None or name not in indices else indices[name]:
            old = flat[i]
            flat[i] = old + delta
            plus = cross_entropy(forward(work, inputs, work_state, cell, masks, zones)[0], targets)
            flat[i] = old - delta
            minus = cross_entropy(forward(work, inputs, work_state, cell, masks, zones)[0], targets)
            flat[i] = old
            grad[i] = (plus - minus) / (2 * delta)
        out[name] = grad.reshape(array.shape)
    return out


def state_names(state: tuple, cell: str = "tanh") -> dict[str, np.ndarray]:
    """The state's arrays by name: ``state.h`` (and ``state.c``)."""
    return {f"state.{name}": s for name, s in zip(get_cell(cell).STATE, state, strict=True)}


def sample(params, state, x, length, rng, cell="tanh", temperature=1.0, top_k=None):
    """Generate ``length`` indices, carrying the state from character to character.

    ``state`` is a tuple of (L, B, H), ``x`` the (B,) indices to feed first. ``temperature=0`` is
    greedy. Returns (indices (B, length), state).
    """
    out = np.empty((x.shape[0], length), dtype=np.int64)
    for i in range(length):
        logits, state, _ = forward(params, x[:, None], state, cell)  # one step of every layer
        x = pick(logits[:, 0], rng, temperature, top_k)
        out[:, i] = x
    return out, state


def pick(logits, rng, temperature=1.0, top_k=None):
    """Draw one index per row from softmax(logits / temperature), by inverse CDF."""
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]
        logits = np.where(logits < kth, -np.inf, logits)
    cdf = np.exp(logits - logits.max(axis=-1, keepdims=True)).cumsum(axis=-1)
    u = rng.random((logits.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1)
