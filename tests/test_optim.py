"""``gradviz.engine.optim`` against ``torch.optim``: SGD and Adam step for step on the same parameters and
gradient sequence, parameter groups, params without grads, zero_grad, state dicts, argument errors
(same messages), and the tutorial's frozen-resnet fine-tuning pattern."""
import copy
import warnings

import numpy as np
import pytest

import gradviz.engine as gt
from gradviz.engine import nn, optim
from gradviz.engine.models import resnet18

torch = pytest.importorskip("torch")

from torch_resnet import copy_torch_state, torch_resnet18  # noqa: E402  (needs torch)

SHAPES = [(4, 3), (3,), (2, 2, 2)]
STEPS = 5


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    return ([torch.nn.Parameter(torch.tensor(a)) for a in arrays],
            [nn.Parameter(gt.tensor(a)) for a in arrays])


def grad_sequence(steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    # varied scales, so that Adam's normalisation and AMSGrad's maximum matter
    return [[(rng.standard_normal(s) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32) for s in SHAPES]
            for _ in range(steps)]


def to_numpy(v):
    if isinstance(v, torch.Tensor):
        return v.detach().numpy()
    if isinstance(v, gt.Tensor):
        return v.detach().numpy()
    return np.asarray(v)


def assert_close_to_scale(e, t, rtol=1e-6, err_msg=""):
    """Equal to ``rtol`` relative to the tensor's own scale. Not bitwise: torch's CPU kernels fuse
    multiply-adds (``add(alpha=)``, ``lerp``, ``addcmul``) and its vectorised float32 ``sqrt`` is not
    correctly rounded (1 ulp off on ~17% of inputs with AVX512), so an element that cancels to near zero
    inside a tensor of larger values can differ by a few ulps of that tensor's scale."""
    e, t = to_numpy(e), to_numpy(t)
    assert e.shape == t.shape and e.dtype == t.dtype, err_msg
    np.testing.assert_allclose(e, t, rtol=rtol, atol=rtol * float(np.abs(t).max(initial=0.0)) + 1e-12,
                               err_msg=err_msg)


def assert_params_close(ep, tp, step, rtol=1e-6):
    for i, (e, t) in enumerate(zip(ep, tp)):
        assert_close_to_scale(e, t, rtol, f"param {i} after step {step}")


def assert_states_close(eopt, topt, ep, tp):
    for i, (e, t) in enumerate(zip(ep, tp)):
        es, ts = eopt.state[e], topt.state[t]
        assert sorted(es) == sorted(ts), i
        for k in ts:
            if ts[k] is None:
                assert es[k] is None
            else:
                assert_close_to_scale(es[k], ts[k], err_msg=f"state {k} of param {i}")


def run_both(make_opt, steps=STEPS, no_grad_at=(), param_seed=0):
    """``make_opt(lib, params)`` builds the optimizer; step both on the same gradients and compare after
    every step. ``no_grad_at``: (step, param index) pairs whose grad is None at that step."""
    tp, ep = make_params(param_seed)
    topt, eopt = make_opt(torch, tp), make_opt(gt, ep)
    for step, grads in enumerate(grad_sequence(steps)):
        for i, (t, e, g) in enumerate(zip(tp, ep, grads)):
            if (step, i) in no_grad_at:
                t.grad = e.grad = None
            else:
                t.grad, e.grad = torch.tensor(g), gt.tensor(g)
        topt.step()
        eopt.step()
        assert_params_close(ep, tp, step)
    assert_states_close(eopt, topt, ep, tp)
    return eopt, topt, ep, tp


def optimizer(lib, name):
    return getattr(lib.optim, name)


def outcome(fn, lib):
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = fn(lib)
        return value, [str(c.message) for c in caught]
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, str(e))


def same_in_both(fn):
    expected, got = outcome(fn, torch), outcome(fn, gt)
    assert got == expected
    return got


SGD_CONFIGS = [
    {},
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.5},
    {"lr": 0.1, "weight_decay": 0.05},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    {"lr": 0.05, "maximize": True},
    {"lr": 0.1, "momentum": 0.8, "dampening": 0.1, "weight_decay": 0.05, "maximize": True},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True},
]

ADAM_CONFIGS = [
    {},
    {"lr": 0.01, "betas": (0.8, 0.99)},
    {"lr": 0.01, "betas": (0.3, 0.5)},  # beta1 < 0.5: lerp's other formula
    {"lr": 0.01, "eps": 1e-3},
    {"lr": 0.01, "weight_decay": 0.1},
    {"lr": 0.01, "amsgrad": True},
    {"lr": 0.01, "maximize": True},
    {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True, "betas": (0.5, 0.9)},
    {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
]


def config_id(c):
    return ",".join(f"{k}={v}" for k, v in c.items()) or "defaults"


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=config_id)
def test_sgd_matches_torch(config):
    run_both(lambda lib, ps: lib.optim.SGD(ps, **config))


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=config_id)
def test_adam_matches_torch(config):
    run_both(lambda lib, ps: lib.optim.Adam(ps, **config))


@pytest.mark.parametrize("name,config", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.01}),
                                         ("Adam", {"lr": 0.01, "amsgrad": True})])
def test_params_without_grad_are_skipped(name, config):
    # param 2 has no grad at first (its state starts a step late), param 1 skips steps 2 and 3
    eopt, topt, ep, tp = run_both(lambda lib, ps: optimizer(lib, name)(ps, **config),
                                  no_grad_at={(0, 2), (2, 1), (3, 1)})
    if name == "Adam":
        assert [float(eopt.state[p]["step"]) for p in ep] == [5.0, 3.0, 4.0]
    # a parameter that never gets a grad is neither moved nor given state
    tp2, ep2 = make_params()
    e_opt = optimizer(gt, name)(ep2, **config)
    ep2[0].grad = gt.ones(*SHAPES[0])
    e_opt.step()
    assert ep2[1] not in e_opt.state and ep2[2] not in e_opt.state and ep2[0] in e_opt.state
    np.testing.assert_array_equal(ep2[1].detach().numpy(), tp2[1].detach().numpy())


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_param_groups_match_torch(name):
    def make(lib, ps):
        if name == "SGD":
            opt = lib.optim.SGD([{"params": ps[:1], "lr": 0.2}, {"params": ps[1], "momentum": 0.5,
                                                                  "nesterov": True}], lr=0.1, momentum=0.9)
        else:
            opt = lib.optim.Adam([{"params": ps[:1]}, {"params": [ps[1]], "lr": 0.1, "betas": (0.5, 0.9),
                                                       "amsgrad": True}], lr=0.01)
        opt.add_param_group({"params": ps[2:], "weight_decay": 0.1})
        return opt

    eopt, topt, _, _ = run_both(make)
    assert len(eopt.param_groups) == 3
    for eg, tg in zip(eopt.param_groups, topt.param_groups):
        assert {k: v for k, v in eg.items() if k != "params"} == {k: v for k, v in tg.items() if k != "params"}
        assert len(eg["params"]) == len(tg["params"])
    assert repr(eopt) == repr(topt)


def test_changing_lr_between_steps():
    def make(lib, ps):
        return lib.optim.SGD(ps, lr=0.1, momentum=0.9)

    tp, ep = make_params()
    topt, eopt = make(torch, tp), make(gt, ep)
    for step, grads in enumerate(grad_sequence()):
        for t, e, g in zip(tp, ep, grads):
            t.grad, e.grad = torch.tensor(g), gt.tensor(g)
        for opt in (topt, eopt):
            opt.param_groups[0]["lr"] = 0.1 / (step + 1)  # a scheduler's way
        topt.step()
        eopt.step()
        assert_params_close(ep, tp, step)


def test_repr_and_defaults_match_torch():
    def run(lib):
        ps = [lib.nn.Parameter(lib.ones(2)), lib.nn.Parameter(lib.ones(3))]
        sgd = lib.optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.5}], lr=0.1, momentum=0.9)
        adam = lib.optim.Adam(ps)
        return repr(sgd), repr(adam), sgd.defaults, adam.defaults

    same_in_both(run)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_zero_grad(name):
    def run(lib):
        p = lib.nn.Parameter(lib.ones(3))
        opt = getattr(lib.optim, name)([p], lr=0.1)
        (p * 2).sum().backward()
        g = p.grad
        opt.zero_grad(set_to_none=False)
        kept = (p.grad is g, p.grad.tolist())
        (p * 2).sum().backward()
        accumulated = p.grad.tolist()
        opt.zero_grad()  # default: set_to_none=True
        return kept, accumulated, p.grad

    assert same_in_both(run) == (((True, [0.0, 0.0, 0.0]), [2.0, 2.0, 2.0], None), [])


def test_step_with_closure():
    def run(lib):
        w = lib.nn.Parameter(lib.tensor([1.0, -2.0]))
        opt = lib.optim.SGD([w], lr=0.5)

        def closure():
            opt.zero_grad()
            loss = (w ** 2).sum()
            loss.backward()
            return loss

        with lib.no_grad():  # the closure still records a graph
            loss = opt.step(closure)
        return loss.item(), w.tolist()

    assert same_in_both(run) == ((5.0, [0.0, 0.0]), [])


def test_named_parameters_are_accepted_as_torch():
    def run(lib):
        m = lib.nn.Sequential(lib.nn.Linear(2, 3), lib.nn.ReLU(), lib.nn.Linear(3, 1))
        opt = lib.optim.SGD(m.named_parameters(), lr=0.1)
        m(lib.ones(4, 2)).sum().backward()
        opt.step()
        return opt.param_groups[0]["param_names"], len(opt.param_groups[0]["params"]), \
            opt.state_dict()["param_groups"][0]["param_names"]

    same_in_both(run)


@pytest.mark.parametrize("case", [
    "lr_negative", "momentum_negative", "weight_decay_negative", "nesterov_without_momentum",
    "nesterov_with_dampening", "empty", "empty_generator", "tensor_not_iterable", "set_in_group", "not_tensor",
    "non_leaf", "overlapping_groups", "group_not_dict", "duplicate_warning", "adam_lr", "adam_eps", "adam_beta0",
    "adam_beta1", "adam_weight_decay", "adam_int_betas", "load_group_count", "load_group_size",
])
def test_argument_errors_match_torch(case):
    def run(lib):
        p = lib.nn.Parameter(lib.ones(2))
        q = lib.nn.Parameter(lib.ones(3))
        optim = lib.optim
        if case == "lr_negative":
            optim.SGD([p], lr=-1)
        elif case == "momentum_negative":
            optim.SGD([p], lr=0.1, momentum=-0.5)
        elif case == "weight_decay_negative":
            optim.SGD([p], lr=0.1, weight_decay=-1e-4)
        elif case == "nesterov_without_momentum":
            optim.SGD([p], lr=0.1, nesterov=True)
        elif case == "nesterov_with_dampening":
            optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
        elif case == "empty":
            optim.SGD([], lr=0.1)
        elif case == "empty_generator":
            optim.Adam(lib.nn.ReLU().parameters())
        elif case == "tensor_not_iterable":
            optim.SGD(p, lr=0.1)
        elif case == "set_in_group":
            optim.SGD([{"params": {p}}], lr=0.1)
        elif case == "not_tensor":
            optim.SGD([p, 1.5], lr=0.1)
        elif case == "non_leaf":
            optim.SGD([p * 2], lr=0.1)
        elif case == "overlapping_groups":
            optim.SGD([{"params": [p, q]}, {"params": [q]}], lr=0.1)
        elif case == "group_not_dict":
            optim.SGD([p], lr=0.1).add_param_group([q])
        elif case == "duplicate_warning":
            return len(optim.SGD([p, p], lr=0.1).param_groups[0]["params"])
        elif case == "adam_lr":
            optim.Adam([p], lr=-1)
        elif case == "adam_eps":
            optim.Adam([p], eps=-1e-8)
        elif case == "adam_beta0":
            optim.Adam([p], betas=(1.0, 0.999))
        elif case == "adam_beta1":
            optim.Adam([p], betas=(0.9, -0.1))
        elif case == "adam_weight_decay":
            optim.Adam([p], weight_decay=-1)
        elif case == "adam_int_betas":
            optim.Adam([p], betas=(0, 0.9))
        elif case == "load_group_count":
            optim.SGD([p], lr=0.1).load_state_dict(optim.SGD([{"params": [p]}, {"params": [q]}], lr=0.1).state_dict())
        elif case == "load_group_size":
            optim.SGD([p], lr=0.1).load_state_dict(optim.SGD([p, q], lr=0.1).state_dict())
        return "no error"

    result = same_in_both(run)
    if case == "lr_negative":
        assert result == ("ValueError", "Invalid learning rate: -1")
    elif case == "duplicate_warning":
        assert "duplicate parameters" in result[1][0]
    else:
        assert result[0].endswith("Error"), result


@pytest.mark.parametrize("name,config", [("SGD", {"lr": 0.1, "momentum": 0.9}),
                                         ("Adam", {"lr": 0.01, "amsgrad": True})])
def test_state_dict_round_trip_matches_torch(name, config):
    grads = grad_sequence(6)
    tp, ep = make_params()
    topt, eopt = optimizer(torch, name)(tp, **config), optimizer(gt, name)(ep, **config)
    for step in range(3):
        for t, e, g in zip(tp, ep, grads[step]):
            t.grad, e.grad = torch.tensor(g), gt.tensor(g)
        topt.step()
        eopt.step()
    tsd, esd = topt.state_dict(), eopt.state_dict()
    assert esd["param_groups"] == tsd["param_groups"]
    assert sorted(esd["state"]) == sorted(tsd["state"]) == [0, 1, 2]
    for i in tsd["state"]:
        assert sorted(esd["state"][i]) == sorted(tsd["state"][i])
        for k, v in tsd["state"][i].items():
            assert_close_to_scale(esd["state"][i][k], v, err_msg=f"state {k} of param {i}")
    # a fresh optimizer over copies of the parameters continues exactly where the first one was
    tp2 = [torch.nn.Parameter(p.detach().clone()) for p in tp]
    ep2 = [nn.Parameter(gt.tensor(p.detach().numpy())) for p in ep]
    topt2, eopt2 = optimizer(torch, name)(tp2, lr=1.0), optimizer(gt, name)(ep2, lr=1.0)
    topt2.load_state_dict(copy.deepcopy(tsd))  # torch would alias tsd's tensors (as if saved and loaded)
    eopt2.load_state_dict(esd)  # the engine copies them
    for a, b in zip(ep, ep2):
        for k, v in eopt.state[a].items():
            if isinstance(v, gt.Tensor) and v.ndim:
                assert not np.shares_memory(v.numpy(), eopt2.state[b][k].numpy())
    assert eopt2.param_groups[0]["lr"] == config["lr"]
    for step in range(3, 6):
        for ps, lib in ((tp, torch), (tp2, torch), (ep, gt), (ep2, gt)):
            for p, g in zip(ps, grads[step]):
                p.grad = lib.tensor(g)
        for opt in (topt, topt2, eopt, eopt2):
            opt.step()
        assert_params_close(ep2, tp2, step)
        for a, b in zip(ep2, ep):  # the loaded state is a copy, used the same way
            np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_frozen_resnet_finetunes_only_the_new_fc():
    """The tutorial's pattern: freeze everything, replace fc with nn.Linear(512, 10), optimise fc only."""
    torch.manual_seed(0)
    gt.manual_seed(0)
    tm, em = torch_resnet18(), resnet18()
    copy_torch_state(tm, em)
    for model, lib in ((tm, torch), (em, gt)):
        for param in model.parameters():
            param.requires_grad = False
        model.fc = lib.nn.Linear(512, 10)
    em.fc.load_state_dict({k: gt.tensor(v.numpy()) for k, v in tm.fc.state_dict().items()})
    assert [n for n, p in em.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    assert sum(p.numel() for p in em.parameters() if p.requires_grad) == 512 * 10 + 10
    topt = torch.optim.SGD(tm.fc.parameters(), lr=1e-2, momentum=0.9)
    eopt = optim.SGD(em.fc.parameters(), lr=1e-2, momentum=0.9)
    frozen_before = {n: p.detach().numpy().copy() for n, p in em.named_parameters() if not n.startswith("fc.")}
    fc_before = em.fc.weight.detach().numpy().copy()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    y = np.array([1, 7])
    for _ in range(2):
        losses = []
        for model, opt, lib in ((tm, topt, torch), (em, eopt, gt)):
            opt.zero_grad()
            loss = lib.nn.CrossEntropyLoss()(model(lib.tensor(x)), lib.tensor(y))
            assert loss.requires_grad
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[1] - losses[0]) < 1e-5 * abs(losses[0])
        assert [n for n, p in em.named_parameters() if p.grad is not None] == ["fc.weight", "fc.bias"]
        np.testing.assert_allclose(em.fc.weight.detach().numpy(), tm.fc.weight.detach().numpy(), rtol=1e-5,
                                   atol=1e-7)
        np.testing.assert_allclose(em.fc.bias.detach().numpy(), tm.fc.bias.detach().numpy(), rtol=1e-5, atol=1e-7)
    for n, p in em.named_parameters():
        if not n.startswith("fc."):
            np.testing.assert_array_equal(p.detach().numpy(), frozen_before[n], err_msg=n)
            assert p.grad is None, n
    assert not np.array_equal(em.fc.weight.detach().numpy(), fc_before)
    assert set(map(id, eopt.state)) == {id(em.fc.weight), id(em.fc.bias)}
    # in train mode BatchNorm's running statistics still move, as in torch
    tb = dict(tm.named_buffers())
    for n, b in em.named_buffers():
        np.testing.assert_allclose(b.numpy(), tb[n].numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
