"""``charrnn sample``: text from a checkpoint, streamed to stdout. Imports torch, not Lightning."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from torch_charrnn.cli.parser import Parser
from torch_charrnn.data.encoded import encode
from torch_charrnn.errors import CharRNNError
from torch_charrnn.inference.checkpoint import checkpoint_weights, read_checkpoint
from torch_charrnn.inference.sampling import sample_chunks


def build_parser() -> Parser:
    parser = Parser(
        prog="charrnn sample",
        description="Generate text from a checkpoint, streamed to stdout as it is generated. The hidden "
        "state is warmed up on --prime; without one, generation starts after a newline (or after the "
        "first character of the vocabulary if it has no newline). The vocabulary comes from the "
        "checkpoint: no corpus is needed.",
    )
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by charrnn fit")
    parser.add_argument("--prime", default="", help="text to start from (printed first)")
    parser.add_argument("--length", type=int, default=500, help="characters to generate (default: 500)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="softmax temperature; 0 is greedy (default: 1.0)"
    )
    parser.add_argument(
        "--top_k", type=int, default=None, help="sample only among the k most likely characters"
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same text (default: 0)")
    parser.add_argument("--num_samples", type=int, default=1, help="samples to generate, one after another")
    parser.add_argument("--device", default="cpu", help="torch device to sample on (default: cpu)")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.length < 0:
        parser.error(f"--length must be 0 or more, got {args.length}")
    if args.temperature < 0:
        parser.error(f"--temperature must be 0 (greedy) or more, got {args.temperature}")
    if args.num_samples < 1:
        parser.error(f"--num_samples must be at least 1, got {args.num_samples}")
    if args.device == "cpu":
        torch.set_num_threads(1)  # one character at a time: threads only add synchronisation (measured)
    try:
        checkpoint = read_checkpoint(args.ckpt_path, args.device)
    except CharRNNError as err:
        parser.error(str(err))
    vocab = checkpoint["hyper_parameters"]["vocab"]
    if args.top_k is not None and not 1 <= args.top_k <= len(vocab):
        parser.error(f"--top_k must be between 1 and the vocabulary size {len(vocab)}, got {args.top_k}")
    unit = checkpoint["hyper_parameters"].get("unit", "chars")  # "bytes": a byte model, UTF-8 text
    try:
        encode(args.prime, vocab, unit)
    except CharRNNError as err:
        parser.error(f"--prime has {err}")
    weights, cell = checkpoint_weights(checkpoint)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    out = sys.stdout
    for i in range(args.num_samples):
        if args.num_samples > 1:
            out.write(f"--- sample {i + 1} of {args.num_samples} ---\n")
        out.write(args.prime)
        for chunk in sample_chunks(
            weights, cell, vocab, args.length, args.prime, args.temperature, args.top_k, generator, unit=unit
        ):
            out.write(chunk[0])
            out.flush()
        out.write("\n")
    return 0
