"""The tutorial's experiment, fixed: ``python -m reference_numpy PATH``.

Reads the first 20,000 characters of PATH, trains ``RecurrentNN`` with the tutorial's settings
(H=75, T=20, clip 5, lr 1e-2, W_hh = 0.01 I), prints the smoothed loss per epoch and a sample.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from reference_numpy.train import build_vocab
from reference_numpy.tutorial import RecurrentNN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reference_numpy", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a UTF-8 text file to train on")
    parser.add_argument("--max-chars", type=int, default=20_000, help="characters to keep (default: 20000)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=75)
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        text = args.path.read_text(encoding="utf-8")[: args.max_chars]
    except (OSError, UnicodeDecodeError) as err:
        parser.error(f"cannot read {args.path} as UTF-8 text: {err}")
    if len(text) <= args.seq_len:
        parser.error(f"{args.path} has {len(text)} characters; at least {args.seq_len + 1} are needed")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    vocab = build_vocab(text)
    model = RecurrentNN(
        char_to_idx={c: i for i, c in enumerate(vocab)},
        idx_to_char=dict(enumerate(vocab)),
        vocab=len(vocab),
        h_size=args.hidden,
        seq_len=args.seq_len,
        epochs=args.epochs,
        learning_rate=args.lr,
        seed=args.seed,
    )
    losses, _ = model.train(text)
    print(f"first smoothed loss {losses[0]:.4f}, last {losses[-1]:.4f} (nats/char)")
    print(model.test(200, model.char_to_idx.get("\n", 0)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
