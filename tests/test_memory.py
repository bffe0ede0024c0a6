"""keep_freed_memory: a training process reuses the memory a step freed instead of fresh pages.

What it changes is the process's allocator, so each case runs in a fresh Python process and
counts the page faults of a buffer freed and allocated again, the way a step's tape is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import SMALL_FIT

from torch_charrnn.cli.fit import cli_main
from torch_charrnn.rnn import memory

glibc = pytest.mark.skipif(memory._glibc() is None, reason="mallopt is glibc's")

# A step's worth of buffers: one of 64 MiB (16,384 pages, past glibc's largest threshold, so by
# default every free unmaps it), one of 16 MiB, small ones; the page faults of each of 12 steps
# after 3 to warm up.
CHILD = """
import json, resource, sys, torch
from torch_charrnn.rnn.memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    big, mid = torch.empty(16 << 20).fill_(1.0), torch.empty(4 << 20).fill_(1.0)
    small = [torch.ones(1000) for _ in range(10)]
    return float(big[0] + mid[0] + small[0][0])
faults = []
for k in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": sorted(faults[3:])}))
"""


def child(mode: str, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.pop("CHARRNN_KEEP_MEMORY", None)
    run = subprocess.run(
        [sys.executable, "-c", CHILD, mode], env={**environment, **env}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


@glibc
def test_a_steps_freed_buffers_come_back_without_page_faults():
    plain, kept = child("plain"), child("keep")
    median = len(plain["faults"]) // 2
    assert min(plain["faults"]) > 16_000, f"the premise: glibc unmaps a freed 64 MiB buffer ({plain})"
    # most steps take none (glibc's alignment of large blocks now and then leaves a freed block a
    # little short of the next request, which then takes fresh pages once)
    assert kept["kept"] is True and kept["faults"][median] < 100, kept


@glibc
def test_charrnn_keep_memory_0_leaves_malloc_as_it_was():
    result = child("keep", CHARRNN_KEEP_MEMORY="0")
    assert result["kept"] is False and min(result["faults"]) > 16_000, result


@glibc
@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=8"}])
def test_a_user_who_chose_mallocs_behaviour_keeps_it(env):
    assert child("keep", **env)["kept"] is False


def test_the_cli_keeps_freed_memory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("torch_charrnn.cli.fit.keep_freed_memory", lambda: calls.append(1))
    cli_main(["fit", *SMALL_FIT, "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}"])
    assert calls == [1]
