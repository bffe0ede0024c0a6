"""The NumPy reference: hand-written BPTT, clipping and Adagrad against independent oracles."""

import numpy as np
import pytest
import torch

import reference_numpy as rn
from torch_charrnn.gradcheck import random_problem

SHAPES = [  # (V, H, B, T), the edges included
    (2, 1, 1, 1),
    (2, 3, 1, 5),
    (5, 4, 3, 6),
    (7, 1, 2, 4),
    (3, 6, 4, 1),
]


@pytest.mark.parametrize("scale", [0.5, 3.0])
@pytest.mark.parametrize(("V", "H", "B", "T"), SHAPES)
def test_numpy_bptt_matches_finite_differences(V, H, B, T, scale):
    params, h0, inputs, targets = random_problem(V, H, B, T, scale, seed=V * 100 + H * 10 + T)
    _, grads, _ = rn.loss_and_grads(params, inputs, targets, h0)
    numeric = rn.numerical_grads(params, inputs, targets, h0)
    assert set(grads) == {*rn.PARAM_NAMES, "h0"}
    for name in (*rn.PARAM_NAMES, "h0"):
        np.testing.assert_allclose(grads[name], numeric[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_numerical_grads_leaves_the_parameters_untouched():
    params, h0, inputs, targets = random_problem(4, 3, 2, 3, 1.0, seed=0)
    before = {k: v.copy() for k, v in {**params, "h0": h0}.items()}
    rn.numerical_grads(params, inputs, targets, h0)
    for k, v in {**params, "h0": h0}.items():
        np.testing.assert_array_equal(v, before[k])


def test_numpy_loss_is_torch_cross_entropy():
    params, h0, inputs, targets = random_problem(6, 4, 3, 5, 2.0, seed=1)
    logits, _ = rn.forward(params, inputs, h0)
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits).reshape(-1, 6), torch.from_numpy(targets).reshape(-1)
    )
    np.testing.assert_allclose(rn.cross_entropy(logits, targets), want.item(), rtol=1e-14)


def random_grads(rng, scale):
    shapes = {"W_xh": (5, 3), "W_hh": (3, 3), "b_h": (3,), "W_hy": (3, 5), "b_y": (5,)}
    return {k: rng.standard_normal(s) * scale for k, s in shapes.items()}


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])  # clipped hard, clipped a little, not clipped
def test_clip_grad_norm_matches_torch(max_norm):
    grads = random_grads(np.random.default_rng(0), scale=0.5)
    tensors = [torch.tensor(grads[k]) for k in rn.PARAM_NAMES]
    params = [torch.zeros_like(t, requires_grad=True) for t in tensors]
    for p, g in zip(params, tensors, strict=True):
        p.grad = g.clone()
    want_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    norm = rn.clip_grad_norm(grads, max_norm)
    np.testing.assert_allclose(norm, want_norm.item(), rtol=1e-14)
    for name, p in zip(rn.PARAM_NAMES, params, strict=True):
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-14, atol=0, err_msg=name)
    assert (norm > max_norm) == (rn.global_norm(grads) < norm)


@pytest.mark.parametrize("clip_value", [0.05, 0.5, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    grads = random_grads(np.random.default_rng(1), scale=0.5)
    params = [torch.zeros(grads[k].shape, dtype=torch.float64, requires_grad=True) for k in rn.PARAM_NAMES]
    for name, p in zip(rn.PARAM_NAMES, params, strict=True):
        p.grad = torch.tensor(grads[name])
    torch.nn.utils.clip_grad_value_(params, clip_value)
    rn.clip_grad_value(grads, clip_value)
    for name, p in zip(rn.PARAM_NAMES, params, strict=True):
        np.testing.assert_array_equal(grads[name], p.grad.numpy(), err_msg=name)


@pytest.mark.parametrize(("lr", "eps"), [(0.1, 1e-10), (0.01, 1e-3)])
def test_adagrad_step_matches_torch(lr, eps):
    rng = np.random.default_rng(2)
    params = random_grads(rng, scale=1.0)
    state = {k: np.zeros_like(v) for k, v in params.items()}
    tparams = [torch.tensor(params[k], requires_grad=True) for k in rn.PARAM_NAMES]
    opt = torch.optim.Adagrad(tparams, lr=lr, eps=eps)
    for _ in range(5):
        grads = random_grads(rng, scale=0.3)
        for name, p in zip(rn.PARAM_NAMES, tparams, strict=True):
            p.grad = torch.tensor(grads[name])
        opt.step()
        rn.adagrad_step(params, grads, state, lr, eps)
    for name, p in zip(rn.PARAM_NAMES, tparams, strict=True):
        np.testing.assert_allclose(params[name], p.detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(state[name], opt.state[p]["sum"].numpy(), rtol=1e-13, err_msg=name)


def test_init_params_follows_the_spec():
    params = rn.init_params(50, 40, np.random.default_rng(0), whh_scale=0.5, init_std=0.02)
    np.testing.assert_array_equal(params["W_hh"], 0.5 * np.eye(40))
    np.testing.assert_array_equal(params["b_h"], np.zeros(40))
    np.testing.assert_array_equal(params["b_y"], np.zeros(50))
    assert params["W_xh"].shape == (50, 40) and params["W_hy"].shape == (40, 50)
    assert abs(params["W_xh"].std() - 0.02) < 0.002 and abs(params["W_hy"].std() - 0.02) < 0.002


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
    for name in ("whh_scale", "init_std"):
        assert numpy_defaults[name].default == torch_defaults[name].default, name
    params = rn.init_params(4, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(params["W_hh"], 0.01 * np.eye(3))


@pytest.mark.parametrize("algorithm", ["Norm", "l2", ""])
def test_a_mistyped_clip_algorithm_is_refused(algorithm):
    params, h0, inputs, _ = random_problem(4, 3, 2, 3, 1.0, seed=0)
    data = np.tile(np.arange(4), 20)
    with pytest.raises(ValueError, match="must be 'norm' or 'value'"):
        rn.train(params, data, 2, 3, max_steps=1, lr=0.1, clip_algorithm=algorithm)
    with pytest.raises(ValueError, match="must be 'norm' or 'value'"):
        rn.clip_grads(rn.loss_and_grads(params, inputs, inputs, h0)[1], algorithm, 1.0)
    with pytest.raises(ValueError, match="must be 'norm' or 'value'"):
        rn.RecurrentNN({"a": 0, "b": 1}, {0: "a", 1: "b"}, 2, clip_algorithm=algorithm)
