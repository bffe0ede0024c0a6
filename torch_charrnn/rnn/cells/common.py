"""What more than one cell uses."""

import torch


def uniform(*shape, bound: float, generator=None):
    """U(-bound, bound), PyTorch's initialisation of its recurrent modules (bound 1/sqrt(H))."""
    return (torch.rand(*shape, generator=generator) * 2 - 1) * bound
