"""``charrnn score``: how well a model predicts whole text files, in bits per character, the state
carried from the first character to the last. Imports torch, not Lightning."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from torch_charrnn.cli.outputs import check_output, written
from torch_charrnn.cli.parser import Parser
from torch_charrnn.data.encoded import encode, encode_known
from torch_charrnn.errors import CharRNNError
from torch_charrnn.inference.checkpoint import checkpoint_weights, read_checkpoint
from torch_charrnn.inference.scoring import surprisal
from torch_charrnn.rnn.bptt import LN2


def build_parser() -> Parser:
    parser = Parser(
        prog="charrnn score",
        description="Bits per character of whole text files under a checkpoint: every character after "
        "the first is predicted from all the characters before it, the state starting at zero and "
        "carried through the whole file, as one stream. A byte model scores bytes, of any file.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="text files to score")
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by charrnn fit")
    parser.add_argument(
        "--unknown",
        choices=["error", "skip"],
        default="error",
        help="characters outside the model's vocabulary: an error that lists them (default), or left "
        "out of the text, and counted",
    )
    parser.add_argument("--encoding", default="utf-8", help="how to decode the files (default: utf-8)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file, for scripts")
    parser.add_argument(
        "--per_char",
        type=Path,
        metavar="PATH",
        help="write every character's surprisal in bits to PATH (tab-separated: file, position, "
        "character as a JSON string, bits)",
    )
    parser.add_argument("--device", default="cpu", help="torch device to score on (default: cpu)")
    return parser


def read_symbols(path: Path, vocab: str, unit: str, encoding: str, skip: bool) -> tuple[torch.Tensor, int]:
    """The file's symbols as indices in ``vocab``, and how many were left out as unknown."""
    if not path.is_file():
        raise CharRNNError(f"{path} does not exist or is not a file")
    if unit == "bytes":  # every byte is a symbol: read as it is, whatever the file holds
        text, unit = path.read_bytes().decode("latin-1"), "chars"
    else:
        try:
            text = path.read_text(encoding=encoding)
        except UnicodeDecodeError as err:
            raise CharRNNError(
                f"{path} is not valid {encoding} (byte {err.start}): pass its encoding with --encoding"
            ) from err
        except LookupError as err:
            raise CharRNNError(
                f"unknown encoding {encoding!r}: pass a Python codec name as --encoding"
            ) from err
    if skip:
        return encode_known(text, vocab, unit)
    try:
        return encode(text, vocab, unit), 0
    except CharRNNError as err:
        raise CharRNNError(
            f"{path} has {err}. Pass --unknown skip to score the rest of the text without them."
        ) from err


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.per_char is not None:  # before any work: never over what it reads, nor a checkpoint
        reads = [("--ckpt_path", args.ckpt_path), *(("FILE", path) for path in args.files)]
        check_output(args.per_char, "--per_char", reads, example="surprisal.tsv")
    if args.device == "cpu":
        torch.set_num_threads(1)  # one character at a time: threads only add synchronisation
    try:
        checkpoint = read_checkpoint(args.ckpt_path, args.device)
    except CharRNNError as err:
        parser.error(str(err))
    hparams = checkpoint["hyper_parameters"]
    vocab, unit = hparams["vocab"], hparams.get("unit", "chars")
    weights, cell = checkpoint_weights(checkpoint)
    symbol = "byte" if unit == "bytes" else "character"
    rows = []
    for path in args.files:  # every file is read and checked before any is scored
        ids, skipped = read_symbols(path, vocab, unit, args.encoding, args.unknown == "skip")
        if len(ids) < 2:
            raise CharRNNError(f"{path} has fewer than two {symbol}s left to score: nothing is predicted")
        rows.append((path, ids, skipped))
    with contextlib.ExitStack() as stack:
        per_char = None
        if args.per_char is not None:  # written beside its target, in place only when every file is scored
            per_char = stack.enter_context(
                open(stack.enter_context(written(args.per_char)), "w", encoding="utf-8")
            )
            per_char.write("file\tposition\tcharacter\tbits\n")
        for path, ids, skipped in rows:
            bits = surprisal(weights, cell, ids.to(args.device)).double().cpu() / LN2
            report(path, bits, skipped, symbol, args.json)
            if per_char:
                chars = [json.dumps(vocab[i]) for i in ids[1:].tolist()]
                lines = zip(range(1, len(ids)), chars, bits.tolist(), strict=True)
                per_char.writelines(f"{path}\t{k}\t{c}\t{b:.4f}\n" for k, c, b in lines)
    return 0


def report(path: Path, bits: torch.Tensor, skipped: int, symbol: str, as_json: bool) -> None:
    """One line for a file: symbols scored, bits and nats per symbol (and the unknown skipped)."""
    mean = bits.mean().item()
    if as_json:
        row = {
            "file": str(path),
            f"{symbol}s": len(bits),
            "bpc": mean,
            "nats": mean * LN2,
            "skipped": skipped,
        }
        print(json.dumps(row), flush=True)
        return
    extra = f", {skipped:,} unknown skipped" if skipped else ""
    print(
        f"{path}: {len(bits):,} {symbol}s, {mean:.4f} bits/{symbol}, {mean * LN2:.4f} nats/{symbol}{extra}",
        flush=True,
    )
