"""The recurrent product: ``x @ W (+ add)`` for a weight that stays fixed over a window, which the
recurrence takes T times forward (``h_{t-1} W_hh``) and T times backward (``du_t W_hhᵀ``).

On a CPU in float32, with autograd off (sampling, and the pure-torch loop over a window, which
trains and scores where the C++ kernels cannot run), and W of a
mebibyte or more, the product runs through oneDNN (PyTorch's mkldnn) on a copy of W reordered once
per window into oneDNN's blocked layout, with the addition fused into the product: faster than
addmm at that size (``benchmarks/bench_products.py``); with a smaller W the reorder and oneDNN's
fixed cost a call are paid for nothing.

Everywhere else it is ``addmm``: float64 (the gradient tests), a GPU (cuBLAS has no such layout),
bf16, and whenever autograd records (``forward_autograd``, the monitor), since the reordered copy
has no gradient. Both compute the same sum; in float32 they round differently (about 1e-6
relative, tested in ``tests/test_native.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger("torch_charrnn")

PACK_FROM = 2**18  # elements of W (1 MiB of float32: the LSTM's W_hh at H256) from which it pays
Product = Callable[..., Tensor]  # (x, add=None) -> add + x @ W


def product(W: Tensor, rows: int) -> Product:
    """``x, add=None -> add + x @ W`` for ``x`` of ``rows`` rows, W (K, N); see the module's docstring."""
    prepared = packed(W, rows)
    if prepared is not None:
        return functools.partial(_onednn, prepared)
    return plain_product(W)


def plain_product(W: Tensor) -> Product:
    """``x, add=None -> add + x @ W`` as ``addmm``, whatever the device: what a traced or exported
    graph can hold (``inference/portable.py``)."""
    return functools.partial(_addmm, W)


def plain_window_product(x: Tensor, W: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ W (+ bias)`` with torch's own products, whatever the device: ``window_product`` where a
    traced or exported graph must hold it (``inference/portable.py``), and one step of sampling."""
    if bias is None:
        return x @ W
    return torch.addmm(bias, x, W) if x.dim() == 2 else x @ W + bias


def packed(W: Tensor, rows: int) -> Tensor | None:
    """W (K, N) reordered into oneDNN's layout for products with ``rows`` rows, where it pays (CPU,
    float32, autograd off, oneDNN enabled and working); None elsewhere."""
    if W.numel() < PACK_FROM or not onednn_runs(W):
        return None
    return _reorder(W, rows)


def onednn_runs(W: Tensor) -> bool:
    """Whether a product with W runs through oneDNN: a CPU, float32, autograd off, oneDNN enabled
    and working."""
    if W.device.type != "cpu" or W.dtype != torch.float32 or torch.is_grad_enabled():
        return False
    return torch.backends.mkldnn.enabled and onednn_works()


def window_product(x: Tensor, W: Tensor, bias: Tensor | None = None, *, transposed: bool = False) -> Tensor:
    """``x @ W (+ bias)`` for a whole window's rows x (..., K) and a layer's input weight W (K, N), or
    with ``transposed`` ``x @ Wᵀ`` (W (N, K)): the products of a layer above the first, forward (its
    input shares) and backward (dL/dh of the layer below). Through oneDNN's matmul where it runs
    (``onednn_runs``), which on AVX-512 CPUs runs these at twice or more ``addmm``'s speed (whose
    BLAS may not use AVX-512; ``benchmarks/bench_products.py``); ``addmm`` elsewhere."""
    if not onednn_runs(W):
        product = x @ (W.t() if transposed else W)
        return product if bias is None else product + bias
    weight = W if transposed else W.t().contiguous()  # oneDNN's: (N, K)
    x2 = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")
    return out.view(*x.shape[:-1], weight.shape[0])


def _reorder(W: Tensor, rows: int) -> Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(W.t().contiguous(), rows)  # (N, K), blocked


def _addmm(W: Tensor, x: Tensor, add: Tensor | None = None) -> Tensor:
    return x @ W if add is None else torch.addmm(add, x, W)


def _onednn(prepared: Tensor, x: Tensor, add: Tensor | None = None) -> Tensor:
    if add is None:
        return torch.ops.mkldnn._linear_pointwise(x, prepared, None, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise.binary(x, add, prepared, None, "add")


@functools.cache
def onednn_works() -> bool:
    """Whether this PyTorch has oneDNN's products, packed and plain, and they agree with ``addmm``
    (checked once; a build without them, or whose private operators changed, falls back to
    ``addmm``, said once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        W, x, add = (torch.randn(*shape, generator=g) for shape in ((8, 12), (3, 8), (3, 12)))
        with torch.no_grad():
            got = _onednn(_reorder(W, 3), x, add)
            plain = torch.ops.mkldnn._linear_pointwise(x, W.t().contiguous(), add[0], "none", [], "")
        expected = torch.addmm(add, x, W)
        if torch.allclose(got, expected, rtol=1e-4, atol=1e-5) and torch.allclose(
            plain, torch.addmm(add[0], x, W), rtol=1e-4, atol=1e-5
        ):
            return True
        problem = "gave a different product"
    except (RuntimeError, AttributeError, NotImplementedError) as error:
        problem = f"failed ({type(error).__name__}: {str(error).splitlines()[0]})"
    log.warning(
        "oneDNN's packed matrix product %s on this PyTorch %s; the hand-written BPTT uses addmm "
        "instead (the same results, slower on a CPU)",
        problem,
        torch.__version__,
    )
    return False
