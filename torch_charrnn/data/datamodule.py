"""Corpora, the vocabulary, and the stream/window batching of docs/design.md as a LightningDataModule.

A split is cut into B contiguous streams of equal length; window k of every stream gives inputs
``s[kT:(k+1)T]`` and targets ``s[kT+1:(k+1)T+1]``, so the hidden state carried from window k to
window k+1 of a stream continues the same text. Under DDP with W processes the B*W global
streams are split so that process r keeps streams r*B .. (r+1)*B - 1, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from torch_charrnn.data import encoded as enc
from torch_charrnn.data.corpus import ARCHIVES, BUILTIN, builtin_text, corpus_path
from torch_charrnn.errors import CorpusError, require


def chars_needed(batch_size: int, seq_len: int) -> int:
    """The shortest split that gives each of ``batch_size`` streams one window of ``seq_len``."""
    return batch_size * (seq_len + 1)  # T inputs and, one character on, their T targets


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
        """Window k as int64 (the streams may be uint8 or int16, memory-mapped: widened per window)."""
        T = self.seq_len
        window = self.streams[:, k * T : (k + 1) * T + 1].long()
        return window[:, :-1], window[:, 1:]

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
        encoding: how to decode a corpus file (``unit`` chars).
        max_chars: keep only the first ``max_chars`` symbols of the corpus.
        eval_batch_size: streams for validation and test (default: ``batch_size``).
        text: use this string as the corpus instead (for tests and notebooks).
        unit: the symbols: ``chars`` (code points after decoding) or ``bytes`` (the file's bytes,
            as the published enwik8 results model it); default: ``bytes`` for enwik8, else ``chars``.

    A corpus file is encoded once, in ``prepare_data``, into a memory-mapped cache
    (``torch_charrnn.data.encoded``) that every process and later run reads.
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
        unit: Literal["chars", "bytes"] | None = None,
    ):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            require(value >= 1, f"`{name}` must be a positive integer, got {value}")
        require(
            eval_batch_size is None or eval_batch_size >= 1,
            f"`eval_batch_size` must be a positive integer (or None for `batch_size`), got {eval_batch_size}",
        )
        require(
            max_chars is None or max_chars >= 1,
            f"`max_chars` must be positive (or None), got {max_chars}",
        )
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            require(0 <= value < 1, f"`{name}` must be in [0, 1), got {value} (0 turns that split off)")
        require(
            val_fraction + test_fraction < 1,
            f"`val_fraction` + `test_fraction` = {val_fraction + test_fraction} leaves no training text; "
            "their sum must be below 1",
        )
        archive = ARCHIVES.get(corpus) if text is None else None
        unit = unit or (archive.unit if archive else "chars")  # resolved before it is saved
        enc.check_unit(unit)
        self.save_hyperparameters(ignore=["text"])
        # Under LightningCLI the call above records the options as given (unit None); a second call
        # with a dict is Lightning's way to record the resolved value in hparams and hparams_initial,
        # which must agree with the model's linked unit.
        self.save_hyperparameters({"unit": unit})
        self.corpus = corpus
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.encoding = encoding
        self.max_chars = max_chars
        self.eval_batch_size = eval_batch_size or batch_size
        self.unit = unit
        self._encoded: enc.Encoded | None = None
        self._cache: Path | None = None  # the encoded cache prepare_data made (or found)
        if text is not None:
            self._set(enc.encode_text(text, self.unit, max_chars))
        self.splits: dict[str, StreamWindows] = {}

    def _set(self, encoded: enc.Encoded) -> None:
        self._check(encoded)
        self._encoded = encoded

    def prepare_data(self) -> None:
        """Download a named corpus and encode a corpus file into the cache, once (on each node)."""
        if self._encoded is None and self.corpus != BUILTIN:
            self._cache = enc.prepare(corpus_path(self.corpus), self.encoding, self.unit, self.max_chars)

    @property
    def encoded(self) -> enc.Encoded:
        """The corpus as indices (memory-mapped from the cache for a file)."""
        if self._encoded is None:
            if self.corpus == BUILTIN:
                encoded = enc.encode_text(builtin_text(), self.unit, self.max_chars)
            else:  # a process that did not run prepare_data (DDP rank > 0) finds the cache it made
                if self._cache is None:
                    self.prepare_data()
                encoded = enc.load(self._cache)
            self._set(encoded)
        return self._encoded

    @property
    def text(self) -> str:
        """The corpus as text, decoded back from its indices (for tests and small corpora)."""
        return self.encoded.decode()

    def _check(self, encoded: enc.Encoded) -> None:
        """Refuse a corpus that cannot give every stream of every split one window."""
        where = self._where()
        if not len(encoded):
            raise CorpusError(f"{where} is empty: pass a text file with some text in it as `corpus`")
        if len(encoded.vocab) < 2:
            raise CorpusError(
                f"{where} has a single distinct character ({encoded.vocab!r}): there is nothing to predict; "
                "pass a corpus with at least two distinct characters"
            )
        for split, (start, stop) in self.split_bounds(len(encoded)).items():
            if split != "train" and stop == start and getattr(self, f"{split}_fraction") == 0:
                continue  # that split is turned off
            self._require_windows(split, stop - start, self._batch_size(split), where)

    def _where(self) -> str:
        return f"corpus {self.corpus!r}" + (f" (first {self.max_chars} symbols)" if self.max_chars else "")

    def _batch_size(self, split: str) -> int:
        return self.batch_size if split == "train" else self.eval_batch_size

    def _require_windows(self, split: str, n: int, streams: int, where: str, world: int = 1) -> None:
        """Refuse a split of ``n`` symbols too short for one window of each of ``streams`` streams
        per process (of ``world`` processes)."""
        need = chars_needed(streams * world, self.seq_len)
        if n >= need:
            return
        fix = (
            "use a longer corpus, a smaller `batch_size` or `seq_len`"
            if split == "train"
            else f"raise `{split}_fraction`, lower `eval_batch_size`, "
            f"or set `{split}_fraction` to 0 to turn the {split} split off"
        )
        processes = f" x {world} processes" if world > 1 else ""
        raise CorpusError(
            f"the {split} split of {where} has {n} characters, too short for one window of every stream: "
            f"it needs at least {need} (batch {streams}{processes} x (seq_len {self.seq_len} + 1)); {fix}"
        )

    @property
    def vocab(self) -> str:
        """The sorted distinct characters (or bytes, as latin-1 characters) of the whole corpus."""
        return self.encoded.vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split_bounds(self, n: int | None = None) -> dict[str, tuple[int, int]]:
        """Character ranges of the contiguous train, val and test splits (of ``n`` characters)."""
        n = len(self.encoded) if n is None else n
        n_val, n_test = int(n * self.val_fraction), int(n * self.test_fraction)
        n_train = n - n_val - n_test
        return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self.encoded.data  # (N,), uint8/int16/int32, memory-mapped for a file
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        for split, (start, stop) in self.split_bounds().items():
            if stop == start:
                continue
            B = self._batch_size(split)
            self._require_windows(split, stop - start, B, self._where(), world)
            streams = make_streams(data[start:stop], B * world)[rank * B : (rank + 1) * B]
            self.splits[split] = StreamWindows(streams, self.seq_len)

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
