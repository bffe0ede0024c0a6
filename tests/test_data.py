"""CharDataModule: vocabulary, contiguous splits, and the stream/window batching of docs/design.md."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference_numpy as rn
from torch_charrnn import CharDataModule
from torch_charrnn.data.corpus import builtin_text
from torch_charrnn.errors import CorpusError


class FakeTrainer:
    def __init__(self, rank, world):
        self.global_rank, self.world_size = rank, world


def windows(data: CharDataModule, split: str):
    return list(data.splits[split])


def test_vocabulary_is_sorted_distinct_characters_of_the_whole_corpus():
    text = "train text ... validation: Q! test: Z\u00e9"
    data = CharDataModule(text=text, batch_size=1, seq_len=2, val_fraction=0.3, test_fraction=0.2)
    assert data.vocab == "".join(sorted(set(text)))
    assert data.vocab_size == len(set(text))
    assert "\u00e9" in data.vocab  # characters only in the test split count too


def test_builtin_corpus_needs_no_download():
    data = CharDataModule()
    assert data.text == builtin_text() and len(data.text) > 100_000
    assert data.vocab_size > 50


@given(
    n=st.integers(500, 2000),  # every split long enough for one window of every stream
    B=st.integers(1, 5),
    T=st.integers(1, 9),
    val=st.sampled_from([0.0, 0.1, 0.2]),
)
def test_windows_are_the_numpy_references_over_contiguous_splits(n, B, T, val):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(n))
    data = CharDataModule(text=text, batch_size=B, seq_len=T, val_fraction=val, test_fraction=0.1)
    data.setup("fit")
    bounds = data.split_bounds()
    assert (
        bounds["train"][0] == 0
        and bounds["train"][1] == bounds["val"][0]
        and bounds["val"][1] == bounds["test"][0]
    )
    assert bounds["test"][1] == n
    encoded = rn.encode(text, rn.build_vocab(text))
    start, stop = bounds["train"]
    streams = rn.make_streams(encoded[start:stop], B)  # the NumPy reference's cut
    got = windows(data, "train")
    assert len(got) == rn.num_windows(streams, T)
    for k, (x, y) in enumerate(got):
        want_x, want_y = rn.window(streams, k, T)
        np.testing.assert_array_equal(x.numpy(), want_x)
        np.testing.assert_array_equal(y.numpy(), want_y)
        assert x.shape == (B, T) and x.dtype == torch.long
    for k in range(len(got) - 1):  # window k+1 continues window k in every stream
        np.testing.assert_array_equal(got[k][1][:, -1].numpy(), got[k + 1][0][:, 0].numpy())


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_processes_keep_their_own_streams_in_order(world):
    text = builtin_text()[:5000]
    B, T = 3, 8
    single = CharDataModule(text=text, batch_size=B * world, seq_len=T)
    single.setup("fit")
    for rank in range(world):
        data = CharDataModule(text=text, batch_size=B, seq_len=T)
        data.trainer = FakeTrainer(rank, world)
        data.setup("fit")
        mine, everyone = windows(data, "train"), windows(single, "train")
        assert len(mine) == len(everyone)
        for (x, y), (gx, gy) in zip(mine, everyone, strict=True):
            torch.testing.assert_close(x, gx[rank * B : (rank + 1) * B])
            torch.testing.assert_close(y, gy[rank * B : (rank + 1) * B])


def test_max_chars_keeps_the_beginning():
    data = CharDataModule(max_chars=1234, batch_size=2, seq_len=10)
    assert data.text == builtin_text()[:1234]


def test_corpus_file_is_decoded_with_the_chosen_encoding(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\u00e9 au lait ".encode("latin-1") * 100)
    with pytest.raises(CorpusError, match=r"byte 3 \(0xe9\).*`encoding`"):
        _ = CharDataModule(corpus=str(path), batch_size=2, seq_len=10).text
    latin = CharDataModule(corpus=str(path), encoding="latin-1", batch_size=2, seq_len=10)
    assert latin.text.startswith("caf\u00e9")


def test_missing_corpus_file_says_what_to_pass(tmp_path):
    with pytest.raises(CorpusError, match="does not exist.*`corpus` builtin, tinyshakespeare"):
        _ = CharDataModule(corpus=str(tmp_path / "nope.txt")).vocab
