"""The ``charrnn`` command: hands each subcommand to its own module and turns a CharRNNError into
one ``charrnn: error:`` line. Imports nothing heavy itself, so ``charrnn sample`` and
``charrnn --help`` never load Lightning."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shlex
import signal
import sys

from torch_charrnn.cli.usage import COMMANDS, USAGE
from torch_charrnn.errors import CharRNNError, Interrupted, RunError

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
        if words[0] not in COMMANDS:
            raise CharRNNError(f"no subcommand {words[0]!r}: one of {', '.join(COMMANDS)} (charrnn --help)")
        if words[0] in OWN_PARSERS:  # imported only when named: none of them loads Lightning
            return importlib.import_module(f"torch_charrnn.cli.{words[0]}").main(words[1:])
        from torch_charrnn.cli.fit import cli_main

        cli_main(argv)
    except CharRNNError as err:
        print(f"charrnn: error: {err}", file=sys.stderr)
        code = 1 if isinstance(err, RunError) else 2
        return code + SAID if os.environ.get("CHARRNN_SUPERVISED") == "1" else code
    except Interrupted as stop:  # training asked to stop: its last.ckpt holds the step it reached
        for s in (signal.SIGINT, signal.SIGTERM):  # Lightning put its handlers back: a second one ends it
            signal.signal(s, signal.SIG_DFL)
        if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":
            again = ["charrnn", *(w for i, w in enumerate(words) if not is_ckpt_path(words, i))]
            name = signal.Signals(stop.signum).name
            print(
                f"charrnn: {name}: {stop}: resume with {shlex.join([*again, '--ckpt_path', 'last'])}",
                file=sys.stderr,
            )
        return stop.code
    except BrokenPipeError:  # the reader of stdout went away (`| head`): end as the shell expects
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:  # Ctrl-C: what was written so far stays, no traceback
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second one, while Python exits, ends it at once
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()
        return 128 + signal.SIGINT
    return 0


def is_ckpt_path(words: list[str], i: int) -> bool:
    """Whether words[i] is a --ckpt_path option or its value."""
    word = words[i]
    return (
        word.startswith("--ckpt_path=") or word == "--ckpt_path" or (i > 0 and words[i - 1] == "--ckpt_path")
    )


def say_library_warnings() -> None:
    """The package's warnings (a damaged cache rebuilt) as one line each on stderr, as they are."""
    log = logging.getLogger("torch_charrnn")
    log.handlers = [h for h in log.handlers if not getattr(h, "charrnn", False)]  # stderr may have changed
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.charrnn = True
    log.addHandler(handler)
