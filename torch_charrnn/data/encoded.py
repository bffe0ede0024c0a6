"""A corpus as symbol indices: encoded once, in chunks, without per-character Python, into the
smallest integer type that holds its vocabulary, and cached on disk to be memory-mapped by every
process and every later run.

A symbol is a character (``unit="chars"``: a Unicode code point after decoding) or a byte
(``unit="bytes"``: the file as it is, as the published enwik8 results model it). A byte vocabulary
is kept as the characters with those code points (latin-1), so a vocabulary is always a string.

The cache (``$CHARRNN_CACHE/encoded``) holds ``<key>.bin`` (the indices) and ``<key>.json`` (the
vocabulary and the length). The key covers everything that changes the indices: the file (its
resolved path, size and modification time), the encoding, the unit, ``max_chars`` and this
module's format, so a changed corpus or option never reuses a stale cache. Both files are written
beside their final names and renamed into place, the index file first, so a reader sees a whole
cache or none.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from torch_charrnn.data.corpus import cache_dir, cache_folder_error, usable_folder
from torch_charrnn.errors import CharRNNError, CorpusError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the cache's layout or the encoding rules change
CHUNK = 1 << 24  # bytes read and encoded at a time (16 MiB): bounds the memory of preparation
UNITS = {"chars": 0x110000, "bytes": 256}  # each unit's alphabet: how many distinct symbols there can be
PROGRESS_FROM = 64 << 20  # a progress bar for files of this size and more (bytes)
DTYPES = ((256, np.uint8, torch.uint8), (2**15, np.int16, torch.int16), (2**31, np.int32, torch.int32))


@dataclass
class Encoded:
    """A corpus as indices into its vocabulary: ``data`` (N,) in a small integer type, possibly
    memory-mapped from the cache (read-only: widen a window with ``.long()`` before use)."""

    data: Tensor
    vocab: str
    unit: str = "chars"

    def __len__(self) -> int:
        return len(self.data)

    def decode(self, start: int = 0, stop: int | None = None) -> str:
        """The symbols ``start:stop`` as text (bytes decoded as UTF-8, errors replaced)."""
        return decode(self.data[start:stop], self.vocab, self.unit)


def smallest_dtype(vocab_size: int) -> tuple[np.dtype, torch.dtype]:
    """The smallest integer type (NumPy's and torch's) that holds indices below ``vocab_size``."""
    return next((np_t, torch_t) for limit, np_t, torch_t in DTYPES if vocab_size <= limit)


def symbols_of(text: str, unit: str = "chars") -> np.ndarray:
    """The symbols of ``text`` without a Python loop: its code points (uint32), or for a byte model
    its UTF-8 bytes (uint8). A byte vocabulary's characters are its bytes' code points."""
    if unit == "bytes":
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def text_of(symbols: np.ndarray, unit: str = "chars") -> str:
    """Symbols back to text (a byte model's bytes decoded as UTF-8, errors replaced)."""
    if unit == "bytes":
        return symbols.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
    return symbols.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")


def encode_text(text: str, unit: str = "chars", max_chars: int | None = None) -> Encoded:
    """An in-memory string (its first ``max_chars`` symbols), encoded: the built-in corpus,
    ``CharDataModule(text=...)``."""
    check_unit(unit)
    symbols = symbols_of(text, unit)[:max_chars]
    vocab_ids, table = index_table(np.bincount(symbols, minlength=UNITS[unit]))
    return Encoded(torch.from_numpy(table[symbols]), vocab_string(vocab_ids), unit)


def index_table(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From each symbol's count: the vocabulary (the symbols that occur, in order) and a lookup
    table from symbol to index, in the smallest integer type that holds them."""
    vocab_ids = np.flatnonzero(counts)
    np_t, _ = smallest_dtype(len(vocab_ids))
    table = np.zeros(len(counts), dtype=np_t)
    table[vocab_ids] = np.arange(len(vocab_ids), dtype=np_t)
    return vocab_ids, table


def vocab_string(ids: np.ndarray) -> str:
    """Code points (or byte values) as the vocabulary string, in index order."""
    return "".join(map(chr, ids.tolist()))


def check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise CharRNNError(f"`unit` must be one of {', '.join(UNITS)}, got {unit!r}")


def encode(text: str, vocab: str, unit: str = "chars") -> Tensor:
    """Indices (N,) of ``text``'s symbols in ``vocab`` (for a byte model, of its UTF-8 bytes);
    characters outside the vocabulary are listed in the error."""
    out, symbols = _lookup(text, vocab, unit)
    if (out < 0).any():
        unknown = sorted(map(chr, np.unique(symbols[out < 0]).tolist()))
        raise CharRNNError(f"characters not in the model's vocabulary: {unknown}")
    return torch.from_numpy(out)


def encode_known(text: str, vocab: str, unit: str = "chars") -> tuple[Tensor, int]:
    """Indices of ``text``'s symbols that are in ``vocab``, and how many were not (left out)."""
    out, _ = _lookup(text, vocab, unit)
    known = out[out >= 0]
    return torch.from_numpy(known), len(out) - len(known)


def _lookup(text: str, vocab: str, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Each symbol of ``text``'s index in ``vocab`` (-1 where it has none), and the symbols."""
    ids, symbols = symbols_of(vocab), symbols_of(text, unit)
    table = np.full(int(max(ids.max(initial=0), symbols.max(initial=0))) + 1, -1, dtype=np.int64)
    table[ids] = np.arange(len(ids))
    return table[symbols], symbols


def symbol_bytes(indices: Tensor, vocab: str) -> bytes:
    """A byte model's indices as the bytes they stand for."""
    return symbols_of(vocab)[indices.cpu().numpy()].astype(np.uint8).tobytes()


def decode(indices: Tensor, vocab: str, unit: str = "chars") -> str:
    """Indices back to text, without a Python loop; a byte model's bytes are decoded as UTF-8,
    errors replaced."""
    return text_of(symbols_of(vocab)[indices.cpu().numpy()], unit)


def cache_key(path: Path, encoding: str, unit: str, max_chars: int | None) -> str:
    stat = path.stat()
    ident = [FORMAT, str(path.resolve()), stat.st_size, stat.st_mtime_ns, encoding, unit, max_chars]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]


def _chunks(path: Path, encoding: str, unit: str, max_chars: int | None, progress=None):
    """The file's symbols (code points or bytes) chunk by chunk, at most ``max_chars`` in all."""
    decoder = _decoder(unit, encoding)
    done, size = 0, path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while max_chars is None or done < max_chars:
            raw = f.read(CHUNK)
            last = f.tell() >= size
            if decoder is None:
                symbols = np.frombuffer(raw, dtype=np.uint8)
            else:
                pending = decoder.getstate()[0]
                try:
                    symbols = symbols_of(decoder.decode(raw, final=last))
                except UnicodeDecodeError as err:
                    at, byte = offset - len(pending) + err.start, (pending + raw)[err.start]
                    raise CorpusError(
                        f"{path} is not valid {encoding}: byte {at} (0x{byte:02x}) cannot be decoded. Pass "
                        "its encoding as `encoding` (for example latin-1 or cp1252), or model it as bytes "
                        "with `unit` bytes."
                    ) from err
            if max_chars is not None:
                symbols = symbols[: max_chars - done]
            done += len(symbols)
            offset += len(raw)
            if progress is not None:
                progress(len(raw))
            if len(symbols):
                yield symbols
            if last:
                return


def _decoder(unit: str, encoding: str):
    """An incremental decoder for a file of characters; None for a byte model (bytes are symbols)."""
    if unit == "bytes":
        return None
    try:
        return codecs.getincrementaldecoder(encoding)()
    except LookupError as err:
        raise CorpusError(f"unknown encoding {encoding!r}: pass a Python codec name as `encoding`") from err


def prepare(
    path: Path,
    encoding: str = "utf-8",
    unit: str = "chars",
    max_chars: int | None = None,
    directory: Path | None = None,
    verbose: bool = True,
) -> Path:
    """Encode the text file ``path`` into the cache unless an up-to-date cache is there; returns
    the cache's ``.json``. Two passes over the file in chunks: the vocabulary and length first
    (and a check that the disk has room), then the indices."""
    check_unit(unit)
    _decoder(unit, encoding)  # an unknown encoding is an error before anything is read
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(
            f"corpus file {path} does not exist. Pass `corpus` builtin, tinyshakespeare, enwik8, text8, "
            "or the path of a text file."
        )
    directory = Path(directory or cache_dir()) / "encoded"
    key = cache_key(path, encoding, unit, max_chars)
    meta_path, bin_path = directory / f"{key}.json", directory / f"{key}.bin"
    problem = damage(meta_path, bin_path)
    if problem is None:
        return meta_path
    if problem != MISSING:  # anything outside a run may have damaged it: a disk, a copy, a user
        log.warning(f"charrnn: the encoded cache {bin_path} {problem}; rebuilding it from {path}")
    usable_folder(directory)
    _remove_abandoned(directory, key)
    size = path.stat().st_size
    bar = _progress(path, 2 * size if max_chars is None else None, verbose and size >= PROGRESS_FROM)
    counts, n = np.zeros(UNITS[unit], dtype=np.int64), 0
    step = None if bar is None else bar.update
    for symbols in _chunks(path, encoding, unit, max_chars, step):
        counts += np.bincount(symbols, minlength=len(counts))[: len(counts)]
        n += len(symbols)
    vocab_ids, table = index_table(counts)
    need, free = n * table.itemsize, shutil.disk_usage(directory).free
    if need + (64 << 20) > free:
        raise CorpusError(
            f"the encoded corpus needs {need / 2**20:,.0f} MiB in {directory} but only "
            f"{free / 2**20:,.0f} MiB are free; nothing was written. Free some space or point "
            "$CHARRNN_CACHE at a larger disk."
        )
    tmp = bin_path.with_name(f"{bin_path.name}.tmp-{os.getpid()}")
    try:
        out = _create(tmp)
        with out:
            for symbols in _chunks(path, encoding, unit, max_chars, step):
                table[symbols].tofile(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, bin_path)
        meta = {
            "format": FORMAT,
            "source": str(path.resolve()),
            "encoding": encoding,
            "unit": unit,
            "max_chars": max_chars,
            "length": n,
            "dtype": table.dtype.name,
            "vocab": vocab_string(vocab_ids),
        }
        tmp_meta = meta_path.with_name(f"{meta_path.name}.tmp-{os.getpid()}")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, meta_path)
    finally:
        tmp.unlink(missing_ok=True)
        if bar is not None:
            bar.close()
    return meta_path


def _remove_abandoned(directory: Path, key: str, quiet_for: float = 60.0) -> None:
    """Delete what a killed preparation of ``key`` left (``<key>.bin.tmp-<pid>``, as big as the
    index): files whose process is gone and that nothing has written to for ``quiet_for`` seconds
    (a live preparation writes every chunk; the pid alone cannot tell for a cache another machine
    shares)."""
    for tmp in directory.glob(f"{key}.*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            idle = time.time() - tmp.stat().st_mtime
        except (ValueError, FileNotFoundError):
            continue
        if idle > quiet_for and not _running(pid):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as someone else
        pass
    return True


MISSING = "is missing"


def damage(meta_path: Path, bin_path: Path) -> str | None:
    """What is wrong with a cache: ``MISSING``, or how its contents do not fit its metadata (which
    does not parse, names another format, or promises another size, index type or indices); None
    for a whole one. Reads every index once, except where the index type cannot hold a wrong one."""
    try:
        meta = json.loads(meta_path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    except (OSError, ValueError):
        return "has metadata that does not parse"
    try:
        length, vocab, dtype = int(meta["length"]), str(meta["vocab"]), np.dtype(meta["dtype"])
        if meta["format"] != FORMAT or meta["unit"] not in UNITS or length < 0 or not vocab:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        return "has metadata that does not parse"
    want = np.dtype(smallest_dtype(len(vocab))[0])
    if dtype != want:
        return f"is stored as {dtype.name}, not the {want.name} its vocabulary takes"
    try:
        size = bin_path.stat().st_size
    except OSError:
        return "has lost its index file"
    if size != length * dtype.itemsize:
        return f"holds {size:,} bytes where its metadata says {length * dtype.itemsize:,}"
    if length and len(vocab) < np.iinfo(dtype).max + 1:  # else no value of the type is out of range
        # read, not mapped: a mapping would count every page of the file in the run's resident set
        buffer = np.empty(CHUNK // dtype.itemsize, dtype=dtype)
        with open(bin_path, "rb") as f:
            while n := f.readinto(buffer) // dtype.itemsize:
                chunk = buffer[:n]
                if chunk.max() >= len(vocab) or (dtype.kind == "i" and chunk.min() < 0):
                    return f"holds indices beyond its vocabulary of {len(vocab)} symbols"
    return None


def _create(path: Path):
    """``path`` opened for writing, or one line about the cache folder."""
    try:
        return open(path, "wb")  # noqa: SIM115  (closed by the caller's with)
    except OSError as err:
        raise cache_folder_error(path.parent, err) from err


def load(meta_path: Path) -> Encoded:
    """A prepared cache, memory-mapped: pages are read as windows need them and shared by every
    process on the machine."""
    meta = json.loads(Path(meta_path).read_text())
    bin_path = Path(meta_path).with_suffix(".bin")
    dtype = getattr(torch, meta["dtype"])  # uint8, int16 or int32: the names are NumPy's and torch's
    data = torch.from_file(str(bin_path), shared=False, size=meta["length"], dtype=dtype)
    return Encoded(data, meta["vocab"], meta["unit"])


def _progress(path: Path, total: int | None, verbose: bool):
    """A progress bar on stderr (two passes over the file) while a corpus is encoded."""
    if not verbose:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        mininterval=1.0,
        desc=f"charrnn: encoding {path.name} (once; cached)",
    )
