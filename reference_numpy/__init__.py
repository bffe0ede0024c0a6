"""A pure-NumPy character-level RNN with hand-written BPTT: the reference the torch code is tested against."""

from reference_numpy.bptt import backward, cross_entropy, forward, loss_and_grads
from reference_numpy.cells import CELLS, get_cell
from reference_numpy.optim import (
    adagrad_step,
    adam_step,
    clip_grad_norm,
    clip_grad_value,
    clip_grads,
    global_norm,
    rmsprop_step,
    warmup_cosine,
)
from reference_numpy.rnn import (
    cast,
    init_params,
    named_arrays,
    numerical_grads,
    pick,
    sample,
    state_names,
    zero_state,
)
from reference_numpy.train import build_vocab, encode, evaluate, make_streams, num_windows, train, window
from reference_numpy.tutorial import RecurrentNN

__all__ = [
    "CELLS",
    "RecurrentNN",
    "adagrad_step",
    "adam_step",
    "backward",
    "build_vocab",
    "cast",
    "clip_grad_norm",
    "clip_grad_value",
    "clip_grads",
    "cross_entropy",
    "encode",
    "evaluate",
    "forward",
    "get_cell",
    "global_norm",
    "init_params",
    "loss_and_grads",
    "make_streams",
    "named_arrays",
    "num_windows",
    "numerical_grads",
    "pick",
    "rmsprop_step",
    "sample",
    "state_names",
    "train",
    "warmup_cosine",
    "window",
    "zero_state",
]
