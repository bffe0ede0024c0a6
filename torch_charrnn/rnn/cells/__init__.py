"""The recurrent cells, by name. Adding one is a file here (and its twin in reference_numpy/cells/)
and a line in CELLS: the BPTT loop, the sampler, the monitor and the model take whatever is
registered.

A cell module has:
    GATES           gate blocks side by side in W_xh, W_hh and b_h (tanh 1, GRU 3, LSTM 4)
    STATE           names of its recurrent state, h first: ("h",) or ("h", "c")
    init(...)       the parameters of one layer
    step(...)       one time step forward, given the input share a and the recurrent share u
    step_backward   that step's derivatives, each beside the operation it differentiates
    extra_grads     gradients of parameters beyond W_xh, W_hh, b_h (GRU's b_hn), from the window's du
    activations     (torch only) a step's gates and states by name, for the TensorBoard monitor
    FUSED, fused_biases   (torch only, optional) the torch.nn module computing the same cell and
                    its two biases from this layer's, for bptt="fused"
"""

from torch_charrnn.rnn.cells import gru, lstm, tanh

CELLS = {"tanh": tanh, "gru": gru, "lstm": lstm}


def get_cell(name: str):
    """The cell module registered as ``name``."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}: choose one of {', '.join(CELLS)}") from None
