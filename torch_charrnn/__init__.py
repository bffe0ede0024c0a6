"""torch-charrnn: a character-level vanilla tanh RNN in PyTorch Lightning, checked against NumPy."""

from torch_charrnn.data import CharDataModule
from torch_charrnn.model import CharRNN

__all__ = ["CharDataModule", "CharRNN"]
__version__ = "0.1.0"
