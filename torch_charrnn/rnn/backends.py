"""The ways to differentiate a window, by name, all tested equal: ``manual`` is the hand-written
BPTT the proofs are about, ``autograd`` its oracle, ``fused`` PyTorch's own kernels on the same
parameters. Each is ``forward(inputs, state, layers, W_hy, b_y, cell) -> (logits, last state)``."""

from torch_charrnn.rnn.bptt import forward_autograd, forward_manual
from torch_charrnn.rnn.fused import forward_fused

BACKENDS = {"manual": forward_manual, "autograd": forward_autograd, "fused": forward_fused}
