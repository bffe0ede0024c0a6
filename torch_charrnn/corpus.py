"""Corpora as text, and text as indices: the built-in corpus, downloads, decoding, the vocabulary.

Option names in messages are written in backticks (`encoding`); the ``charrnn`` command turns
them into its flags (``--data.encoding``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from torch_charrnn.errors import CharRNNError, CorpusError

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


def builtin_text() -> str:
    """The Python documentation topics that ship with every CPython: no download needed."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def fetch_tinyshakespeare(url: str = TINYSHAKESPEARE_URL, directory: Path | None = None) -> Path:
    """Download tinyshakespeare once (sha256-verified) into the cache and return its path."""
    return fetch(url, TINYSHAKESPEARE_SHA256, TINYSHAKESPEARE_FILE, directory)


def fetch(url: str, sha256: str, fname: str, directory: Path | None = None) -> Path:
    """Download ``url`` to ``directory/fname`` unless a file with that sha256 is already there."""
    import pooch
    import requests

    directory = Path(directory or cache_dir())
    try:
        return Path(
            pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=fname, path=directory, progressbar=False)
        )
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


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Decode a text file; a decoding error names the byte offset and the option to change."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(
            f"corpus file {path} does not exist. Pass `corpus` builtin, tinyshakespeare, "
            "or the path of a text file."
        )
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"{path} is not valid {encoding}: byte {err.start} (0x{data[err.start]:02x}) cannot be decoded. "
            "Pass its encoding as `encoding` (for example latin-1 or cp1252)."
        ) from err
    except LookupError as err:
        raise CorpusError(f"unknown encoding {encoding!r}: pass a Python codec name as `encoding`") from err


def load_corpus(corpus: str, encoding: str = "utf-8") -> str:
    """The text of ``corpus``: ``builtin``, ``tinyshakespeare`` (downloaded once), or a file path."""
    if corpus == BUILTIN:
        return builtin_text()
    if corpus == TINYSHAKESPEARE:
        return read_text(fetch_tinyshakespeare(), "utf-8")  # a no-op download once cached
    return read_text(Path(corpus), encoding)


def build_vocab(text: str) -> str:
    """The sorted distinct characters of ``text``: the same in every process, unlike set() order."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> Tensor:
    """Indices (len(text),) of ``text`` in ``vocab``; characters outside it are listed in the error."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return torch.tensor([index[c] for c in text], dtype=torch.long)
    except KeyError:
        unknown = sorted({c for c in text if c not in index})
        raise CharRNNError(f"characters not in the model's vocabulary: {unknown}") from None
