"""The ways to differentiate a window, by name, all tested equal: ``manual`` is the hand-written
BPTT the proofs are about, ``autograd`` its oracle, ``fused`` PyTorch's own kernels on the same
parameters. Each is ``forward(inputs, state, layers, W_hy, b_y, cell) -> (logits, last state)``."""

from torch_charrnn.rnn.bptt import forward_autograd, forward_manual
from torch_charrnn.rnn.fused import forward_fused

BACKENDS = {"manual": forward_manual, "autograd": forward_autograd, "fused": forward_fused}
# The backends that run this package's own cell steps: the NumPy reference's arithmetic, equal to
# it to rounding at any scale. fused runs PyTorch's kernels, whose sums round differently (2e-12
# apart at a scale of 6), and is tested against these two instead (tests/test_fused.py).
OWN_STEPS = ("manual", "autograd")
