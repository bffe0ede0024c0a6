"""The ``charrnn`` command: hands each subcommand to its own module and turns a CharRNNError into
one ``charrnn: error:`` line. Imports nothing heavy itself, so ``charrnn sample`` and
``charrnn --help`` never load Lightning."""

from __future__ import annotations

import importlib
import logging
import os
import sys

from torch_charrnn.cli.usage import USAGE
from torch_charrnn.errors import CharRNNError, RunError

SAID = 8  # added to the exit code of a rank (cli/launch.py) whose error line already said why
OWN_PARSERS = ("sample", "score", "export", "gradcheck")  # the subcommands that are not LightningCLI's


def main(argv: list[str] | None = None) -> int:
    """The ``charrnn`` console script; ``argv`` defaults to the command line.

    Exit codes: 0 done, 2 bad input (nothing written), 1 a run that started and could not go on.
    """
    words = sys.argv[1:] if argv is None else argv
    say_library_warnings()
    try:
        if not words or words[0] in ("-h", "--help"):
            print(USAGE, end="")
            return 0
        if words[0] in OWN_PARSERS:  # imported only when named: none of them loads Lightning
            return importlib.import_module(f"torch_charrnn.cli.{words[0]}").main(words[1:])
        from torch_charrnn.cli.fit import cli_main

        cli_main(argv)
    except CharRNNError as err:
        print(f"charrnn: error: {err}", file=sys.stderr)
        code = 1 if isinstance(err, RunError) else 2
        return code + SAID if os.environ.get("CHARRNN_SUPERVISED") == "1" else code
    return 0


def say_library_warnings() -> None:
    """The package's warnings (a damaged cache rebuilt) as one line each on stderr, as they are."""
    log = logging.getLogger("torch_charrnn")
    log.handlers = [h for h in log.handlers if not getattr(h, "charrnn", False)]  # stderr may have changed
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.charrnn = True
    log.addHandler(handler)
