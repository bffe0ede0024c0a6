"""``charrnn export``: a checkpoint as a file that needs nothing of this package: PyTorch's own
modules (``--format torch``) or a one-step ONNX model (``--format onnx``). Each file is read back
as its user would read it and its logits checked against the checkpoint's before it is kept.
Imports torch, not Lightning."""

from __future__ import annotations

from pathlib import Path

import torch

from torch_charrnn.cli.outputs import check_output, written
from torch_charrnn.cli.parser import Parser
from torch_charrnn.errors import CharRNNError, RunError
from torch_charrnn.inference import portable
from torch_charrnn.inference.checkpoint import checkpoint_weights, read_checkpoint

FORMATS = {"torch": (".pt", ".pth"), "onnx": (".onnx",)}  # the suffixes that name each format
CHECK_SYMBOLS = 256  # symbols of the check text: every step of the recurrence, a few times over


def build_parser() -> Parser:
    parser = Parser(
        prog="charrnn export",
        description="Write a checkpoint's model as a file that needs nothing of torch-charrnn. torch: "
        "the vocabulary and the state dict of nn.RNN/nn.GRU/nn.LSTM + nn.Linear, read with "
        "torch.load(weights_only=True) into the ten-line module of torch_charrnn/inference/plain.py. onnx: "
        "one step (characters and the state in, logits and the next state out) with the vocabulary "
        "in its metadata, for any ONNX runtime; needs the export extra (" + portable.ONNX_EXTRA + "). "
        "The file is read back and its logits checked against the checkpoint's before it is kept.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="the file to write (.pt or .onnx)")
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by charrnn fit")
    parser.add_argument(
        "--format",
        choices=list(FORMATS),
        help="torch or onnx (default: from OUT's suffix, .pt/.pth or .onnx)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_output(args.out, "OUT", [("--ckpt_path", args.ckpt_path)], example="model.pt")  # before any work
    fmt = args.format or format_of(args.out)
    if fmt == "onnx":
        portable.require_onnx()  # before any work
    checkpoint = read_checkpoint(args.ckpt_path)
    hparams = checkpoint["hyper_parameters"]
    vocab, unit = hparams["vocab"], hparams.get("unit", "chars")
    weights, cell = checkpoint_weights(checkpoint)
    if fmt == "torch" and cell.FUSED is None:
        raise CharRNNError(
            f"the torch file is PyTorch's own module for the cell, and the {cell.NAME} cell has none (its "
            f"FUSED): export to ONNX instead, {args.out.with_suffix('.onnx')}"
        )
    if fmt == "torch" and cell.zoneout:
        raise CharRNNError(
            f"the torch file is PyTorch's own nn.{cell.FUSED}, which cannot hold this model's zoneout (its "
            f"expectation in every step): export to ONNX instead, {args.out.with_suffix('.onnx')}"
        )
    weights = portable.widened(weights)
    with torch.no_grad(), written(args.out) as part:
        save = portable.save_onnx if fmt == "onnx" else portable.save_torch
        save(part, weights, cell, vocab, unit)
        difference = check(part, fmt, weights, cell)
    H, L = weights["W_hy"].shape[0], len(weights["layers"])
    kind = f"nn.{cell.FUSED} + nn.Linear" if fmt == "torch" else "one step"
    symbols = "bytes" if unit == "bytes" else "characters"
    dtype = str(weights["W_hy"].dtype).removeprefix("torch.")
    print(
        f"wrote {args.out} ({fmt}: {kind}, {cell.NAME} {L} x {H}, {len(vocab)} {symbols}, {dtype}); "
        f"its logits are the checkpoint's within {difference:.1e} over {CHECK_SYMBOLS} symbols"
    )
    return 0


def format_of(out: Path) -> str:
    """The format OUT's suffix names, or an error asking for --format."""
    for fmt, suffixes in FORMATS.items():
        if out.suffix.lower() in suffixes:
            return fmt
    raise CharRNNError(f"{out} ends in neither .pt/.pth nor .onnx: pass --format torch or --format onnx")


def check(path: Path, fmt: str, weights: dict, cell) -> float:
    """The largest difference between the written file's logits and the model's over a text of
    random symbols, relative to the largest logit; a RunError where it is not within rounding."""
    V = weights["W_hy"].shape[1]
    ids = torch.randint(V, (CHECK_SYMBOLS,), generator=torch.Generator().manual_seed(0))
    want = portable.model_logits(weights, cell, ids)
    got = (portable.onnx_file_logits if fmt == "onnx" else portable.torch_file_logits)(path, ids)
    difference = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
    tolerance = 1e-4 if want.dtype == torch.float32 else 1e-10  # rounding's, many times over
    if not difference <= tolerance:
        raise RunError(
            f"the exported {fmt} file's logits differ from the checkpoint's by {difference:.1e} "
            f"(relative; at most {tolerance:.0e} expected): nothing was written. Please report this "
            f"with the checkpoint's cell, layers and PyTorch {torch.__version__}."
        )
    return difference
