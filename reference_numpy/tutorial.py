"""The tutorial's ``RecurrentNN`` class, with its interface kept and its bugs fixed.

What the published program got wrong, and where each is fixed here:

- the loss list was overwritten by a float: ``train`` keeps a list of the smoothed loss per step;
- only dW_hh got a gradient: ``loss_and_grads`` returns all five (tested against finite differences);
- the Adagrad memory was never updated: ``adagrad_step`` accumulates ``g*g`` in ``self.m_params``;
- the clip value was never used: gradients are clipped by global norm to ``clip_value``;
- the hidden state was not carried (``self.ho`` typo): ``self.h0`` takes the last state of each window;
- sampling did not carry the hidden state: ``test`` feeds each state into the next character;
- the training file was never read and ``set(text)`` ordered the vocabulary differently in each
  process: see ``reference_numpy.__main__``, which reads the file and sorts the vocabulary.
"""

from __future__ import annotations

import logging

import numpy as np

from reference_numpy.bptt import loss_and_grads
from reference_numpy.optim import adagrad_step, clip_grads
from reference_numpy.rnn import init_params, named_arrays, sample
from reference_numpy.train import encode, make_streams, num_windows, window

log = logging.getLogger(__name__)


class RecurrentNN:
    """A character-level tanh RNN trained one window at a time (B=1), as in the tutorial.

    Losses are per character (mean, nats) rather than summed over the window, so that they
    compare with the Lightning model's; ``clip_algorithm="value"`` restores element-wise clipping.
    """

    def __init__(
        self,
        char_to_idx: dict[str, int],
        idx_to_char: dict[int, str],
        vocab: int,
        h_size: int = 75,
        seq_len: int = 20,
        clip_value: float = 5,
        epochs: int = 50,
        learning_rate: float = 1e-2,
        whh_scale: float = 0.01,
        clip_algorithm: str = "norm",
        seed: int = 0,
    ):
        self.n_h = h_size
        self.seq_len = seq_len
        self.clip_value = clip_value
        if clip_algorithm not in ("norm", "value"):
            raise ValueError(f"clip_algorithm must be 'norm' or 'value', got {clip_algorithm!r}")
        self.clip_algorithm = clip_algorithm
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.char_to_idx = char_to_idx
        self.idx_to_char = idx_to_char
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)
        self.smooth_loss = float(np.log(vocab))  # the loss of a uniform guess, per character
        self.params = init_params(vocab, h_size, self.rng, whh_scale=whh_scale)
        self.h0 = np.zeros((1, h_size))
        self.m_params = {k: np.zeros_like(v) for k, v in named_arrays(self.params).items()}

    def train(self, text: str) -> tuple[list[float], dict[str, np.ndarray]]:
        """Train for ``self.epochs`` passes over ``text``; returns the smoothed loss at every step."""
        vocab = "".join(self.idx_to_char[i] for i in range(self.vocab))
        streams = make_streams(encode(text, vocab), 1)
        n = num_windows(streams, self.seq_len)
        if n < 1:
            raise ValueError(f"the text has {len(text)} characters; at least {self.seq_len + 1} are needed")
        losses: list[float] = []
        for epoch in range(self.epochs):
            self.h0 = np.zeros_like(self.h0)
            for k in range(n):
                inputs, targets = window(streams, k, self.seq_len)
                loss, grads, (h,) = loss_and_grads(self.params, inputs, targets, (self.h0[None],))
                self.h0 = h[0]  # (1, H): carried into the next window
                clip_grads(grads, self.clip_algorithm, self.clip_value)
                adagrad_step(self.params, grads, self.m_params, self.learning_rate)
                self.smooth_loss = 0.999 * self.smooth_loss + 0.001 * loss
                losses.append(self.smooth_loss)
            log.info("Epoch: %d\tLoss: %.4f", epoch + 1, self.smooth_loss)
        return losses, self.params

    def test(self, test_size: int, start_index: int) -> str:
        """Sample ``test_size`` characters after the character with index ``start_index``."""
        state = (np.zeros((1, 1, self.n_h)),)  # one layer, one stream
        idx, _ = sample(self.params, state, np.array([start_index]), test_size, self.rng)
        return "".join(self.idx_to_char[int(i)] for i in idx[0])
