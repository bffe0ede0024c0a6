"""Large corpora: time to the first training step, peak resident memory, cache size on disk.

Builds a text file of the asked size from tinyshakespeare (repeated), then runs ``charrnn fit`` on
it in fresh processes: the first run (which encodes the corpus into the cache) and a second run
(which memory-maps it). "Time to first step" runs from the end of the imports (torch and
Lightning, reported apart) through parsing, instantiation (the data is prepared then, as the
model's vocabulary size is linked from it), setup and the sanity check, to the start of training
step 0. Peak memory is the process's VmHWM, everything included.

``--src`` runs another checkout's ``torch_charrnn`` (``git worktree add /tmp/before <commit>``)
for a before/after comparison; ``--ddp`` also runs 2-process DDP (``configs/ddp_cpu.yaml``) on
the file and reports each process's peak.

    python benchmarks/bench_corpus.py --mb 100 1000
    python benchmarks/bench_corpus.py --mb 100 --src /tmp/before     # the code before the cache
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run in a fresh process per run, on whichever tree --src names, so it imports nothing from
# benchmarks/harness.py (which imports this tree's package).
CHILD = r"""
import time
start = time.perf_counter()
import json, sys, warnings
warnings.filterwarnings("ignore")
import lightning as L
try:  # the tree under test may be --src, another checkout: before or after cli/ became a folder
    from torch_charrnn.cli import fit as cli_fit
except ImportError:
    from torch_charrnn import cli_fit

marks = {"imported": time.perf_counter()}

class FirstStep(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        marks.setdefault("first_step", time.perf_counter())

class Bench(cli_fit.CharRNNCLI):
    def before_fit(self):
        marks["fit"] = time.perf_counter()
        self.trainer.callbacks.append(FirstStep())
    def after_fit(self):
        pass

Bench(cli_fit.CharRNN, cli_fit.CharDataModule, trainer_defaults=cli_fit.TRAINER_DEFAULTS,
      seed_everything_default=0, args=sys.argv[1:])
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
result = {"peak_mib": hwm / 1024, "imports_s": marks["imported"] - start}
if "first_step" in marks:
    result["first_step_s"] = marks["first_step"] - marks["imported"]
print("\nBENCH " + json.dumps(result), flush=True)
"""


def make_corpus(path: Path, mb: int, source: Path) -> None:
    text = source.read_bytes()
    with open(path, "wb") as f:
        written = 0
        while written < mb * 10**6:
            f.write(text[: mb * 10**6 - written])
            written += min(len(text), mb * 10**6 - written)


def fit(corpus: Path, root: Path, cache: Path, src: Path | None, config: list[str]) -> tuple[list, float]:
    env = {**os.environ, "CHARRNN_CACHE": str(cache)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    child = root / "child.py"  # a file, not -c: DDP starts its other process from the same command
    root.mkdir(parents=True, exist_ok=True)
    child.write_text(CHILD)
    args = [
        "fit",
        *config,
        f"--data.corpus={corpus}",
        "--data.batch_size=32",
        "--data.seq_len=50",
        "--trainer.max_steps=5",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
        "--monitor.every_n_steps=0",
    ]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(child), *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"charrnn fit failed:\n{proc.stderr[-3000:]}")
    results = [json.loads(m) for m in re.findall(r"BENCH (\{[^}]*\})", proc.stdout)]
    return results, wall


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mb", type=int, nargs="+", default=[100, 1000], help="corpus sizes in MB (10^6 bytes)"
    )
    parser.add_argument("--src", type=Path, help="a checkout whose torch_charrnn to run instead")
    parser.add_argument("--ddp", action="store_true", help="also 2-process DDP (configs/ddp_cpu.yaml)")
    parser.add_argument(
        "--source", type=Path, default=None, help="the text to repeat (default: tinyshakespeare)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from torch_charrnn.data.corpus import fetch_tinyshakespeare

    source = args.source or fetch_tinyshakespeare()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_corpus_"))
    work.mkdir(parents=True, exist_ok=True)
    code = args.src or "this checkout"
    print(f"code: {code}; CPU threads: {os.cpu_count()}\n")
    print(
        "| corpus | run | time to first step (s) | imports (s) | peak RSS per process (MiB) "
        "| process wall (s) | cache on disk (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for mb in args.mb:
        corpus = work / f"corpus_{mb}mb.txt"
        if not corpus.exists():
            make_corpus(corpus, mb, source)
        cache = work / f"cache_{mb}"
        shutil.rmtree(cache, ignore_errors=True)
        runs = [("first (encodes)", []), ("second (maps the cache)", [])]
        if args.ddp:
            config = Path(__file__).resolve().parents[1] / "configs" / "ddp_cpu.yaml"
            runs.append(("2-process DDP", [f"--config={config}"]))
        for label, config in runs:
            results, wall = fit(corpus, work / "runs", cache, args.src, config)
            first = max((r.get("first_step_s", 0.0) for r in results), default=0.0)
            imports = max((r["imports_s"] for r in results), default=0.0)
            peaks = " / ".join(f"{r['peak_mib']:,.0f}" for r in results)
            print(
                f"| {mb} MB | {label} | {first:.1f} | {imports:.1f} | {peaks} | {wall:.1f} "
                f"| {du_mib(cache):,.0f} |",
                flush=True,
            )
    print("\nThe check every start makes of a cache before its first step (encoded.damage: metadata, size,")
    print("every index against the vocabulary), in this process, on the page cache the runs left warm:\n")
    print("| corpus | cache (MiB) | check (s), median of 3 | each of 3 (s) |\n|---|---|---|---|")
    from torch_charrnn.data import encoded as enc

    for mb in args.mb:
        meta = next((work / f"cache_{mb}" / "encoded").glob("*.json"))
        times = []
        for _ in range(3):
            start = time.perf_counter()
            problem = enc.damage(meta, meta.with_suffix(".bin"))
            times.append(time.perf_counter() - start)
            assert problem is None, problem
        each = ", ".join(f"{s:.2f}" for s in times)
        print(
            f"| {mb} MB | {du_mib(meta.parent):,.0f} | {statistics.median(times):.2f} | {each} |", flush=True
        )
    print(f"\nfiles in {work}")


if __name__ == "__main__":
    main()
