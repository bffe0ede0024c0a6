"""A trained model for use outside this package, in two formats (``charrnn export``).

``torch``: a file that ``torch.load(path, weights_only=True)`` reads with only torch installed,
holding the vocabulary and the state dict of ``PlainCharRNN`` (``inference/plain.py``: nn.RNN, nn.GRU or
nn.LSTM + nn.Linear). Its recurrent weights are the model's own under torch.nn's names, as
``bptt="fused"`` runs them (``fused.fused_parameters``).

``onnx``: one step, ``x`` (B,) character indices and the state (``h``, and ``c`` for an LSTM, each
(L, B, H)) in, ``logits`` (B, V) and ``h_next`` (``c_next``) out, with the vocabulary in the model's
metadata. The step is the cells' own (``sampling.step_layers``, layer 0 a gather of W_xh's rows)
traced by ``torch.onnx.export``, so a registered cell exports without code of its own here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from torch_charrnn.errors import CharRNNError
from torch_charrnn.inference.plain import PlainCharRNN
from torch_charrnn.inference.sampling import expectation, step_layers
from torch_charrnn.rnn.bptt import run_layers
from torch_charrnn.rnn.cells import Cell
from torch_charrnn.rnn.fused import fused_parameters
from torch_charrnn.rnn.products import plain_product, plain_window_product

TORCH_FORMAT = "torch-charrnn plain 1"  # the torch file's "format": what its keys mean
ONNX_EXTRA = 'pip install -e ".[export]"'  # onnx, onnxscript (torch.onnx's exporter) and onnxruntime


def widened(weights: dict) -> dict:
    """The weights as they are in float32 or float64; in float16 or bfloat16 (a run in ``16-true`` or
    ``bf16-true`` precision), widened to float32, which holds them exactly and which torch.nn on a
    CPU and every ONNX runtime compute in."""
    if weights["W_hy"].dtype in (torch.float32, torch.float64):
        return weights
    layers = [{k: v.float() for k, v in p.items()} for p in weights["layers"]]
    return {"layers": layers, "W_hy": weights["W_hy"].float(), "b_y": weights["b_y"].float()}


def plain_config(weights: dict, cell: Cell, vocab: str) -> dict:
    """``PlainCharRNN``'s arguments for these weights."""
    return {
        "cell": cell.FUSED,
        "vocab": vocab,
        "hidden_size": weights["W_hy"].shape[0],
        "num_layers": len(weights["layers"]),
    }


def plain_state_dict(weights: dict, cell: Cell) -> dict[str, Tensor]:
    """The weights under ``PlainCharRNN``'s names: ``rnn.weight_ih_l0`` is layer 0's W_xh
    transposed, and so on; ``out.weight`` is W_hy transposed, ``out.bias`` is b_y."""
    named = {f"rnn.{k}": v for k, v in fused_parameters(weights["layers"], cell).items()}
    named["out.weight"] = weights["W_hy"].t()
    named["out.bias"] = weights["b_y"]
    return {k: v.detach().cpu().contiguous().clone() for k, v in named.items()}


def save_torch(path: Path, weights: dict, cell: Cell, vocab: str, unit: str) -> None:
    """Write the torch format to ``path``: a dict of plain values and tensors (see the module)."""
    torch.save(
        {
            "format": TORCH_FORMAT,
            "config": plain_config(weights, cell, vocab),
            "unit": unit,  # "bytes": vocab holds byte values as latin-1 characters, text is UTF-8
            "state_dict": plain_state_dict(weights, cell),
        },
        path,
    )


class OneStep(nn.Module):
    """One symbol through every layer and the output layer, as ``sampling.generate`` steps, with
    plain products (``addmm``) that a traced graph can hold."""

    def __init__(self, weights: dict, cell: Cell):
        super().__init__()
        self.cell = cell
        self.names = [list(p) for p in weights["layers"]]
        for l, p in enumerate(weights["layers"]):
            for name, value in p.items():
                self.register_buffer(f"layer{l}_{name}", value.detach().clone())
        self.register_buffer("W_hy", weights["W_hy"].detach().clone())
        self.register_buffer("b_y", weights["b_y"].detach().clone())

    def forward(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Logits (B, V) for characters ``x`` (B,) and the state after them, from ``state``."""
        layers = [{k: getattr(self, f"layer{l}_{k}") for k in names} for l, names in enumerate(self.names)]
        states = [tuple(s[l] for s in state) for l in range(len(layers))]
        recur = [plain_product(p["W_hh"]) for p in layers]
        a, _ = self.cell.input_share(x, layers[0], plain_window_product)  # (B, G*H)
        top = step_layers(a, states, layers, self.cell, recur, expectation(self.cell, self.W_hy))  # (B, H)
        logits = torch.addmm(self.b_y, top, self.W_hy)  # (B, V)
        return logits, tuple(torch.stack([s[k] for s in states]) for k in range(len(self.cell.STATE)))


def onnx_missing() -> str | None:
    """The first package of the ``export`` extra that cannot be imported, or None."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def require_onnx() -> None:
    """A CharRNNError naming the extra to install where a package the ONNX format needs is missing."""
    missing = onnx_missing()
    if missing is not None:
        raise CharRNNError(f"ONNX export needs the package {missing}, of the export extra: {ONNX_EXTRA}")


def save_onnx(path: Path, weights: dict, cell: Cell, vocab: str, unit: str) -> None:
    """Write the onnx format to ``path`` (see the module); the batch size is left free."""
    require_onnx()
    L, H = len(weights["layers"]), weights["W_hy"].shape[0]
    dtype = weights["W_hy"].dtype
    x = torch.zeros(2, dtype=torch.long)
    state = tuple(torch.zeros(L, 2, H, dtype=dtype) for _ in cell.STATE)
    batch = torch.export.Dim("batch")
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            OneStep(weights, cell).eval(),
            (x, state),
            input_names=["x", *cell.STATE],
            output_names=["logits", *(f"{name}_next" for name in cell.STATE)],
            dynamic_shapes=({0: batch}, tuple({1: batch} for _ in cell.STATE)),
            dynamo=True,
            verbose=False,
        )
    program.model.metadata_props.update(
        {
            "vocab": json.dumps(vocab),  # JSON: any character, a byte model's \x00 too
            "unit": unit,
            "cell": cell.NAME,
            "hidden_size": str(H),
            "num_layers": str(L),
            "state": json.dumps(list(cell.STATE)),
            "producer": "torch-charrnn",
        }
    )
    program.save(path)


@contextlib.contextmanager
def quiet_exporter():
    """torch.onnx's exporter without its warnings and log lines (packages it would also convert,
    its own deprecations): the export's outcome is checked, not its chatter."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


@torch.inference_mode()
def model_logits(weights: dict, cell: Cell, ids: Tensor) -> Tensor:
    """The model's own logits (N, V) for the symbols ``ids`` (N,), one stream, the state starting
    at zero: what an exported file must reproduce."""
    L, H = len(weights["layers"]), weights["W_hy"].shape[0]
    state = tuple(weights["W_hy"].new_zeros(L, 1, H) for _ in cell.STATE)
    top, _, _ = run_layers(ids[None], state, weights["layers"], cell)  # (N, 1, H)
    return torch.addmm(weights["b_y"], top[:, 0], weights["W_hy"])


def load_torch(path: Path) -> PlainCharRNN:
    """The torch format's model, read as a user with only torch would (evaluation mode)."""
    saved = torch.load(path, weights_only=True)
    model = PlainCharRNN(**saved["config"]).to(saved["state_dict"]["out.weight"].dtype)
    model.load_state_dict(saved["state_dict"])
    return model.eval()


@torch.inference_mode()
def torch_file_logits(path: Path, ids: Tensor) -> Tensor:
    """Logits (N, V) of the torch file at ``path`` for ``ids`` (N,), one call over the whole text."""
    logits, _ = load_torch(path)(ids[None])
    return logits[0]


def onnx_file_logits(path: Path, ids: Tensor) -> Tensor:
    """Logits (N, V) of the ONNX file at ``path`` for ``ids`` (N,), one step a symbol through
    onnxruntime, the state carried from the zeros."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    names, L, H = json.loads(meta["state"]), int(meta["num_layers"]), int(meta["hidden_size"])
    dtype = np.float64 if session.get_inputs()[1].type == "tensor(double)" else np.float32
    state = {name: np.zeros((L, 1, H), dtype) for name in names}
    rows = []
    for x in ids.tolist():
        logits, *after = session.run(None, {"x": np.array([x], np.int64), **state})
        state = dict(zip(names, after, strict=True))
        rows.append(logits[0])
    return torch.from_numpy(np.stack(rows))
