"""What the benchmarks share: PyTorch's own module as the baseline, the bare training step, a
``charrnn fit`` that hooks callbacks into its trainer, and timing that waits for a GPU.

Imported by the scripts beside it (``python benchmarks/X.py`` puts this folder on the path).
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from torch_charrnn import CharDataModule, CharRNN
from torch_charrnn.cli.fit import CharRNNCLI, cli_main
from torch_charrnn.rnn.cells import CELLS as REGISTRY
from torch_charrnn.rnn.fused import fused_parameters
from torch_charrnn.training.schedules import WarmupCosine

V = 65  # tinyshakespeare's vocabulary
CELLS = list(REGISTRY)  # every registered cell


def module_of(cell: str) -> str:
    """The torch.nn module ``cell`` is measured against: its own (``FUSED``), or for a cell PyTorch
    has no module of, that of the registered cell with the same gates and state (the LN-LSTM's is
    nn.LSTM's)."""
    own = REGISTRY[cell]
    return own.FUSED or next(
        c.FUSED for c in REGISTRY.values() if c.FUSED and (c.GATES, c.STATE) == (own.GATES, own.STATE)
    )


class TorchRNN(nn.Module):
    """The baseline: PyTorch's nn.RNN/nn.GRU/nn.LSTM and an nn.Linear on one-hot characters (the
    same model as CharRNN's), or with ``embedding`` on an ``nn.Embedding(V, H)`` (as people write
    it); ``forward(inputs, state) -> (logits, state)`` with the state a tuple, as CharRNN's.

    ``dropout`` goes where CharRNN's does: between layers (the module's own ``dropout``) and on
    the top layer's h before the output layer (an ``nn.Dropout``). ``start_from`` (a CharRNN of
    the same cell and sizes, one-hot only) gives it that model's weights to start from, output
    layer included: the same model from the same initial point, not only the same shapes."""

    def __init__(
        self,
        kind: str,
        vocab_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        embedding: bool = False,
        start_from: CharRNN | None = None,
    ):
        super().__init__()
        between = dropout if num_layers > 1 else 0.0  # nn.* warns about dropout with one layer
        self.embed = nn.Embedding(vocab_size, hidden_size) if embedding else None
        width = hidden_size if embedding else vocab_size
        self.rnn = getattr(nn, kind)(width, hidden_size, num_layers, batch_first=True, dropout=between)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.out = nn.Linear(hidden_size, vocab_size)
        self.vocab_size = vocab_size
        if start_from is not None:
            if embedding or start_from.cell.FUSED != kind:
                raise ValueError(f"a one-hot nn.{kind} can start from a CharRNN of its cell only")
            with torch.no_grad():
                for name, w in fused_parameters(start_from.weights()["layers"], start_from.cell).items():
                    getattr(self.rnn, name).copy_(w)
                self.out.weight.copy_(start_from.W_hy.t())
                self.out.bias.copy_(start_from.b_y)

    def forward(self, inputs, state=None):
        if state is not None and not isinstance(self.rnn, nn.LSTM):
            state = state[0]
        if self.embed is None:
            x = F.one_hot(inputs, self.vocab_size).to(self.out.weight.dtype)
        else:
            x = self.embed(inputs)
        hs, state = self.rnn(x, state)
        return self.out(self.drop(hs)), state if isinstance(state, tuple) else (state,)


def train_on_streams(step, data, more, device="cpu") -> None:
    """Run ``step`` over ``data``'s training windows while ``more()`` (asked before each step),
    every epoch starting the streams from zero state, as ``charrnn fit`` does."""
    while True:
        step.state = None
        for batch in data.splits["train"]:
            if not more():
                return
            step(tuple(t.to(device, non_blocking=True) for t in batch))


class BareStep:
    """One training step as a plain PyTorch loop runs it: forward, mean cross-entropy, backward,
    clipping by global norm, the optimizer's step (and the schedule's), the state carried detached.

    ``model(inputs, state) -> (logits, state)``; ``autocast`` a dtype to run the forward under."""

    def __init__(self, model, optimizer, clip: float | None = 5.0, scheduler=None, autocast=None):
        self.model, self.optimizer, self.clip, self.scheduler = model, optimizer, clip, scheduler
        self.autocast, self.state = autocast, None
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]

    def __call__(self, batch) -> torch.Tensor:
        inputs, targets = batch
        device = inputs.device.type
        with torch.autocast(device, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            logits, state = self.model(inputs, self.state)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.state = tuple(s.detach() for s in state)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss


def random_windows(B: int, T: int, n: int, device="cpu", seed: int = 0) -> list:
    """``n`` windows of random characters, (inputs, targets) each (B, T)."""
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, V, (B, T), generator=g).to(device),
            torch.randint(0, V, (B, T), generator=g).to(device),
        )
        for _ in range(n)
    ]


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(fn, n: int, device="cpu") -> float:
    """Mean seconds of ``fn()`` over ``n`` calls, after one warm-up call, waiting for the device."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - start) / n


class Paired(L.Callback):
    """Runs ``block`` bare steps (``bare(batch)``) at the start of every ``block``-th training step,
    and times every Lightning step and every bare step, so that the machine's drift (by a third
    within a minute on this 2-core machine) hits both alike, while each runs warm: alternated one
    for one, the two models evict each other from the cache and both steps slow by a third.

    A Lightning step is one whole cycle of the run, from one ``on_train_batch_start`` to the next
    (loading the window, Lightning's loop, the hooks, the step, and whatever else the run does),
    less the bare steps run inside it. The first ``skip`` of each warm up.
    """

    def __init__(self, bare, block: int = 50, skip: int = 10):
        self.bare, self.block, self.skip = bare, block, skip
        self.lightning: list[float] = []
        self.bare_times: list[float] = []
        self._start: float | None = None
        self._inside, self._calls = 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(pl_module.device)
        now = time.perf_counter()
        if self._start is not None:
            self.lightning.append(now - self._start - self._inside)
        self._start, self._inside = now, 0.0
        if self._calls % self.block == 0:
            for _ in range(self.block):
                begin = time.perf_counter()
                self.bare(batch)
                sync(pl_module.device)
                self.bare_times.append(time.perf_counter() - begin)
            self._inside = time.perf_counter() - now
        self._calls += 1

    def ratios(self) -> tuple[float, float, float, float]:
        """(Lightning's median step, the bare median step, in seconds; median ratio, ratio of means)."""
        lightning, bare = self.lightning[self.skip :], self.bare_times[self.skip :]
        median_l, median_b = statistics.median(lightning), statistics.median(bare)
        return median_l, median_b, median_l / median_b, statistics.mean(lightning) / statistics.mean(bare)


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Lightning Trainer that writes nothing and prints nothing: no logger, checkpoints, bar or summary."""
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return L.Trainer(**quiet, enable_model_summary=False, **kwargs)


EVAL_B, EVAL_T = 32, 100


def eval_windows(corpus: str, seq_len: int = EVAL_T) -> list:
    """The whole validation split as EVAL_B streams of ``seq_len``-character windows, in order."""
    data = CharDataModule(corpus=corpus, batch_size=EVAL_B, seq_len=seq_len)
    data.prepare_data()
    data.setup()
    return list(data.val_dataloader())


@torch.no_grad()
def val_loss(step, windows) -> float:
    """Mean cross-entropy over the validation windows; ``step(inputs, state) -> (logits, state)``."""
    state, total = None, 0.0
    for inputs, targets in windows:
        logits, state = step(inputs, state)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()
    return total / len(windows)


def eval_model(model, windows) -> float:
    """``model``'s validation loss on ``windows`` in evaluation mode, its mode kept."""
    was_training = model.training
    model.eval()
    loss = val_loss(lambda x, s: model(x, s), windows)
    model.train(was_training)
    return loss


def train_for_chars(corpus: str, chars: int, seed: int, **cfg) -> dict:
    """A sweep row: CharRNN trained through Lightning ``fit`` on ``chars`` characters (float32,
    clipping 5; Adagrad unless ``cfg`` names an optimizer), then its validation loss."""
    L.seed_everything(seed, verbose=False)
    data = CharDataModule(corpus=corpus, batch_size=cfg["batch_size"], seq_len=cfg["seq_len"])
    model = CharRNN(
        data.vocab_size,
        cfg["hidden_size"],
        cfg.get("cell", "tanh"),
        num_layers=cfg.get("num_layers", 1),
        lr=cfg["lr"],
        whh_scale=cfg["whh_scale"],
        init_std=cfg.get("init_std", 0.01),
        forget_bias=cfg.get("forget_bias", 0.0),
        input_std=cfg.get("input_std"),
        dropout=cfg.get("dropout", 0.0),
        vocab=data.vocab,
    )
    steps = max(1, chars // (cfg["batch_size"] * cfg["seq_len"]))
    if cfg.get("optimizer", "Adagrad") != "Adagrad":
        model.configure_optimizers = lambda: optimizers(model, cfg, steps)
    trainer = quiet_trainer(accelerator="cpu", max_steps=steps, gradient_clip_val=5.0, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    evaluator = quiet_trainer(accelerator="cpu")
    val = evaluator.validate(model, data, verbose=False)[0]["val/loss"]
    return {
        **cfg,
        "steps": steps,
        "seconds": seconds,
        "chars_per_s": steps * cfg["batch_size"] * cfg["seq_len"] / seconds,
        "val_loss": val,
    }


def optimizers(model, cfg: dict, steps: int):
    """What ``--optimizer X --optimizer.lr ... [--lr_scheduler WarmupCosine ...]`` gives the model."""
    optimizer = getattr(torch.optim, cfg["optimizer"])(model.parameters(), lr=cfg["lr"])
    if cfg.get("schedule") != "cosine":
        return optimizer
    schedule = WarmupCosine(optimizer, total_steps=steps, warmup_steps=min(200, steps - 1))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class HookedCLI(CharRNNCLI):
    """``charrnn fit`` whose trainer gets the callbacks ``hook(cli)`` returns before it fits, and
    that prints nothing at the end (the benchmark prints its own figures)."""

    hook = staticmethod(lambda cli: [])

    def before_fit(self) -> None:
        self.trainer.callbacks.extend(type(self).hook(self))

    def after_fit(self) -> None:
        pass


def fit_with(args: list[str], hook) -> CharRNNCLI:
    """Run ``charrnn fit`` with ``args`` (after ``fit``) and ``hook`` adding callbacks."""
    HookedCLI.hook = staticmethod(hook)
    return cli_main(["fit", *args], cli_class=HookedCLI)
