import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

import reference_numpy as rn
from torch_charrnn import CharRNN
from torch_charrnn.corpus import builtin_text

# Derandomized in CI so a red run is reproducible; deadline off because CPU timing varies.
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


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


def model_from_numpy(params: dict[str, np.ndarray], **kwargs) -> CharRNN:
    """A float64 CharRNN holding exactly the NumPy parameters."""
    V, H = params["W_xh"].shape
    model = CharRNN(V, H, **kwargs).double()
    with torch.no_grad():
        for name in rn.PARAM_NAMES:
            getattr(model, name).copy_(torch.from_numpy(params[name]))
    return model


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run only where CUDA is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
