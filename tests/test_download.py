"""Downloading a corpus with pooch, against a real HTTP server on 127.0.0.1."""

import hashlib

import pytest
from conftest import http_server

from torch_charrnn.data.corpus import fetch, fetch_tinyshakespeare
from torch_charrnn.errors import CorpusError

CONTENT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on an ephemeral loopback port; counts the requests it answers."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "input.txt").write_bytes(CONTENT)
    with http_server(www) as (url, hits):
        yield f"{url}/input.txt", hits


def test_download_with_the_right_hash_is_cached_and_not_fetched_again(tmp_path, server):
    url, hits = server
    cache = tmp_path / "cache"
    path = fetch(url, hashlib.sha256(CONTENT).hexdigest(), "input.txt", cache)
    assert path == cache / "input.txt" and path.read_bytes() == CONTENT
    again = fetch(url, hashlib.sha256(CONTENT).hexdigest(), "input.txt", cache)
    assert again == path and len(hits) == 1


def test_download_with_a_wrong_hash_is_rejected_and_not_cached(tmp_path, server):
    url, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match="not the expected one.*Nothing was cached"):
        fetch_tinyshakespeare(url, cache)  # serves a file that is not tinyshakespeare
    assert not (cache / "tinyshakespeare.txt").exists()


def test_no_network_says_where_to_put_the_file(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match=r"put it at .*tinyshakespeare\.txt.*CHARRNN_CACHE"):
        fetch_tinyshakespeare("http://127.0.0.1:9/input.txt", cache)  # the discard port: refused
