"""Corpora, the vocabulary, and SPEC.md's stream/window batching as a LightningDataModule.

A split is cut into B contiguous streams of equal length; window k of every stream gives inputs
``s[kT:(k+1)T]`` and targets ``s[kT+1:(k+1)T+1]``, so the hidden state carried from window k to
window k+1 of a stream continues the same text. Under DDP with W processes the B*W global
streams are split so that process r keeps streams r*B .. (r+1)*B - 1, in order.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from torch_charrnn.errors import CorpusError, require

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
            "it), or pass the path of any text file as --data.corpus."
        ) from err
    except ValueError as err:  # pooch's hash mismatch
        raise CorpusError(
            f"the file downloaded from {url} is not the expected one: {err} Nothing was cached; put the "
            f"right file at {directory / fname} or pass the path of a text file as --data.corpus."
        ) from err


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Decode a text file; a decoding error names the byte offset and the option to change."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(
            f"corpus file {path} does not exist. Pass --data.corpus builtin, tinyshakespeare, "
            "or the path of a text file."
        )
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise CorpusError(
            f"{path} is not valid {encoding}: byte {err.start} (0x{data[err.start]:02x}) cannot be decoded. "
            "Pass its encoding with --data.encoding (for example latin-1 or cp1252)."
        ) from err
    except LookupError as err:
        raise CorpusError(
            f"unknown encoding {encoding!r}: pass a Python codec name as --data.encoding"
        ) from err


def build_vocab(text: str) -> str:
    """The sorted distinct characters of ``text``: the same in every process, unlike set() order."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> Tensor:
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def make_streams(data: Tensor, batch_size: int) -> Tensor:
    """Cut ``data`` into ``batch_size`` contiguous streams of equal length, (B, L)."""
    length = len(data) // batch_size
    return data[: batch_size * length].view(batch_size, length)


class StreamWindows(IterableDataset):
    """The windows of B parallel streams, in order: item k is (inputs, targets), each (B, T).

    ``start`` makes the next iteration begin at that window (a run resumed mid-epoch); the
    iteration after it starts from window 0 again.
    """

    def __init__(self, streams: Tensor, seq_len: int):
        self.streams = streams
        self.seq_len = seq_len
        self.start = 0

    def __len__(self) -> int:
        return max(0, (self.streams.shape[1] - 1) // self.seq_len)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        T = self.seq_len
        return self.streams[:, k * T : (k + 1) * T], self.streams[:, k * T + 1 : (k + 1) * T + 1]

    def __iter__(self):
        start, self.start = self.start, 0
        return (self[k] for k in range(start, len(self)))


class ResumableLoader(DataLoader):
    """A DataLoader over StreamWindows that Lightning can checkpoint and resume mid-epoch.

    Its state is the number of windows of the current epoch that training has finished, read
    from the trainer's own progress counter: the loader itself runs a window ahead of training
    (Lightning prefetches one batch), so counting what it has yielded would skip a window.
    """

    def __init__(self, windows: StreamWindows, progress, **kwargs):
        super().__init__(windows, batch_size=None, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict:
        return {"windows_done": int(self._progress())}

    def load_state_dict(self, state: dict) -> None:
        done = state["windows_done"]
        self.dataset.start = done if done < len(self.dataset) else 0  # saved at an epoch's end: a new one


class CharDataModule(L.LightningDataModule):
    """Character streams from a corpus, split contiguously into train, validation and test.

    Args:
        corpus: ``builtin`` (Python's own documentation text, no download), ``tinyshakespeare``
            (downloaded once and verified), or the path of a text file.
        batch_size: streams per process (B).
        seq_len: window length for truncated BPTT (T).
        val_fraction: share of the corpus for validation, taken after the training text.
        test_fraction: share of the corpus for test, taken last.
        encoding: how to decode a corpus file.
        max_chars: keep only the first ``max_chars`` characters of the corpus.
        eval_batch_size: streams for validation and test (default: ``batch_size``).
        text: use this string as the corpus instead (for tests and notebooks).
    """

    def __init__(
        self,
        corpus: str = BUILTIN,
        batch_size: int = 64,
        seq_len: int = 100,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        encoding: str = "utf-8",
        max_chars: int | None = None,
        eval_batch_size: int | None = None,
        text: str | None = None,
    ):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            require(value >= 1, f"--data.{name} must be a positive integer, got {value}")
        require(
            eval_batch_size is None or eval_batch_size >= 1,
            "--data.eval_batch_size must be a positive integer (or null for batch_size), "
            f"got {eval_batch_size}",
        )
        require(
            max_chars is None or max_chars >= 1,
            f"--data.max_chars must be positive (or null), got {max_chars}",
        )
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            require(0 <= value < 1, f"--data.{name} must be in [0, 1), got {value} (0 turns that split off)")
        require(
            val_fraction + test_fraction < 1,
            f"--data.val_fraction + --data.test_fraction = {val_fraction + test_fraction} leaves no "
            "training text; "
            "their sum must be below 1",
        )
        self.save_hyperparameters(ignore=["text"])
        self.corpus = corpus
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.encoding = encoding
        self.max_chars = max_chars
        self.eval_batch_size = eval_batch_size or batch_size
        self._text = None
        if text is not None:
            self._text = text[:max_chars] if max_chars is not None else text
            self._check(self._text)
        self._vocab: str | None = None
        self.splits: dict[str, StreamWindows] = {}

    def prepare_data(self) -> None:
        if self._text is None and self.corpus == TINYSHAKESPEARE:
            fetch_tinyshakespeare()

    @property
    def text(self) -> str:
        if self._text is None:
            if self.corpus == BUILTIN:
                text = builtin_text()
            elif self.corpus == TINYSHAKESPEARE:
                text = read_text(fetch_tinyshakespeare(), "utf-8")  # a no-op once cached
            else:
                text = read_text(Path(self.corpus), self.encoding)
            text = text[: self.max_chars] if self.max_chars is not None else text
            self._check(text)
            self._text = text
        return self._text

    def _check(self, text: str) -> None:
        """Refuse a corpus that cannot give every stream of every split one window."""
        where = f"corpus {self.corpus!r}" + (
            f" (first {self.max_chars} characters)" if self.max_chars else ""
        )
        if not text:
            raise CorpusError(f"{where} is empty: pass a text file with some text in it as --data.corpus")
        if len(set(text)) < 2:
            raise CorpusError(
                f"{where} has a single distinct character ({text[0]!r}): there is nothing to predict; "
                "pass a corpus with at least two distinct characters"
            )
        for split, (start, stop) in self.split_bounds(len(text)).items():
            if split != "train" and stop == start and getattr(self, f"{split}_fraction") == 0:
                continue  # that split is turned off
            B = self.batch_size if split == "train" else self.eval_batch_size
            need = B * (self.seq_len + 1)  # one window of T inputs and their T targets, in every stream
            if stop - start < need:
                fix = (
                    "use a longer corpus, a smaller --data.batch_size or --data.seq_len"
                    if split == "train"
                    else f"raise --data.{split}_fraction, lower --data.eval_batch_size, "
                    f"or set --data.{split}_fraction 0 to turn the {split} split off"
                )
                raise CorpusError(
                    f"the {split} split of {where} has {stop - start} characters, too short for one window "
                    f"of every stream: it needs at least {need} (batch {B} x (seq_len {self.seq_len} + 1)); "
                    f"{fix}"
                )

    @property
    def vocab(self) -> str:
        """The sorted distinct characters of the whole corpus (all splits)."""
        if self._vocab is None:
            self._vocab = build_vocab(self.text)
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split_bounds(self, n: int | None = None) -> dict[str, tuple[int, int]]:
        """Character ranges of the contiguous train, val and test splits (of ``n`` characters)."""
        n = len(self.text) if n is None else n
        n_val, n_test = int(n * self.val_fraction), int(n * self.test_fraction)
        n_train = n - n_val - n_test
        return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = encode(self.text, self.vocab)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        for split, (start, stop) in self.split_bounds().items():
            if stop == start:
                continue
            B = self.batch_size if split == "train" else self.eval_batch_size
            streams = make_streams(data[start:stop], B * world)[rank * B : (rank + 1) * B]
            self.splits[split] = StreamWindows(streams, self.seq_len)
            if len(self.splits[split]) < 1:  # only possible with several processes: _check saw one
                raise CorpusError(
                    f"the {split} split has {stop - start} characters, too short for one window of each "
                    f"of the {B * world} streams of {world} processes: it needs at least "
                    f"{B * world * (self.seq_len + 1)}"
                )

    def _loader(self, split: str) -> DataLoader | list:
        if split not in self.splits:
            return []  # that split is turned off (its fraction is 0)
        return DataLoader(self.splits[split], batch_size=None, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return ResumableLoader(
            self.splits["train"],
            lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
