import contextlib
import os
import threading
import weakref
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

import reference_numpy as rn
from torch_charrnn import CharRNN
from torch_charrnn.cli.fit import FOREIGN_WARNINGS
from torch_charrnn.data.corpus import builtin_text
from torch_charrnn.rnn.cells import get_cell
from torch_charrnn.training import graphs
from torch_charrnn.training.graphs import EagerReplay

# Derandomized in CI so a red run is reproducible; deadline off because CPU timing varies.
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config):
    """The warnings that are not ours, silenced in the tests as charrnn silences them (pytest puts
    its own filters in front of those set on import)."""
    for message, module in FOREIGN_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}::{module}")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Every test encodes corpus files into a cache of its own, never the user's ~/.cache (a test
    that needs a particular cache sets $CHARRNN_CACHE itself, after this)."""
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path_factory.mktemp("charrnn-cache")))


class Counted(EagerReplay):
    """EagerReplay, counting its replays across every instance."""

    replays = 0

    def replay(self):
        Counted.replays += 1
        return super().replay()


REPLAYED = weakref.WeakSet()  # the models whose training windows replay on the CPU (tests/test_graphs.py)


@pytest.fixture(autouse=True)
def replayed_on_the_cpu(monkeypatch):
    """The models of REPLAYED replay their windows through Counted, the CUDA graph's stand-in on the
    CPU; every other model as the product decides (CUDA graphs on a GPU, eagerly elsewhere)."""
    own = graphs.replayer
    monkeypatch.setattr(graphs, "replayer", lambda model: Counted if model in REPLAYED else own(model))


# A charrnn fit that takes seconds: the first 5,000 characters of the built-in corpus, 4 streams
# of 16-character windows, on the CPU, quiet, without the monitor's extra passes.
SMALL_FIT = [
    "--data.max_chars=5000",
    "--data.batch_size=4",
    "--data.seq_len=16",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--monitor.every_n_steps=0",
]


@pytest.fixture
def small_text() -> str:
    """A few thousand characters of real English-like text with no download."""
    return builtin_text()[:3000]


# Every registered cell, and the depths the tests sweep: a new cell is picked up by every test.
CELLS = list(rn.CELLS)
CELL_DEPTHS = [(cell, 1) for cell in CELLS] + [(cell, 2) for cell in CELLS]
# The cells PyTorch has a module of (their FUSED): those held to nn.RNN/nn.GRU/nn.LSTM, and that
# ``bptt="fused"`` and the torch export run.
FUSED_CELLS = [cell for cell in CELLS if get_cell(cell).FUSED is not None]

# The hand-written BPTT's two loops over time: the C++ kernels (a CPU's default) and the pure-torch
# steps (a GPU's, and the fallback where the kernels cannot be built). Both are proven.
LOOPS = ("C++", "torch")


def assert_close_at_scale(got, want, rtol: float = 1e-10, atol: float = 1e-11, floor: float = 1.0, msg=None):
    """``torch.testing.assert_close`` with ``atol`` relative to ``want``'s largest entry (at least
    ``floor``), as ``oracle.compare`` holds gradients: float64's rounding through a long window of
    saturated, normalised steps grows with a tensor's magnitude, and an entry near zero beside large
    ones carries their absolute error (the LN-LSTM at scale 6: 2e-12 to 3e-11 of its largest entry)."""
    scale = max(floor, want.abs().max().item()) if want.numel() else floor
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol * scale, msg=msg)


@contextlib.contextmanager
def bptt_loop(name: str):
    """Run ``bptt="manual"`` on a CPU through the loop ``name`` (one of LOOPS)."""
    from unittest import mock

    from torch_charrnn.rnn import native

    if name == "torch":
        with mock.patch.object(native, "usable", lambda x: None):
            yield
        return
    assert native.kernels() is not None, "the C++ kernels did not build: see the warning above"
    yield


def problems(**overrides):
    """Hypothesis strategies for a random problem (``gradcheck.random_problem``'s arguments): every
    cell, L up to 3, and the edges T=1, B=1, H=1, V=2; weights large enough to saturate the gates."""
    from hypothesis import strategies as st

    return {
        "cell": st.sampled_from(CELLS),
        "L": st.integers(1, 3),
        "V": st.integers(2, 9),
        "H": st.integers(1, 9),
        "B": st.integers(1, 4),
        "T": st.integers(1, 12),
        "scale": st.sampled_from([0.01, 0.5, 1.0, 3.0, 6.0]),  # 3 and 6 saturate the gates
        "seed": st.integers(0, 2**16),
        **overrides,
    }


def model_from_numpy(params: dict, cell: str = "tanh", **kwargs) -> CharRNN:
    """A float64 CharRNN holding exactly the NumPy parameters."""
    V, H = params["W_hy"].shape[::-1]
    model = CharRNN(V, H, cell=cell, num_layers=len(params["layers"]), **kwargs).double()
    mine = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in rn.named_arrays(params).items():
            mine[name].copy_(torch.from_numpy(value))
    return model


def save_checkpoint(model: CharRNN, path) -> Path:
    """The parts of a charrnn fit checkpoint that sample, score and export read: the weights and
    the hyperparameters."""
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return Path(path)


def torch_state(state: tuple, requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(s, requires_grad=requires_grad) for s in state)


def through_model(params, inputs, targets, state, cell, bptt):
    """Loss, logits, last state and every gradient (by state-dict name, and state.h/state.c) of a
    float64 CharRNN holding ``params``, differentiated by backend ``bptt``."""
    from torch_charrnn.rnn.bptt import cross_entropy

    model = model_from_numpy(params, cell, bptt=bptt)
    state_t = torch_state(state, requires_grad=True)
    logits, last = model(torch.from_numpy(inputs), state_t)
    loss = cross_entropy(logits, torch.from_numpy(targets))
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    grads.update({f"state.{n}": s.grad for n, s in zip(rn.get_cell(cell).STATE, state_t, strict=True)})
    return loss, logits, last, grads


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@contextlib.contextmanager
def http_server(directory):
    """Serves ``directory`` on an ephemeral loopback port; yields (base URL, the paths requested)."""
    hits = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
