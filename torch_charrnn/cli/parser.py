"""The parser of the subcommands that are not LightningCLI's (``sample``, ``score``, ``export``,
``gradcheck``): argparse, with a bad flag or value as one ``charrnn: error:`` line (exit code 2) that
names the subcommand's help, as ``charrnn fit``'s are (``cli/fit.py``)."""

from __future__ import annotations

import argparse

from torch_charrnn.errors import CharRNNError


def refusal(message: str, command: str) -> CharRNNError:
    """A bad flag or value of ``command`` (``charrnn sample``) as the error ``charrnn`` prints in one
    line, pointing at the command's help."""
    return CharRNNError(f"{message} ({command} --help lists the options)")


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are CharRNNErrors: ``charrnn`` prints them as one line."""

    def error(self, message: str):
        raise refusal(message, self.prog)
