"""The encoded corpus: vectorised encoding, the smallest index type, the memory-mapped cache (its
key, its atomic write, the disk check), byte models, and enwik8/text8 from a local server."""

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import http_server
from hypothesis import given
from hypothesis import strategies as st

from torch_charrnn import CharDataModule
from torch_charrnn.data import corpus as corpus_module
from torch_charrnn.data import encoded as enc
from torch_charrnn.data.corpus import Archive, builtin_text
from torch_charrnn.errors import CorpusError

TEXT = "To be, or not to be, that is the question: caf\u00e9 \u00e0 la cr\u00e8me, \u65e5\u672c\u8a9e.\n" * 40


def by_hand(text: str) -> tuple[list[int], str]:
    """The per-character reference: sorted distinct characters, each character's index."""
    vocab = "".join(sorted(set(text)))
    return [vocab.index(c) for c in text], vocab


@given(st.text(min_size=1, max_size=300))
def test_vectorised_encoding_equals_the_per_character_reference(text):
    got = enc.encode_text(text)
    ids, vocab = by_hand(text)
    assert got.vocab == vocab and got.data.tolist() == ids
    assert got.decode() == text


def test_indices_take_the_smallest_integer_type_and_windows_widen_them():
    small = enc.encode_text("abc" * 10)
    wide = enc.encode_text("".join(map(chr, range(0x100, 0x100 + 300))) * 2)  # 300 distinct characters
    assert small.data.dtype == torch.uint8 and wide.data.dtype == torch.int16
    assert enc.smallest_dtype(2**15 + 1)[1] == torch.int32
    data = CharDataModule(text="".join(map(chr, range(0x100, 0x100 + 300))) * 20, batch_size=2, seq_len=5)
    data.setup()
    x, y = data.splits["train"][0]
    assert data.encoded.data.dtype == torch.int16 and x.dtype == y.dtype == torch.long


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "encoded"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_a_file_is_encoded_once_into_a_memory_mapped_cache(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "c.txt", TEXT)
    monkeypatch.setattr(enc, "CHUNK", 7)  # many chunks: multi-byte characters split across them
    meta = enc.prepare(path, verbose=False)
    ids, vocab = by_hand(TEXT)
    got = enc.load(meta)
    assert got.vocab == vocab and got.data.tolist() == ids and got.data.dtype == torch.uint8
    assert sorted(p.suffix for p in cache.iterdir()) == [".bin", ".json"]
    built = (cache / meta.with_suffix(".bin").name).stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(enc, "_chunks", lambda *a: calls.append(a) or iter(()))
    assert enc.prepare(path, verbose=False) == meta and not calls, "a second run reads the cache"
    assert meta.with_suffix(".bin").stat().st_mtime_ns == built


def test_the_cache_is_memory_mapped_not_read(tmp_path, cache):
    path = write(tmp_path / "c.txt", "ab" * 3_000_000)
    data = enc.load(enc.prepare(path, verbose=False)).data
    data[0] = 1  # a private mapping: the tensor is writable and the file is not touched
    assert enc.load(enc.prepare(path, verbose=False)).data[0].item() == 0


def test_a_changed_corpus_or_option_never_reuses_a_stale_cache(tmp_path, cache):
    path = write(tmp_path / "c.txt", TEXT)
    first = enc.prepare(path, verbose=False)
    variants = {
        "max_chars": enc.prepare(path, max_chars=100, verbose=False),
        "unit": enc.prepare(path, unit="bytes", verbose=False),
        "encoding": enc.prepare(
            write(tmp_path / "l.txt", "caf\u00e9" * 50, "latin-1"), "latin-1", verbose=False
        ),
    }
    assert len({first, *variants.values()}) == 4
    assert len(enc.load(variants["max_chars"])) == 100
    write(path, TEXT.replace("question", "answer!!"))  # same length, new content and time
    changed = enc.prepare(path, verbose=False)
    assert changed != first and "answer" in enc.load(changed).decode()


def test_a_failed_write_leaves_no_cache_and_no_partial_file(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "c.txt", TEXT)
    real = enc._chunks

    def broken(*args):
        broken.passes += 1
        for i, chunk in enumerate(real(*args)):
            if broken.passes == 2 and i == 2:
                raise OSError("disk went away")
            yield chunk

    broken.passes = 0
    monkeypatch.setattr(enc, "CHUNK", 64)
    monkeypatch.setattr(enc, "_chunks", broken)
    with pytest.raises(OSError, match="disk went away"):
        enc.prepare(path, verbose=False)
    assert broken.passes == 2 and list(cache.iterdir()) == []
    monkeypatch.setattr(enc, "_chunks", real)
    assert enc.load(enc.prepare(path, verbose=False)).decode() == TEXT


def test_what_a_killed_preparation_left_is_removed_but_a_live_ones_is_not(tmp_path, cache):
    import os
    import subprocess
    import sys
    import time

    path = write(tmp_path / "c.txt", TEXT)
    key = enc.cache_key(path, "utf-8", "chars", None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a process that has exited
    gone.wait()
    cache.mkdir(parents=True)
    abandoned = cache / f"{key}.bin.tmp-{gone.pid}"
    quiet_but_alive = cache / f"{key}.bin.tmp-{os.getppid()}"  # a process still running
    gone_but_fresh = cache / f"{key}.json.tmp-{gone.pid}"
    other_key = cache / f"other.bin.tmp-{gone.pid}"
    an_hour_ago = time.time() - 3600
    for tmp in (abandoned, quiet_but_alive, gone_but_fresh, other_key):
        tmp.write_bytes(b"\0" * 1000)
    for tmp in (abandoned, quiet_but_alive, other_key):
        os.utime(tmp, (an_hour_ago, an_hour_ago))

    assert enc.load(enc.prepare(path, verbose=False)).decode() == TEXT
    assert not abandoned.exists()
    assert quiet_but_alive.exists() and gone_but_fresh.exists() and other_key.exists()


def test_a_corpus_too_large_for_the_disk_fails_before_writing(tmp_path, cache, monkeypatch):
    path = write(tmp_path / "c.txt", TEXT)
    monkeypatch.setattr(enc.shutil, "disk_usage", lambda _: type("U", (), {"free": 10 << 20})())
    with pytest.raises(CorpusError, match=r"needs 0 MiB in .*encoded but only 10 MiB.*CHARRNN_CACHE"):
        enc.prepare(path, verbose=False)
    assert list(cache.iterdir()) == []


def test_a_decoding_error_names_the_byte_across_chunks(tmp_path, cache, monkeypatch):
    path = tmp_path / "bad.txt"
    path.write_bytes("caf\u00e9 ".encode() * 10 + b"\xff" + b"tail")
    monkeypatch.setattr(enc, "CHUNK", 4)
    with pytest.raises(CorpusError, match=r"byte 60 \(0xff\).*`encoding`.*`unit` bytes"):
        enc.prepare(path, verbose=False)


def test_bytes_unit_models_the_file_as_bytes(tmp_path, cache):
    path = write(tmp_path / "c.txt", TEXT)
    data = CharDataModule(corpus=str(path), unit="bytes", batch_size=2, seq_len=8)
    raw = TEXT.encode("utf-8")
    assert data.vocab == "".join(map(chr, sorted(set(raw)))) and len(data.encoded) == len(raw)
    assert data.text == TEXT  # decoded back through UTF-8
    assert data.unit == "bytes"


def test_the_datamodule_maps_the_cache_prepared_in_prepare_data(tmp_path, cache):
    path = write(tmp_path / "c.txt", builtin_text()[:20000])
    data = CharDataModule(corpus=str(path), batch_size=4, seq_len=16)
    data.prepare_data()
    assert len(list(cache.glob("*.bin"))) == 1
    data.setup()
    assert data.text == builtin_text()[:20000]
    same = CharDataModule(text=builtin_text()[:20000], batch_size=4, seq_len=16)
    same.setup()
    for (x, y), (sx, sy) in zip(data.splits["train"], same.splits["train"], strict=True):
        assert torch.equal(x, sx) and torch.equal(y, sy)


# --- enwik8 and text8, from a local server -------------------------------------------------------


@pytest.fixture
def mirror(tmp_path, monkeypatch, cache):
    """enwik8 and text8 look-alikes (10,000 symbols each) zipped on a loopback HTTP server."""
    www = tmp_path / "www"
    www.mkdir()
    rng = np.random.default_rng(0)
    payloads = {
        "enwik8": "<p>caf\u00e9 [[Wiki]] ok</p>\n".encode() * 400,  # 25 bytes, 24 characters: 10,000 bytes
        "text8": bytes(rng.choice(np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ", np.uint8), 10_000)),
    }
    for name, payload in payloads.items():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(name, payload)
        (www / f"{name}.zip").write_bytes(buf.getvalue())
    with http_server(www) as (url, hits):
        for name, unit in (("enwik8", "bytes"), ("text8", "chars")):
            sha = hashlib.sha256((www / f"{name}.zip").read_bytes()).hexdigest()
            monkeypatch.setitem(corpus_module.ARCHIVES, name, Archive(f"{url}/{name}.zip", sha, name, unit))
        yield payloads, hits


@pytest.mark.parametrize("name", ["enwik8", "text8"])
def test_enwik8_and_text8_download_once_and_split_90_5_5(mirror, name):
    payloads, hits = mirror
    data = CharDataModule(corpus=name, batch_size=4, seq_len=16)
    data.prepare_data()
    data.setup()
    assert data.split_bounds() == {"train": (0, 9000), "val": (9000, 9500), "test": (9500, 10000)}
    assert data.unit == ("bytes" if name == "enwik8" else "chars")
    assert len(data.encoded) == len(payloads[name]) == 10_000
    assert data.encoded.decode().encode("utf-8") == payloads[name]
    again = CharDataModule(corpus=name, batch_size=4, seq_len=16)
    again.prepare_data()
    assert again.vocab == data.vocab and hits == [f"/{name}.zip"], "downloaded once"


def test_a_tampered_archive_is_refused(mirror, monkeypatch):
    good = corpus_module.ARCHIVES["text8"]
    monkeypatch.setitem(corpus_module.ARCHIVES, "text8", Archive(good.url, "0" * 64, "text8", "chars"))
    with pytest.raises(CorpusError, match="not the expected one"):
        CharDataModule(corpus="text8", batch_size=4, seq_len=16).prepare_data()


def damaged_cache(tmp_path, how: str) -> tuple[Path, Path]:
    """A prepared cache of a corpus file, then damaged in place as ``how`` says."""
    path = write(tmp_path / "c.txt", TEXT)
    meta = enc.prepare(path, verbose=False)
    index = meta.with_suffix(".bin")
    if how == "indices beyond the vocabulary":  # the same size, a byte rewritten in the middle
        data = bytearray(index.read_bytes())
        data[len(data) // 2] = 250
        index.write_bytes(bytes(data))
    elif how == "the wrong size":
        index.write_bytes(index.read_bytes()[:-10])
    elif how == "metadata that does not parse":
        meta.write_text('{"format": 1, "length": ')
    elif how == "another index type":
        meta.write_text(meta.read_text().replace('"uint8"', '"int16"'))
    return path, meta


DAMAGE = {
    "indices beyond the vocabulary": "holds indices beyond its vocabulary",
    "the wrong size": "holds 2,590 bytes where its metadata says 2,600",
    "metadata that does not parse": "has metadata that does not parse",
    "another index type": "is stored as int16, not the uint8",
}


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_cache_is_found_and_rebuilt_with_one_line(tmp_path, cache, how, caplog):
    path, meta = damaged_cache(tmp_path, how)
    assert DAMAGE[how] in enc.damage(meta, meta.with_suffix(".bin"))
    with caplog.at_level("WARNING", logger=enc.__name__):
        assert enc.prepare(path, verbose=False) == meta
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"charrnn: the encoded cache {meta.with_suffix('.bin')} {DAMAGE[how]}")
    assert line.endswith(f"rebuilding it from {path}")
    assert enc.damage(meta, meta.with_suffix(".bin")) is None
    assert enc.load(meta).decode() == TEXT, "the run reads the text, not the damage"


def test_a_run_on_a_damaged_cache_trains_on_the_rebuilt_one(tmp_path, cache, capfd):
    """Through charrnn fit: the cache corrupted in place (same size) is rebuilt before step 0 with
    one line on stderr, and the run's model is the one an undamaged cache gives."""
    from torch_charrnn.cli import main

    path, meta = damaged_cache(tmp_path, "indices beyond the vocabulary")
    args = [
        "fit",
        f"--data.corpus={path}",
        "--data.batch_size=4",
        "--data.seq_len=16",
        "--model.hidden_size=8",
    ]
    args += ["--trainer.max_steps=3", "--trainer.enable_progress_bar=false", "--monitor.every_n_steps=0"]
    capfd.readouterr()
    assert main([*args, f"--trainer.default_root_dir={tmp_path / 'a'}"]) == 0
    err = capfd.readouterr().err
    assert err.count("the encoded cache") == 1 and "rebuilding it" in err and "Traceback" not in err
    assert main([*args, f"--trainer.default_root_dir={tmp_path / 'b'}"]) == 0
    assert "the encoded cache" not in capfd.readouterr().err, "rebuilt once, whole"
    a, b = (torch.load(next((tmp_path / r).glob("**/last.ckpt")), weights_only=True) for r in "ab")
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name


def test_a_cache_folder_that_cannot_be_made_is_one_line_naming_charrnn_cache(tmp_path, monkeypatch, capsys):
    from torch_charrnn.cli import main

    path = write(tmp_path / "c.txt", TEXT)
    not_a_folder = write(tmp_path / "a-file", "x")
    monkeypatch.setenv("CHARRNN_CACHE", str(not_a_folder))
    with pytest.raises(
        CorpusError, match=r"cache folder .*a-file/encoded cannot be used .*CHARRNN_CACHE is .*a-file"
    ):
        enc.prepare(path, verbose=False)
    code = main(
        ["fit", f"--data.corpus={path}", "--data.batch_size=2", f"--trainer.default_root_dir={tmp_path}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("charrnn: error: the cache folder") and err.count("\n") == 1
    assert "Point $CHARRNN_CACHE at a folder" in err and "Traceback" not in err
    with pytest.raises(CorpusError, match=r"cache folder .*a-file cannot be used"):
        corpus_module.fetch_tinyshakespeare("http://127.0.0.1:9/never-asked")


def test_a_read_only_cache_folder_is_one_line_naming_charrnn_cache(tmp_path, cache, monkeypatch):
    """A folder that exists but cannot be written (a read-only disk; root ignores chmod, so the
    refusal is the one the kernel gives such a disk)."""
    import errno

    path = write(tmp_path / "c.txt", TEXT)
    cache.mkdir(parents=True)

    def read_only(file, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(enc, "open", read_only, raising=False)
    with pytest.raises(CorpusError, match=r"cache folder .*encoded cannot be used \(Read-only file system\)"):
        enc.prepare(path, verbose=False)
    assert list(cache.iterdir()) == []


def test_checking_a_cache_reads_each_index_once_in_slices(tmp_path, cache, monkeypatch):
    """The check reads the index file in CHUNK-byte slices, never the whole file at once, and
    looks at every index: one out of range in the last slice is found."""
    path = write(tmp_path / "c.txt", TEXT * 50)
    meta = enc.prepare(path, verbose=False)
    monkeypatch.setattr(enc, "CHUNK", 1000)
    reads = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def readinto(self, buffer):
            assert len(buffer) == 1000
            n = self.f.readinto(buffer)
            reads.append(n)
            return n

    monkeypatch.setattr(enc, "open", lambda p, mode="r": Counting(real_open(p, mode)), raising=False)
    assert enc.damage(meta, meta.with_suffix(".bin")) is None
    assert sum(reads) == len(TEXT) * 50 and max(reads) == 1000
    data = bytearray(meta.with_suffix(".bin").read_bytes())
    data[-1] = 255
    meta.with_suffix(".bin").write_bytes(bytes(data))
    assert "beyond its vocabulary" in enc.damage(meta, meta.with_suffix(".bin"))
