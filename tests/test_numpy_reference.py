"""The NumPy reference: hand-written BPTT, clipping and Adagrad against independent oracles."""

import numpy as np
import pytest
import torch
from conftest import CELL_DEPTHS

import reference_numpy as rn
from torch_charrnn.oracle import random_problem

SHAPES = [  # (V, H, B, T), the edges included
    (2, 1, 1, 1),
    (2, 3, 1, 5),
    (5, 4, 3, 6),
    (7, 1, 2, 4),
    (3, 6, 4, 1),
]


@pytest.mark.parametrize("scale", [0.5, 3.0])
@pytest.mark.parametrize(("V", "H", "B", "T"), SHAPES)
@pytest.mark.parametrize(("cell", "L"), CELL_DEPTHS)
def test_numpy_bptt_matches_finite_differences(cell, L, V, H, B, T, scale):
    """Every parameter of every layer and the initial state (h, and c for the LSTM)."""
    params, state, inputs, targets = random_problem(V, H, B, T, scale, V * 100 + H * 10 + T, cell, L)
    _, grads, _ = rn.loss_and_grads(params, inputs, targets, state, cell)
    got = {**rn.named_arrays(grads), **rn.state_names(grads["state"], cell)}
    numeric = rn.numerical_grads(params, inputs, targets, state, cell)
    assert set(got) == set(numeric) and len(got) == len(rn.named_arrays(params)) + len(state)
    for name, g in got.items():  # gradcheck's tolerance: the difference quotient's truncation error
        np.testing.assert_allclose(g, numeric[name], rtol=1e-5, atol=1e-8, err_msg=name)


def test_numerical_grads_leaves_the_parameters_untouched():
    params, state, inputs, targets = random_problem(4, 3, 2, 3, 1.0, 0, "lstm", 2)
    before = rn.cast(params, np.float64)
    rn.numerical_grads(params, inputs, targets, state, "lstm")
    for name, v in rn.named_arrays(params).items():
        np.testing.assert_array_equal(v, rn.named_arrays(before)[name])


def test_numpy_loss_is_torch_cross_entropy():
    params, state, inputs, targets = random_problem(6, 4, 3, 5, 2.0, 1)
    logits, _, _ = rn.forward(params, inputs, state)
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits).reshape(-1, 6), torch.from_numpy(targets).reshape(-1)
    )
    np.testing.assert_allclose(rn.cross_entropy(logits, targets), want.item(), rtol=1e-14)


def random_grads(rng, scale):
    """Gradients shaped like a 2-layer GRU's (V=5, H=3), every one of them by name."""
    like = rn.init_params(5, 3, rng, cell="gru", num_layers=2)
    grads = {
        "layers": [{k: rng.standard_normal(v.shape) * scale for k, v in p.items()} for p in like["layers"]],
        **{k: rng.standard_normal(like[k].shape) * scale for k in ("W_hy", "b_y")},
    }
    return grads, list(rn.named_arrays(grads))


def torch_leaves(grads, names):
    """Zero float64 parameters whose .grad holds the NumPy gradients, in ``names`` order."""
    params = []
    for name in names:
        p = torch.zeros(rn.named_arrays(grads)[name].shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(rn.named_arrays(grads)[name])
        params.append(p)
    return params


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])  # clipped hard, clipped a little, not clipped
def test_clip_grad_norm_matches_torch(max_norm):
    grads, names = random_grads(np.random.default_rng(0), scale=0.5)
    params = torch_leaves(grads, names)
    want_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    norm = rn.clip_grad_norm(grads, max_norm)
    np.testing.assert_allclose(norm, want_norm.item(), rtol=1e-14)
    for name, p in zip(names, params, strict=True):
        np.testing.assert_allclose(
            rn.named_arrays(grads)[name], p.grad.numpy(), rtol=1e-14, atol=0, err_msg=name
        )
    assert (norm > max_norm) == (rn.global_norm(grads) < norm)


@pytest.mark.parametrize("clip_value", [0.05, 0.5, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    grads, names = random_grads(np.random.default_rng(1), scale=0.5)
    params = torch_leaves(grads, names)
    torch.nn.utils.clip_grad_value_(params, clip_value)
    rn.clip_grad_value(grads, clip_value)
    for name, p in zip(names, params, strict=True):
        np.testing.assert_array_equal(rn.named_arrays(grads)[name], p.grad.numpy(), err_msg=name)


@pytest.mark.parametrize(("lr", "eps"), [(0.1, 1e-10), (0.01, 1e-3)])
def test_adagrad_step_matches_torch(lr, eps):
    rng = np.random.default_rng(2)
    params, names = random_grads(rng, scale=1.0)
    state = {}
    tparams = [torch.tensor(rn.named_arrays(params)[k], requires_grad=True) for k in names]
    opt = torch.optim.Adagrad(tparams, lr=lr, eps=eps)
    for _ in range(5):
        grads, _ = random_grads(rng, scale=0.3)
        for name, p in zip(names, tparams, strict=True):
            p.grad = torch.tensor(rn.named_arrays(grads)[name])
        opt.step()
        rn.adagrad_step(params, grads, state, lr, eps)
    for name, p in zip(names, tparams, strict=True):
        got = rn.named_arrays(params)[name]
        np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(state[name], opt.state[p]["sum"].numpy(), rtol=1e-13, err_msg=name)


def run_both(step, optimizer, steps=6):
    """``steps`` updates of the NumPy ``step`` and of ``optimizer`` (a torch.optim factory) on the
    same random gradients; returns the names, the NumPy parameters and state, the torch ones."""
    rng = np.random.default_rng(3)
    params, names = random_grads(rng, scale=1.0)
    state = {}
    tparams = [torch.tensor(rn.named_arrays(params)[k], requires_grad=True) for k in names]
    opt = optimizer(tparams)
    for _ in range(steps):
        grads, _ = random_grads(rng, scale=0.3)
        for name, p in zip(names, tparams, strict=True):
            p.grad = torch.tensor(rn.named_arrays(grads)[name])
        opt.step()
        step(params, grads, state)
    for name, p in zip(names, tparams, strict=True):
        got = rn.named_arrays(params)[name]
        np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=name)
    return names, state, tparams, opt


@pytest.mark.parametrize(("lr", "betas", "eps"), [(1e-3, (0.9, 0.999), 1e-8), (2e-2, (0.5, 0.9), 1e-3)])
def test_adam_step_matches_torch(lr, betas, eps):
    names, state, tparams, opt = run_both(
        lambda p, g, s: rn.adam_step(p, g, s, lr, betas, eps), lambda t: torch.optim.Adam(t, lr, betas, eps)
    )
    assert state["step"] == 6
    for name, p in zip(names, tparams, strict=True):
        m, v = state[name]
        np.testing.assert_allclose(m, opt.state[p]["exp_avg"].numpy(), rtol=1e-13, err_msg=name)
        np.testing.assert_allclose(v, opt.state[p]["exp_avg_sq"].numpy(), rtol=1e-13, err_msg=name)


@pytest.mark.parametrize(("lr", "alpha", "eps"), [(1e-2, 0.99, 1e-8), (3e-3, 0.9, 1e-4)])
def test_rmsprop_step_matches_torch(lr, alpha, eps):
    names, state, tparams, opt = run_both(
        lambda p, g, s: rn.rmsprop_step(p, g, s, lr, alpha, eps),
        lambda t: torch.optim.RMSprop(t, lr, alpha, eps),
    )
    for name, p in zip(names, tparams, strict=True):
        np.testing.assert_allclose(state[name], opt.state[p]["square_avg"].numpy(), rtol=1e-13, err_msg=name)


def test_init_params_draws_identity_recurrence_small_input_and_zero_biases():
    params = rn.init_params(50, 40, np.random.default_rng(0), whh_scale=0.5, init_std=0.02, num_layers=2)
    first, second = params["layers"]
    np.testing.assert_array_equal(first["W_hh"], 0.5 * np.eye(40))
    np.testing.assert_array_equal(first["b_h"], np.zeros(40))
    np.testing.assert_array_equal(params["b_y"], np.zeros(50))
    assert first["W_xh"].shape == (50, 40) and second["W_xh"].shape == (40, 40)
    assert params["W_hy"].shape == (40, 50)
    assert abs(first["W_xh"].std() - 0.02) < 0.002 and abs(params["W_hy"].std() - 0.02) < 0.002


@pytest.mark.parametrize(("cell", "gates", "extra"), [("gru", 3, {"b_hn"}), ("lstm", 4, set())])
def test_gated_cells_start_from_pytorchs_uniform_init(cell, gates, extra):
    H = 64
    params = rn.init_params(30, H, np.random.default_rng(0), cell=cell, num_layers=2, forget_bias=1.0)
    for l, p in enumerate(params["layers"]):
        assert set(p) == {"W_xh", "W_hh", "b_h"} | extra
        assert p["W_xh"].shape == (30 if l == 0 else H, gates * H) and p["W_hh"].shape == (H, gates * H)
        assert np.abs(p["W_hh"]).max() <= H**-0.5 and abs(p["W_hh"].std() - H**-0.5 / 3**0.5) < 0.005
    if cell == "lstm":  # the forget gate's bias block starts at forget_bias (+ the uniform draw)
        b_f = params["layers"][0]["b_h"][H : 2 * H]
        assert np.all(np.abs(b_f - 1.0) <= H**-0.5)


def test_greedy_pick_is_argmax_and_top_k_never_leaves_the_top_k():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((64, 10))
    np.testing.assert_array_equal(rn.pick(logits, rng, temperature=0), logits.argmax(-1))
    top3 = np.argsort(logits, axis=-1)[:, -3:]
    for _ in range(20):
        picked = rn.pick(logits, rng, top_k=3)
        assert all(p in row for p, row in zip(picked, top3, strict=True))


def test_pick_draws_from_the_softmax():
    rng = np.random.default_rng(4)
    logits = np.log(np.array([[0.1, 0.2, 0.7]]))
    draws = np.concatenate([rn.pick(logits, rng) for _ in range(20000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / draws.size, [0.1, 0.2, 0.7], atol=0.015)


def test_numpy_and_torch_initialise_with_the_same_defaults():
    import inspect

    from torch_charrnn import CharRNN

    numpy_defaults = inspect.signature(rn.init_params).parameters
    torch_defaults = inspect.signature(CharRNN).parameters
    for name in ("cell", "num_layers", "whh_scale", "init_std", "forget_bias"):
        assert numpy_defaults[name].default == torch_defaults[name].default, name
    params = rn.init_params(4, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(params["layers"][0]["W_hh"], 0.01 * np.eye(3))


@pytest.mark.parametrize("algorithm", ["Norm", "l2", ""])
def test_a_mistyped_clip_algorithm_is_refused(algorithm):
    params, state, inputs, _ = random_problem(4, 3, 2, 3, 1.0, 0)
    data = np.tile(np.arange(4), 20)
    with pytest.raises(ValueError, match="must be 'norm' or 'value'"):
        rn.train(params, data, 2, 3, max_steps=1, lr=0.1, clip_algorithm=algorithm)
    with pytest.raises(ValueError, match="must be 'norm' or 'value'"):
        rn.clip_grads(rn.loss_and_grads(params, inputs, inputs, state)[1], algorithm, 1.0)
    with pytest.raises(ValueError, match="must be 'norm' or 'value'"):
        rn.RecurrentNN({"a": 0, "b": 1}, {0: "a", 1: "b"}, 2, clip_algorithm=algorithm)


def test_warmup_cosine_matches_the_torch_scheduler_every_step():
    from torch_charrnn.training.schedules import WarmupCosine

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    sched = WarmupCosine(opt, total_steps=30, warmup_steps=5, final_lr_ratio=0.1)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [0.2 * rn.warmup_cosine(s, 30, 5, 0.1) for s in range(40)]
    np.testing.assert_allclose(lrs, want, rtol=1e-12)
    assert lrs[0] == pytest.approx(0.2 / 5) and lrs[4] == pytest.approx(0.2)  # warmup
    assert lrs[30] == lrs[39] == pytest.approx(0.02)  # the end of the decay, and flat after it
    assert all(a >= b for a, b in zip(lrs[4:31], lrs[5:31], strict=False)), "decays monotonically"


def test_the_numpy_bptt_reads_function_by_function_like_torchs():
    """reference_numpy/bptt.py's docstring says it mirrors torch's by name and order, and lists
    exactly where they differ: this holds both to it."""
    import inspect

    import reference_numpy.bptt as numpy_bptt
    from torch_charrnn.rnn import bptt as torch_bptt
    from torch_charrnn.rnn import weight_grads
    from torch_charrnn.rnn.cells import common

    def functions(module):
        return [
            n for n, f in vars(module).items() if inspect.isfunction(f) and f.__module__ == module.__name__
        ]

    elsewhere = {
        "input_share": common,
        "input_share_backward": common,
        "input_weight_grads": weight_grads,
        "recurrent_weight_grad": weight_grads,
    }
    numpy_only = {"log_softmax", "forward", "loss_and_grads"}
    torch_only = {
        *("forward_autograd", "flatten", "unflatten", "forward_manual"),
        *("dropout_masks", "zoneout_masks", "bernoulli", "hashed_lanes", "map_zones"),
    }
    ours = [n for n in functions(numpy_bptt) if n not in numpy_only and n not in elsewhere]
    assert ours == [n for n in functions(torch_bptt) if n not in torch_only]
    assert all(name in functions(module) for name, module in elsewhere.items())
    assert [n for n in functions(numpy_bptt) if n in elsewhere] == list(elsewhere)  # in torch's order too
    assert set(numpy_bptt.Tape._fields) == set(torch_bptt.Tape._fields) - {"steps", "kernel"}
