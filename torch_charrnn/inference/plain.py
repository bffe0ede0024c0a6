"""A model exported by ``charrnn export --format torch``, in PyTorch's own modules. This file imports
nothing but torch: copy it next to your code to use an exported model without torch-charrnn.

    saved = torch.load("model.pt", weights_only=True)
    model = PlainCharRNN(**saved["config"])
    model.load_state_dict(saved["state_dict"])

Layer 0 reads the one-hot character, so ``rnn.weight_ih_l0`` is the layer's W_xh transposed, and
its product with a one-hot row is that character's row of W_xh, exactly: no embedding of another
size stands in front.
"""

import torch.nn.functional as F
from torch import nn


class PlainCharRNN(nn.Module):
    """Characters (indices into ``vocab``) -> nn.RNN, nn.GRU or nn.LSTM (``cell``) -> nn.Linear."""

    def __init__(self, cell: str, vocab: str, hidden_size: int, num_layers: int):
        super().__init__()
        self.vocab = vocab
        self.rnn = getattr(nn, cell)(len(vocab), hidden_size, num_layers, batch_first=True)
        self.out = nn.Linear(hidden_size, len(vocab))

    def forward(self, x, state=None):
        """Logits (B, T, V) for indices ``x`` (B, T), and the state to pass to the next call."""
        h, state = self.rnn(F.one_hot(x, len(self.vocab)).to(self.out.weight.dtype), state)
        return self.out(h), state
