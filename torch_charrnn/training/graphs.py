"""A training window's forward and hand-written backward, captured once per shape as a CUDA graph
and replayed from static buffers: on a GPU the eager loop over time launches a handful of small
kernels a step, and the host cannot launch them as fast as the device runs them.

What a replay reads is copied into buffers of its own first (the window's inputs and targets, the
state carried in, dropout's and zoneout's masks); the parameters are read where they are, so the optimizer's
in-place step is seen by the next replay. What it writes (the loss, the last state, every
parameter's gradient) is written whole, over the last replay's, and the gradients are handed back
to the parameters after each replay: a graph for another shape, or a later capture, has buffers of
its own. The divergence check, clipping and the optimizer's step run after the replay, on the
device (``training/guard.py``). The arithmetic is the eager step's, kernel for kernel.

Where a graph cannot serve, ``why_not`` says why, and training runs eagerly with the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from torch_charrnn.rnn.bptt import cross_entropy, forward_manual, map_zones
from torch_charrnn.rnn.compiled import cannot_compile, compiled_cell
from torch_charrnn.training.guard import scales_loss

WARMUP = 3  # eager runs on a side stream before capture, as torch.cuda.graph's documentation asks


def why_not(model, trainer) -> str | None:
    """Why a run of ``model`` under ``trainer`` cannot replay its training windows as CUDA graphs,
    as a line for the user; None where it can. Only asked on a CUDA device with graphs on."""
    if model.hparams.bptt != "manual":
        bptt = model.hparams.bptt
        why = f"CUDA graphs replay the hand-written BPTT (`bptt` manual), and this run has `bptt` {bptt}"
    elif trainer.world_size > 1:
        why = "a run of several processes exchanges gradients during backward"
    elif trainer.accumulate_grad_batches > 1:
        why = "`accumulate_grad_batches` adds gradients over several windows"
    elif scales_loss(trainer):
        why = "`precision` 16 scales the loss from the host"
    elif torch.is_anomaly_enabled():  # Lightning's detect_anomaly, around the whole run
        why = "`detect_anomaly` checks every step on the host"
    else:
        return None
    return f"training steps run eagerly: {why}"


def window_graphs(model, trainer) -> tuple[WindowGraphs | None, list[str]]:
    """The graphs ``model``'s training windows replay from in this run (None: they run eagerly),
    and the lines that say why they cannot, or what they go without."""
    replay = replayer(model)
    if not model.hparams.cuda_graphs or replay is None:
        return None, []  # the CPU, or graphs turned off: nothing to say
    why = why_not(model, trainer)
    if why is not None:
        return None, [why]
    cell, said = model.cell, []
    if model.hparams.compile_steps:
        why = cannot_compile(model.device.type)
        cell, said = (cell, [why]) if why else (compiled_cell(cell), [])
    return WindowGraphs(model, replay, cell), said


def replayer(model) -> type | None:
    """What captures and replays ``model``'s training windows: ``CUDAGraph`` on a CUDA device; None
    elsewhere, where they run eagerly (the tests put ``EagerReplay`` here to replay on the CPU)."""
    return CUDAGraph if model.device.type == "cuda" else None


class CUDAGraph:
    """``body`` captured once as a CUDA graph after warming up on a side stream; ``replay`` runs its
    kernels again and returns the tensors the capture returned, which the kernels wrote anew."""

    def __init__(self, body: Callable[[], tuple]):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                body()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: what other threads do meanwhile (the loader pinning memory) is not captured
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = body()

    def replay(self) -> tuple:
        self.graph.replay()
        return self.outputs


class EagerReplay:
    """Runs ``body`` at every replay, as a graph runs its kernels: the same static buffers in, the
    same arithmetic. Where no CUDA device is, this stands in for ``CUDAGraph`` (the tests of
    everything around the capture run on the CPU)."""

    def __init__(self, body: Callable[[], tuple]):
        self.body = body

    def replay(self) -> tuple:
        return self.body()


class Window:
    """One shape's static buffers and its graph."""

    def __init__(self, model, cell, inputs, targets, state, masks, zones, graph_class):
        self.inputs, self.targets = inputs.clone(), targets.clone()
        self.state = tuple(s.clone() for s in state)
        self.masks = None if masks is None else [m.clone() for m in masks]
        self.zones = map_zones(zones, torch.clone)
        self.params = list(model.parameters())
        w = model.weights()
        layers, W_hy, b_y = w["layers"], w["W_hy"], w["b_y"]

        def body():
            for p in self.params:  # written whole by the backward, not added to
                p.grad = None
            logits, last = forward_manual(
                self.inputs, self.state, layers, W_hy, b_y, cell, self.masks, self.zones
            )
            loss = cross_entropy(logits, self.targets)
            # outside autocast, as Lightning runs the eager backward: after training_step returns
            with torch.autocast(self.inputs.device.type, enabled=False):
                loss.backward()
            return loss.detach(), tuple(s.detach() for s in last), [p.grad for p in self.params]

        self.graph = graph_class(body)

    def run(self, inputs, targets, state, masks, zones) -> tuple[Tensor, tuple[Tensor, ...]]:
        self.inputs.copy_(inputs)
        self.targets.copy_(targets)
        for static, s in zip(self.state, state, strict=True):
            static.copy_(s)
        for static, m in zip(self.masks or (), masks or (), strict=True):
            static.copy_(m)
        for statics, z in zip(self.zones or (), zones or (), strict=True):
            for static, m in zip(statics, z, strict=True):
                if static is not None:
                    static.copy_(m)
        loss, last, grads = self.graph.replay()
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        return loss, last


class WindowGraphs:
    """Every training window of a run, replayed from the graph of its shape (captured at its first
    window). ``graph_class``: ``CUDAGraph`` on a GPU; ``EagerReplay`` stands in for it in tests.
    ``cell``: the model's, or the same with its steps compiled (``rnn/compiled.py``)."""

    def __init__(self, model, graph_class=CUDAGraph, cell=None):
        self.model = model
        self.graph_class = graph_class
        self.cell = model.cell if cell is None else cell
        self.windows: dict[tuple, Window] = {}

    def key(self, inputs: Tensor, masks, zones) -> tuple:
        """What a graph is specific to: the shapes, autocast, and where the parameters live (a
        parameter moved or converted since the capture has new storage the graph never read)."""
        device = inputs.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        where = tuple((p.data_ptr(), p.dtype) for p in self.model.parameters())
        return (*inputs.shape, masks is None, zones is None, autocast, where)

    def run(self, inputs, targets, state, masks, zones=None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The window's loss (a tensor of its own) and last state, its gradients on the parameters;
        ``masks`` and ``zones``: dropout's and zoneout's for the window, or None."""
        key = self.key(inputs, masks, zones)
        window = self.windows.get(key)
        if window is None:
            window = Window(self.model, self.cell, inputs, targets, state, masks, zones, self.graph_class)
            self.windows[key] = window
        loss, last = window.run(inputs, targets, state, masks, zones)
        return loss.clone(), last  # the next replay writes over the graph's own
