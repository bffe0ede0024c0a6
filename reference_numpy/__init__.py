"""A pure-NumPy character-level RNN with hand-written BPTT: the reference the torch code is tested against."""

from reference_numpy.rnn import (
    PARAM_NAMES,
    adagrad_step,
    backward,
    clip_grad_norm,
    clip_grad_value,
    clip_grads,
    cross_entropy,
    forward,
    global_norm,
    init_params,
    loss_and_grads,
    numerical_grads,
    pick,
    sample,
)
from reference_numpy.train import build_vocab, encode, evaluate, make_streams, num_windows, train, window
from reference_numpy.tutorial import RecurrentNN

__all__ = [
    "PARAM_NAMES",
    "RecurrentNN",
    "adagrad_step",
    "backward",
    "build_vocab",
    "clip_grad_norm",
    "clip_grad_value",
    "clip_grads",
    "cross_entropy",
    "encode",
    "evaluate",
    "forward",
    "global_norm",
    "init_params",
    "loss_and_grads",
    "make_streams",
    "num_windows",
    "numerical_grads",
    "pick",
    "sample",
    "train",
    "window",
]
