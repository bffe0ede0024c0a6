"""Corpora: the built-in text, the downloads (tinyshakespeare, enwik8, text8), the cache folder.
Text as indices is ``torch_charrnn.data.encoded``.

Option names in messages are written in backticks (`encoding`); the ``charrnn`` command turns
them into its flags (``--data.encoding``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch_charrnn.errors import CorpusError

BUILTIN = "builtin"
TINYSHAKESPEARE = "tinyshakespeare"
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_FILE = "tinyshakespeare.txt"


def cache_dir() -> Path:
    """Where downloaded corpora live: $CHARRNN_CACHE, else the user's cache folder."""
    import pooch

    return Path(os.environ.get("CHARRNN_CACHE") or pooch.os_cache("torch-charrnn"))


def usable_folder(directory: Path) -> None:
    """Make the cache folder, or one line naming $CHARRNN_CACHE and the fix."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cache_folder_error(directory, err) from err


def cache_folder_error(directory: Path, err: OSError) -> CorpusError:
    where = os.environ.get("CHARRNN_CACHE")
    setting = f"$CHARRNN_CACHE is {where}" if where else "$CHARRNN_CACHE is not set (the default folder)"
    return CorpusError(
        f"the cache folder {directory} cannot be used ({err.strerror or err}); {setting}. Point "
        "$CHARRNN_CACHE at a folder this user can write, on a disk that is not read-only."
    )


def builtin_text() -> str:
    """The Python documentation topics that ship with every CPython: no download needed."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def fetch_tinyshakespeare(url: str = TINYSHAKESPEARE_URL, directory: Path | None = None) -> Path:
    """Download tinyshakespeare once (sha256-verified) into the cache and return its path."""
    return fetch(url, TINYSHAKESPEARE_SHA256, TINYSHAKESPEARE_FILE, directory)


@dataclass(frozen=True)
class Archive:
    """A corpus published as a zip of one file (Matt Mahoney's enwik8 and text8)."""

    url: str
    sha256: str  # of the zip
    member: str  # the file inside it
    unit: str  # how the literature models it: "bytes" (enwik8) or "chars"


# The standard character-level benchmarks: 10^8 symbols each, split 90M / 5M / 5M (the default
# fractions 0.05 / 0.05 give exactly that split).
ARCHIVES = {
    "enwik8": Archive(
        "http://mattmahoney.net/dc/enwik8.zip",
        "547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
        "enwik8",
        "bytes",
    ),
    "text8": Archive(
        "http://mattmahoney.net/dc/text8.zip",
        "a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
        "text8",
        "chars",
    ),
}


def fetch_archive(name: str, directory: Path | None = None) -> Path:
    """Download ``ARCHIVES[name]`` once (the zip sha256-verified), unzip it beside, return the file."""
    import pooch

    archive = ARCHIVES[name]
    unzip = pooch.Unzip(members=[archive.member], extract_dir=f"{name}.unzipped")
    paths = fetch(archive.url, archive.sha256, f"{name}.zip", directory, processor=unzip)
    return Path(paths[0])


def corpus_path(corpus: str) -> Path:
    """The file behind ``corpus`` (downloaded once for a named one); the built-in text has none."""
    if corpus == TINYSHAKESPEARE:
        return fetch_tinyshakespeare()
    if corpus in ARCHIVES:
        return fetch_archive(corpus)
    return Path(corpus).expanduser()


def fetch(url: str, sha256: str, fname: str, directory: Path | None = None, processor=None):
    """Download ``url`` to ``directory/fname`` unless a file with that sha256 is already there;
    returns its path (or what ``processor``, a pooch processor such as Unzip, returns)."""
    import pooch
    import requests

    directory = Path(directory or cache_dir())
    usable_folder(directory)
    try:
        got = pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=fname,
            path=directory,
            processor=processor,
            progressbar=_show_progress(),
        )
        return got if processor is not None else Path(got)
    except (requests.RequestException, OSError) as err:
        raise CorpusError(
            f"could not download {url} ({err}). With no network, download that file by hand on another "
            f"machine and put it at {directory / fname} (or set $CHARRNN_CACHE to the folder that holds "
            "it), or pass the path of any text file as `corpus`."
        ) from err
    except ValueError as err:  # pooch's hash mismatch
        raise CorpusError(
            f"the file downloaded from {url} is not the expected one: {err} Nothing was cached; put the "
            f"right file at {directory / fname} or pass the path of a text file as `corpus`."
        ) from err


def _show_progress() -> bool:
    """pooch's download bar, on an interactive terminal only (tqdm is installed with Lightning)."""
    import sys

    return sys.stderr.isatty()
