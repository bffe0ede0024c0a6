"""Layer normalisation and its backward, for the layer-normalised cells (``lnlstm``, ``lngru``).

    LN(v; g, b) = g * (v - mean(v)) / sqrt(var(v) + EPS) + b     over v's last dimension

mean and the biased variance over the last dimension (a whole G*H product, or c's H units). Over
one unit v - mean(v) is 0, so LN(v) is b whatever v, and nothing flows back into v.

Reference: Ba, Kiros & Hinton 2016, "Layer Normalization".
"""

import numpy as np

EPS = 1e-5


def layer_norm(v, g, b=None):
    """LN(v; g, b) over the last dimension, and what the backward needs: v normalised and 1/sigma."""
    centred = v - v.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + EPS)  # (..., 1)
    vhat = centred * rstd
    y = vhat * g if b is None else vhat * g + b
    return y, (vhat, rstd)


def layer_norm_backward(dy, kept, g):
    """dL/dv from dL/dy = dL/dLN(v): through the gain, then through the normalisation,
    rstd * (d - mean(d) - vhat * mean(d * vhat)) with d = dy * g. The gain's gradient is
    sum(dy * vhat) and the bias's sum(dy), over the rows: the caller adds them up."""
    vhat, rstd = kept
    d = dy * g  # backprop into the gain
    mean_d = d.mean(axis=-1, keepdims=True)
    mean_dv = (d * vhat).mean(axis=-1, keepdims=True)
    return rstd * (d - mean_d - vhat * mean_dv)  # backprop through the normalisation
