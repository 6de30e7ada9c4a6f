"""``gradviz.engine.nn`` against ``torch.nn``: registration and traversal, train/eval, zero_grad, state
dicts (keys, round trips, error texts), hooks, containers, default initialisation, and every layer's
outputs and gradients with the same weights."""
import copy
import inspect
import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import gradviz.engine as gt
from gradviz.engine import nn
from gradviz.engine.models import resnet18

torch = pytest.importorskip("torch")

from torch_resnet import copy_torch_state, torch_resnet18  # noqa: E402  (needs torch)


# -- helpers ----------------------------------------------------------------------------------------
def outcome(fn, lib):
    """``fn(lib)``'s value, or its exception as ``(type name, message)``: comparable across libraries."""
    try:
        return fn(lib)
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, str(e))


def same_in_both(fn):
    """Run ``fn`` with torch and with the engine; return both outcomes after asserting they are equal."""
    expected, got = outcome(fn, torch), outcome(fn, gt)
    assert got == expected
    return got


def names(pairs):
    return [n for n, _ in pairs]


def shapes(pairs):
    return [(n, tuple(t.shape)) for n, t in pairs]


def small_net(lib):
    """One class of each kind, nested, with BatchNorm buffers and a parameter-less module."""
    nn_ = lib.nn

    class Net(nn_.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn_.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn_.BatchNorm2d(8)
            self.relu = nn_.ReLU()
            self.pool = nn_.MaxPool2d(2)
            self.features = nn_.Sequential(nn_.Conv2d(8, 4, 3, bias=False), nn_.BatchNorm2d(4), nn_.ReLU())
            self.avgpool = nn_.AdaptiveAvgPool2d((1, 1))
            self.flatten = nn_.Flatten()
            self.head = nn_.Sequential(OrderedDict([("drop", nn_.Dropout(0.25)), ("fc", nn_.Linear(4, 5))]))

        def forward(self, x):
            x = self.pool(self.relu(self.bn1(self.conv1(x))))
            return self.head(self.flatten(self.avgpool(self.features(x))))

    return Net()


def tensors(x, requires_grad=False):
    """The same float32 values as a torch tensor and an engine tensor."""
    x = np.asarray(x, dtype=np.float32)
    return torch.tensor(x, requires_grad=requires_grad), gt.tensor(x, requires_grad=requires_grad)


def assert_close(engine_t, torch_t, rtol=1e-5, atol=1e-6, what=""):
    e = engine_t.detach().numpy() if isinstance(engine_t, gt.Tensor) else np.asarray(engine_t)
    t = torch_t.detach().numpy()
    assert e.shape == t.shape, what
    np.testing.assert_allclose(e, t, rtol=rtol, atol=atol, err_msg=what)


def compare_forward_backward(tmod, emod, x, rtol=1e-5, atol=1e-5, seed=0):
    """Same weights in ``tmod`` and ``emod``: same output, input grad and parameter grads."""
    xt, xe = tensors(x, requires_grad=True)
    ot, oe = tmod(xt), emod(xe)
    assert tuple(oe.shape) == tuple(ot.shape)
    assert_close(oe, ot, rtol, atol, "output")
    w = np.random.default_rng(seed).standard_normal(tuple(ot.shape)).astype(np.float32)
    (ot * torch.from_numpy(w)).sum().backward()
    (oe * gt.from_numpy(w)).sum().backward()
    assert_close(xe.grad, xt.grad, rtol, atol, "input grad")
    tp, ep = list(tmod.named_parameters()), list(emod.named_parameters())
    assert names(ep) == names(tp)
    for (n, pe), (_, pt) in zip(ep, tp):
        if pt.grad is None:
            assert pe.grad is None, n
        else:
            assert_close(pe.grad, pt.grad, rtol, atol, n)
    return ot, oe


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def resnets():
    torch.manual_seed(0)
    gt.manual_seed(0)
    return torch_resnet18(), resnet18()


# -- registration and traversal -------------------------------------------------------------------
def test_small_net_names_and_shapes_match_torch():
    tm, em = small_net(torch), small_net(gt)
    assert shapes(em.named_parameters()) == shapes(tm.named_parameters())
    assert shapes(em.named_buffers()) == shapes(tm.named_buffers())
    assert names(em.named_modules()) == names(tm.named_modules())
    assert names(em.named_children()) == names(tm.named_children())
    assert [type(m).__name__ for m in em.modules()] == [type(m).__name__ for m in tm.modules()]
    assert [type(m).__name__ for m in em.children()] == [type(m).__name__ for m in tm.children()]
    assert len(list(em.parameters())) == len(list(tm.parameters()))
    assert names(em.named_parameters(prefix="net")) == names(tm.named_parameters(prefix="net"))
    assert names(em.named_modules(prefix="net")) == names(tm.named_modules(prefix="net"))
    assert names(em.named_parameters(recurse=False)) == names(tm.named_parameters(recurse=False)) == []
    assert names(em.head.named_parameters(recurse=False)) == []
    assert names(em.conv1.named_parameters(recurse=False)) == ["weight", "bias"]
    assert inspect.isgenerator(em.parameters()) and inspect.isgenerator(em.named_modules())


def test_repr_matches_torch(resnets):
    assert repr(small_net(gt)) == repr(small_net(torch))
    tm, em = resnets
    assert repr(em) == repr(tm)

    def layers(lib):
        n = lib.nn
        return repr(n.Sequential(
            n.Dropout(0.2), n.Dropout(0.1, inplace=True), n.Flatten(0, 2), n.Softmax(dim=1), n.LogSoftmax(1),
            n.Identity(), n.Sigmoid(), n.Tanh(), n.MSELoss(), n.CrossEntropyLoss(), n.NLLLoss(),
            n.AdaptiveAvgPool2d(3), n.MaxPool2d(2), n.MaxPool2d(3, 1, 1), n.Linear(2, 3, bias=False),
            n.Conv2d(1, 2, 3, padding=1, bias=False), n.Conv2d(1, 2, (3, 1), stride=(2, 1)),
            n.Conv2d(1, 2, 3, padding="same"), n.BatchNorm1d(3), n.BatchNorm2d(3, affine=False),
            n.BatchNorm2d(3, momentum=None, track_running_stats=False), n.BatchNorm2d(3, bias=False),
            n.ReLU(inplace=True), n.ModuleList([n.ReLU(), n.ReLU(), n.Linear(1, 1)])))

    same_in_both(layers)
    same_in_both(lambda lib: repr(lib.nn.ModuleList()))


def test_replacing_a_layer_replaces_it_and_its_parameters_in_place(resnets):
    _, em = resnets
    em = copy.deepcopy(em)
    old_fc = em.fc
    before = names(em.named_parameters())
    em.fc = nn.Linear(512, 10)
    assert em.fc is not old_fc and tuple(em.fc.weight.shape) == (10, 512)
    assert names(em.named_parameters()) == before  # same names, same order
    params = dict(em.named_parameters())
    assert params["fc.weight"] is em.fc.weight and params["fc.bias"] is em.fc.bias
    assert all(p is not old_fc.weight and p is not old_fc.bias for p in em.parameters())
    assert sum(p.numel() for p in em.parameters()) == 11_689_512 - 1000 * 513 + 10 * 513
    assert tuple(em.eval()(gt.randn(1, 3, 32, 32)).shape) == (1, 10)


def test_replacing_keeps_registration_order_as_torch():
    # torch keeps a replaced module/parameter at its place: named_parameters order is unchanged.
    def replace_first(lib):
        m = small_net(lib)
        m.conv1 = lib.nn.Conv2d(3, 8, 5)
        m.bn1.weight = lib.nn.Parameter(lib.ones(8))
        m.features[0] = lib.nn.Conv2d(8, 4, 1)
        return shapes(m.named_parameters()), names(m.named_children())

    same_in_both(replace_first)


def test_delete_and_assign_none_as_torch():
    def delete(lib):
        m = small_net(lib)
        del m.head
        del m.conv1.bias
        return names(m.named_parameters()), list(m.state_dict()), hasattr(m, "head"), repr(m.conv1)

    same_in_both(delete)
    same_in_both(lambda lib: small_net(lib).head2)

    def assign_none(lib):
        m = small_net(lib)
        m.head = None
        m.conv1.bias = None
        m.bn1.running_mean = None
        return (names(m.named_parameters()), list(m.state_dict()), names(m.named_children()), m.head,
                m.conv1.bias, repr(m).count("head"))

    same_in_both(assign_none)

    def buffer_replace(lib):
        m = lib.nn.BatchNorm2d(2)
        m.running_mean = lib.ones(2)  # a plain tensor assigned to a buffer's name stays a buffer
        return names(m.named_buffers()), m.running_mean.tolist()

    same_in_both(buffer_replace)


@pytest.mark.parametrize("case", [
    "tensor_as_parameter", "int_as_module", "int_as_buffer", "param_dot", "param_empty", "param_exists",
    "param_not_parameter", "buffer_dot", "buffer_exists", "buffer_not_tensor", "module_not_module",
    "module_dot", "module_empty", "module_exists", "module_before_init", "param_before_init", "buffer_before_init",
    "missing_attribute", "init_kwargs", "init_args", "get_submodule", "get_submodule_missing", "get_parameter",
    "get_parameter_not_param",
    "train_not_bool",
])
def test_registration_errors_match_torch(case):
    def run(lib):
        n = lib.nn
        m = n.Linear(2, 2)
        if case == "tensor_as_parameter":
            m.weight = lib.zeros(2, 2)
        elif case == "int_as_module":
            s = n.Sequential(n.ReLU())
            setattr(s, "0", 3)
        elif case == "int_as_buffer":
            b = n.BatchNorm2d(2)
            b.running_mean = 3
        elif case == "param_dot":
            m.register_parameter("a.b", None)
        elif case == "param_empty":
            m.register_parameter("", None)
        elif case == "param_exists":
            m.extra = 1
            m.register_parameter("extra", None)
        elif case == "param_not_parameter":
            m.register_parameter("p", lib.zeros(2))
        elif case == "buffer_dot":
            m.register_buffer("a.b", None)
        elif case == "buffer_exists":
            m.register_buffer("weight", lib.zeros(2))
        elif case == "buffer_not_tensor":
            m.register_buffer("b", [1.0])
        elif case == "module_not_module":
            m.add_module("x", 3)
        elif case == "module_dot":
            m.add_module("x.y", n.ReLU())
        elif case == "module_empty":
            m.add_module("", n.ReLU())
        elif case == "module_exists":
            m.add_module("weight", n.ReLU())
        elif case in ("module_before_init", "param_before_init", "buffer_before_init"):
            class Early(n.Module):
                def __init__(self):
                    if case == "module_before_init":
                        self.layer = n.ReLU()
                    elif case == "param_before_init":
                        self.p = n.Parameter(lib.ones(1))
                    else:
                        self.register_buffer("b", lib.ones(1))
                    super().__init__()
            Early()
        elif case == "missing_attribute":
            return m.nothing
        elif case == "init_kwargs":
            n.Module(foo=1)
        elif case == "init_args":
            n.Module(1, 2)
        elif case == "get_submodule":
            return type(small_net(lib).get_submodule("head.fc")).__name__
        elif case == "get_submodule_missing":
            return small_net(lib).get_submodule("head.nothing")
        elif case == "get_parameter":
            return tuple(small_net(lib).get_parameter("features.0.weight").shape)
        elif case == "get_parameter_not_param":
            return small_net(lib).get_parameter("bn1.running_mean")
        elif case == "train_not_bool":
            m.train(1)
        return "no error"

    result = same_in_both(run)
    if case not in ("get_submodule", "get_parameter"):
        assert isinstance(result, tuple) and result[0].endswith("Error"), result


def test_shared_modules_and_parameters_as_torch():
    def shared(lib):
        n = lib.nn
        lin = n.Linear(2, 2)
        m = n.Sequential(lin, n.ReLU(), lin)
        return (names(m.named_parameters()), names(m.named_modules()), list(m.state_dict()),
                names(m.named_parameters(remove_duplicate=False)), names(m.named_modules(remove_duplicate=False)),
                names(m.named_children()))

    same_in_both(shared)


def test_non_persistent_buffers_stay_out_of_state_dict():
    def nonpersistent(lib):
        m = lib.nn.Linear(2, 2)
        m.register_buffer("scale", lib.ones(2), persistent=False)
        m.register_buffer("shift", lib.zeros(2))
        return list(m.state_dict()), names(m.named_buffers())

    same_in_both(nonpersistent)


def test_train_eval_propagate():
    em = small_net(gt)
    assert em.training and all(m.training for m in em.modules())
    assert em.eval() is em
    assert not any(m.training for m in em.modules())
    em.head.train()
    assert [m.training for m in em.modules()] == [False] * 11 + [True] * 3
    assert em.train() is em and all(m.training for m in em.modules())
    em.train(False)
    assert not any(m.training for m in em.modules())

    # train() reaches children through their own train(), as in torch
    calls = []

    class Logged(nn.ReLU):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(mode)

    s = nn.Sequential(nn.Linear(1, 1), nn.Sequential(Logged()))
    s.eval()
    s.train()
    assert calls == [False, True]


def test_dropout_and_batchnorm_follow_training_flag():
    gt.manual_seed(0)
    m = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(3))
    x = gt.randn(64, 3)
    m.eval()
    out = m(x)
    np.testing.assert_allclose(out.detach().numpy(), x.numpy() / np.sqrt(1 + 1e-5), rtol=1e-6)
    assert int(m[1].num_batches_tracked) == 0
    m.train()
    m(x)
    assert int(m[1].num_batches_tracked) == 1


def test_zero_grad_sets_to_none_by_default():
    assert inspect.signature(nn.Module.zero_grad).parameters["set_to_none"].default is True
    assert inspect.signature(torch.nn.Module.zero_grad).parameters["set_to_none"].default is True

    def run(lib):
        m = lib.nn.Linear(3, 2)
        m(lib.ones(4, 3)).sum().backward()
        had = [p.grad is not None for p in m.parameters()]
        g = m.weight.grad
        m.zero_grad(set_to_none=False)
        kept = m.weight.grad is g
        zeros = [p.grad.abs().sum().item() for p in m.parameters()]
        m(lib.ones(4, 3)).sum().backward()
        m.zero_grad()
        return had, kept, zeros, [p.grad for p in m.parameters()]

    assert same_in_both(run) == ([True, True], True, [0.0, 0.0], [None, None])


def test_requires_grad_on_modules():
    def run(lib):
        m = small_net(lib)
        assert m.requires_grad_(False) is m
        off = [p.requires_grad for p in m.parameters()]
        m.head.requires_grad_()
        on = names((n, p) for n, p in m.named_parameters() if p.requires_grad)
        out = m(lib.ones(2, 3, 8, 8))
        out.sum().backward()
        return off, on, names((n, p) for n, p in m.named_parameters() if p.grad is not None)

    off, on, with_grad = same_in_both(run)
    assert not any(off) and on == with_grad == ["head.fc.weight", "head.fc.bias"]


def test_forward_hooks_as_torch():
    def run(lib):
        n = lib.nn
        m = n.Sequential(n.Linear(2, 3), n.ReLU(), n.Linear(3, 1))
        log = []
        handles = [
            m[0].register_forward_pre_hook(lambda mod, args: log.append(("pre", type(args).__name__, len(args)))),
            m[0].register_forward_hook(lambda mod, args, out: log.append(("fwd", tuple(args[0].shape),
                                                                          tuple(out.shape)))),
            m[0].register_forward_hook(lambda mod, args, out: log.append(("first",)), prepend=True),
            m[2].register_forward_hook(lambda mod, args, out: out * 0),  # replaces the output
            m[1].register_forward_pre_hook(lambda mod, args: args[0] * 0),  # a non-tuple becomes (value,)
        ]
        out1 = m(lib.ones(4, 2)).detach().abs().sum().item()
        for h in handles:
            h.remove()
        handles[0].remove()  # twice is fine
        out2 = m(lib.ones(4, 2)).detach().abs().sum().item() > 0
        kw = []
        h = m[0].register_forward_hook(lambda mod, args, kwargs, out: kw.append(sorted(kwargs)), with_kwargs=True)
        m[0](input=lib.ones(1, 2))
        h.remove()
        with m[0].register_forward_hook(lambda *a: log.append("ctx")):
            m(lib.ones(1, 2))
        m(lib.ones(1, 2))
        # always_call: runs (with output None) even when forward raises
        m[0].register_forward_hook(lambda mod, args, out: log.append(("always", out)), always_call=True)
        m[0].register_forward_hook(lambda mod, args, out: log.append(("normal", out)))
        try:
            m(lib.ones(1, 5))
        except RuntimeError:
            log.append("raised")
        return log, out1, out2, kw

    log, out1, out2, kw = same_in_both(run)
    assert log[:3] == [("pre", "tuple", 1), ("first",), ("fwd", (4, 2), (4, 3))] and out1 == 0 and out2
    assert kw == [["input"]] and log.count("ctx") == 1 and log[-2:] == [("always", None), "raised"]


def test_apply_deepcopy_and_dtype_conversion():
    def run(lib):
        m = small_net(lib)
        visited = []
        m.apply(lambda mod: visited.append(type(mod).__name__))
        c = copy.deepcopy(m)
        with lib.no_grad():
            c.head.fc.weight.fill_(1.0)
        independent = m.head.fc.weight.detach().sum().item() != 4 * 5.0
        same_names = names(c.named_parameters()) == names(m.named_parameters())
        d = lib.nn.Linear(2, 2)
        d.double()
        e = lib.nn.BatchNorm2d(2).to(lib.float64)
        f = lib.nn.Linear(2, 2).to(lib.float64).float()
        return (visited, independent, same_names, str(d.weight.dtype), str(d(lib.ones(1, 2, dtype=lib.float64)).dtype),
                str(e.running_mean.dtype), str(e.num_batches_tracked.dtype), str(f.weight.dtype),
                m.to("cpu") is m)

    same_in_both(run)
    same_in_both(lambda lib: lib.nn.Linear(2, 2).to(lib.int64))


# -- state_dict and load_state_dict ----------------------------------------------------------------
def test_state_dict_keys_match_torch(resnets):
    tm, em = resnets
    assert list(em.state_dict()) == list(tm.state_dict())
    assert any(k.endswith("num_batches_tracked") for k in em.state_dict())
    assert list(small_net(gt).state_dict()) == list(small_net(torch).state_dict())
    for lib_bn in ("BatchNorm2d", "BatchNorm1d"):
        for kw in ({}, {"affine": False}, {"track_running_stats": False}, {"bias": False}):
            assert list(getattr(nn, lib_bn)(3, **kw).state_dict()) == \
                list(getattr(torch.nn, lib_bn)(3, **kw).state_dict()), (lib_bn, kw)
    sd = em.state_dict()
    assert sd["bn1.num_batches_tracked"].dtype == gt.int64 and tuple(sd["bn1.num_batches_tracked"].shape) == ()
    assert sd["bn1.running_var"].dtype == gt.float32


def test_state_dict_values_are_detached_and_shared():
    def run(lib):
        m = lib.nn.Linear(2, 2)
        sd = m.state_dict()
        flags = [v.requires_grad for v in sd.values()]
        sd["weight"][0, 0] = 5.0  # shares memory with the parameter
        kept = [v.requires_grad for v in m.state_dict(keep_vars=True).values()]
        return flags, m.weight[0, 0].item(), kept, list(m.state_dict(prefix="layer.")), \
            list(lib.nn.Sequential(m).state_dict(keep_vars=True))

    same_in_both(run)


def test_load_state_dict_round_trip():
    gt.manual_seed(1)
    a, b = small_net(gt), small_net(gt)
    a.train()
    a(gt.randn(4, 3, 8, 8))  # moves a's running statistics
    x = gt.randn(2, 3, 8, 8)
    a.eval()
    b.eval()
    assert not np.allclose(a(x).detach().numpy(), b(x).detach().numpy())
    result = b.load_state_dict(a.state_dict())
    assert repr(result) == "<All keys matched successfully>"
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())
    for (n, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=n)
    assert int(b.bn1.num_batches_tracked) == 1
    # a copy, not an alias: b's parameters keep their own memory
    with gt.no_grad():
        a.conv1.weight.fill_(0.0)
    assert b.conv1.weight.detach().numpy().any()


def test_torch_weights_load_into_the_engine():
    torch.manual_seed(0)
    tm, em = small_net(torch), small_net(gt)
    assert repr(copy_torch_state(tm, em)) == "<All keys matched successfully>"
    for (n, e), (_, t) in zip(em.state_dict().items(), tm.state_dict().items()):
        np.testing.assert_array_equal(e.numpy(), t.numpy(), err_msg=n)


@pytest.mark.parametrize("case", ["missing", "unexpected", "size", "all", "nested_unexpected", "non_strict",
                                  "non_strict_size", "not_mapping", "not_tensor", "nbt_plain_dict", "nbt_metadata",
                                  "scalar_from_1_elem", "assign"])
def test_load_state_dict_errors_match_torch(case):
    def run(lib):
        m = small_net(lib)
        sd = m.state_dict()
        plain = OrderedDict((k, lib.zeros(tuple(v.shape), dtype=v.dtype)) for k, v in sd.items())  # no metadata
        if case == "missing":
            del plain["features.1.running_var"], plain["conv1.bias"]
            return m.load_state_dict(plain)
        if case == "unexpected":
            plain["head.fc.extra"], plain["zzz"] = lib.zeros(1), lib.zeros(1)
            return m.load_state_dict(plain)
        if case == "size":
            plain["head.fc.weight"], plain["bn1.running_mean"] = lib.zeros(5, 3), lib.zeros(7)
            return m.load_state_dict(plain)
        if case == "all":
            del plain["conv1.weight"]
            plain["features.3.weight"], plain["extra"] = lib.zeros(1), lib.zeros(1)
            plain["head.fc.bias"] = lib.zeros(6)
            return m.load_state_dict(plain)
        if case == "nested_unexpected":
            # torch's rule: a key below a parameter's name is not reported; one below a missing child is
            plain["head.fc.weight.x"], plain["nope.weight"], plain["features.9.bias"] = (lib.zeros(1),) * 3
            return repr(m.load_state_dict(plain, strict=False))
        if case == "non_strict":
            del plain["head.fc.bias"]
            plain["extra"] = lib.zeros(1)
            r = m.load_state_dict(plain, strict=False)
            return repr(r), r.missing_keys, r.unexpected_keys, str(r)
        if case == "non_strict_size":
            plain["conv1.bias"] = lib.zeros(9)
            return m.load_state_dict(plain, strict=False)
        if case == "not_mapping":
            return m.load_state_dict([("conv1.weight", lib.zeros(1))])
        if case == "not_tensor":
            plain["conv1.bias"] = [0.0] * 8
            return m.load_state_dict(plain)
        if case == "nbt_plain_dict":  # without version metadata, torch fills num_batches_tracked in
            del plain["bn1.num_batches_tracked"]
            return repr(m.load_state_dict(dict(plain)))
        if case == "nbt_metadata":  # state_dict() carries BatchNorm's version: now it is missing
            del sd["bn1.num_batches_tracked"]
            return m.load_state_dict(sd)
        if case == "scalar_from_1_elem":
            plain["bn1.num_batches_tracked"] = lib.tensor([7])
            m.load_state_dict(plain)
            return m.bn1.num_batches_tracked.item()
        if case == "assign":
            fresh = lib.nn.Linear(2, 2)
            new = {"weight": lib.ones(2, 2), "bias": lib.zeros(2)}
            fresh.load_state_dict(new, assign=True)
            return (type(fresh.weight).__name__, fresh.weight.requires_grad, fresh.weight.sum().item(),
                    fresh.weight.data_ptr() == new["weight"].data_ptr() if lib is torch else
                    np.shares_memory(fresh.weight.detach().numpy(), new["weight"].numpy()))

    result = same_in_both(run)
    if case in ("missing", "unexpected", "size", "all", "non_strict_size", "nbt_metadata"):
        assert result[0] == "RuntimeError" and result[1].startswith("Error(s) in loading state_dict for Net:\n\t")


def test_load_state_dict_reports_missing_and_unexpected_on_resnet(resnets):
    tm, em = resnets

    def run(model, lib):
        sd = OrderedDict((k, v) for k, v in model.state_dict().items() if not k.startswith("layer4.1."))
        sd["fc.weight"] = lib.zeros(10, 512)
        sd["layer5.0.conv1.weight"] = lib.zeros(1)
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            return str(e)

    message = run(em, gt)
    assert message == run(tm, torch)
    assert '"layer4.1.bn2.running_var"' in message and "size mismatch for fc.weight" in message
    # a plain dict carries no version metadata: as in torch, missing num_batches_tracked is filled in
    assert "num_batches_tracked" not in message


# -- default initialisation ------------------------------------------------------------------------
def _uniform_stats(w):
    w = w.detach().numpy().ravel().astype(np.float64)
    return np.abs(w).max(), w.std(), w.mean()


@pytest.mark.parametrize("make", [
    lambda lib: lib.nn.Linear(1024, 2048),
    lambda lib: lib.nn.Conv2d(128, 512, 3),
    lambda lib: lib.nn.Conv2d(64, 64, (5, 1), bias=True),
], ids=["linear", "conv3x3", "conv5x1"])
def test_default_init_is_kaiming_uniform_a_sqrt5(make):
    gt.manual_seed(0)
    torch.manual_seed(0)
    em, tm = make(gt), make(torch)
    fan_in = int(np.prod(tuple(em.weight.shape)[1:]))
    bound = 1 / math.sqrt(fan_in)
    # the formula torch uses: kaiming_uniform_(a=sqrt(5)) -> gain sqrt(2/6), bound gain*sqrt(3/fan_in)
    assert math.isclose(nn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3 / fan_in), bound)
    for m in (em, tm):
        top, std, mean = _uniform_stats(m.weight)
        assert bound * 0.999 < top <= bound
        assert abs(std - bound / math.sqrt(3)) < 0.01 * bound / math.sqrt(3)
        assert abs(mean) < 0.01 * bound
        b = m.bias.detach().numpy()
        assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound and b.std() > 0.4 * bound
    assert em.weight.dtype == gt.float32 and em.bias.dtype == gt.float32
    assert em.weight.requires_grad and em.weight.is_leaf and isinstance(em.weight, nn.Parameter)


def test_default_init_is_seeded_and_differs_between_layers():
    gt.manual_seed(3)
    a = nn.Linear(5, 4)
    b = nn.Linear(5, 4)
    gt.manual_seed(3)
    c = nn.Linear(5, 4)
    np.testing.assert_array_equal(a.weight.detach().numpy(), c.weight.detach().numpy())
    assert not np.array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())


def test_resnet18_init_is_kaiming_normal_fan_out_relu(resnets):
    _, em = resnets
    convs = [(n, m) for n, m in em.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    for n, conv in convs:
        w = conv.weight.detach().numpy().astype(np.float64)
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        expected = math.sqrt(2.0 / fan_out)
        assert abs(w.std() - expected) < 0.05 * expected, n
        assert abs(w.mean()) < 0.05 * expected, n
        assert np.abs(w).max() > 2.5 * expected, n  # normal, not uniform (whose max is 1.73 std)
    bns = [m for m in em.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20
    for bn in bns:
        assert np.all(bn.weight.detach().numpy() == 1) and np.all(bn.bias.detach().numpy() == 0)
        assert np.all(bn.running_mean.numpy() == 0) and np.all(bn.running_var.numpy() == 1)
        assert int(bn.num_batches_tracked) == 0
    bound = 1 / math.sqrt(512)
    fc = em.fc.weight.detach().numpy()
    assert np.abs(fc).max() <= bound and abs(fc.std() - bound / math.sqrt(3)) < 0.02 * bound


def test_init_functions_match_torch():
    for nl, param in [("linear", None), ("conv2d", None), ("conv_transpose2d", None), ("sigmoid", None),
                      ("tanh", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 0),
                      ("selu", None)]:
        assert nn.init.calculate_gain(nl, param) == torch.nn.init.calculate_gain(nl, param), nl
    same_in_both(lambda lib: lib.nn.init.calculate_gain("gelu"))
    same_in_both(lambda lib: lib.nn.init.calculate_gain("leaky_relu", True))
    same_in_both(lambda lib: lib.nn.init.kaiming_uniform_(lib.zeros(3, 3), mode="fan_avg"))
    same_in_both(lambda lib: lib.nn.init.kaiming_normal_(lib.zeros(3)))
    same_in_both(lambda lib: lib.nn.init._calculate_fan_in_and_fan_out(lib.zeros(6, 4, 3, 2)))

    def zero_elements(lib):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            w = lib.nn.Linear(0, 3).weight
        return tuple(w.shape), [str(c.message) for c in caught]

    assert same_in_both(zero_elements) == ((3, 0), ["Initializing zero-element tensors is a no-op"])

    gt.manual_seed(0)
    w = gt.zeros(512, 256, 3, 3)
    for fn, kwargs, expected_std in [
        (nn.init.kaiming_normal_, {}, math.sqrt(2 / (256 * 9))),
        (nn.init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2 / (512 * 9))),
        (nn.init.kaiming_uniform_, {"a": 1.0}, math.sqrt(1 / (256 * 9))),
        (nn.init.xavier_uniform_, {}, math.sqrt(2 / (256 * 9 + 512 * 9))),
        (nn.init.xavier_normal_, {"gain": 2.0}, 2 * math.sqrt(2 / (256 * 9 + 512 * 9))),
        (nn.init.normal_, {"std": 0.02}, 0.02),
        (nn.init.uniform_, {"a": -1.0, "b": 1.0}, 1 / math.sqrt(3)),
    ]:
        assert fn(w, **kwargs) is w
        assert abs(w.numpy().std() - expected_std) < 0.01 * expected_std, fn.__name__
    assert np.all(nn.init.constant_(w, 0.5).numpy() == 0.5)
    assert np.all(nn.init.zeros_(w).numpy() == 0) and np.all(nn.init.ones_(w).numpy() == 1)
    p = nn.Parameter(gt.zeros(3, 3))
    nn.init.uniform_(p)  # works on a parameter that requires grad
    assert p.requires_grad and p.is_leaf and p.detach().numpy().any()
    a, b = gt.zeros(4, 4), gt.zeros(4, 4)
    nn.init.normal_(a, generator=np.random.default_rng(5))
    nn.init.normal_(b, generator=np.random.default_rng(5))
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_parameter_as_torch():
    def run(lib):
        p = lib.nn.Parameter(lib.ones(2))
        q = lib.nn.Parameter(lib.ones(2), requires_grad=False)
        e = lib.nn.Parameter()
        t = lib.zeros(3)
        s = lib.nn.Parameter(t)
        t[0] = 4.0  # shares memory with its data
        return (repr(p), p.requires_grad, p.is_leaf, q.requires_grad, tuple(e.shape), e.requires_grad,
                s[0].item(), isinstance(p, lib.Tensor), s.grad_fn is None)

    same_in_both(run)


# -- layers against torch, same weights ------------------------------------------------------------
@pytest.mark.parametrize("make,shape", [
    (lambda lib: lib.nn.Linear(7, 5), (4, 7)),
    (lambda lib: lib.nn.Linear(7, 5, bias=False), (4, 7)),
    (lambda lib: lib.nn.Linear(7, 5), (2, 3, 7)),
    (lambda lib: lib.nn.Linear(7, 5), (7,)),
    (lambda lib: lib.nn.Conv2d(3, 6, 3), (2, 3, 9, 9)),
    (lambda lib: lib.nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False), (2, 3, 9, 8)),
    (lambda lib: lib.nn.Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(1, 2)), (2, 3, 7, 9)),
    (lambda lib: lib.nn.Conv2d(3, 4, 7, stride=2, padding=3, bias=False), (1, 3, 16, 16)),
    (lambda lib: lib.nn.Conv2d(3, 4, 3, padding="same"), (2, 3, 6, 7)),
    (lambda lib: lib.nn.Conv2d(3, 4, (4, 3), padding="same"), (2, 3, 6, 7)),
    (lambda lib: lib.nn.Conv2d(3, 4, 2, padding="valid"), (2, 3, 6, 7)),
    (lambda lib: lib.nn.Conv2d(3, 4, 3), (3, 8, 8)),
    (lambda lib: lib.nn.ReLU(), (3, 4)),
    (lambda lib: lib.nn.Sigmoid(), (3, 4)),
    (lambda lib: lib.nn.Tanh(), (3, 4)),
    (lambda lib: lib.nn.Softmax(dim=1), (3, 4)),
    (lambda lib: lib.nn.LogSoftmax(dim=-1), (3, 4)),
    (lambda lib: lib.nn.MaxPool2d(2), (2, 3, 8, 8)),
    (lambda lib: lib.nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 9)),
    (lambda lib: lib.nn.MaxPool2d((2, 3), stride=(1, 2)), (1, 2, 5, 7)),
    (lambda lib: lib.nn.AdaptiveAvgPool2d((1, 1)), (2, 3, 5, 5)),
    (lambda lib: lib.nn.AdaptiveAvgPool2d(1), (2, 3, 4, 6)),
    (lambda lib: lib.nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 4, 6)),
    (lambda lib: lib.nn.AdaptiveAvgPool2d(3), (2, 3, 7, 5)),
    (lambda lib: lib.nn.Flatten(), (2, 3, 4, 5)),
    (lambda lib: lib.nn.Flatten(0, 2), (2, 3, 4, 5)),
    (lambda lib: lib.nn.Flatten(-2), (2, 3, 4, 5)),
    (lambda lib: lib.nn.Identity(54, unused=True), (2, 3)),
], ids=lambda v: "" if callable(v) else "x".join(map(str, v)))
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # torch's own warning
def test_layer_matches_torch(make, shape):
    torch.manual_seed(0)
    tm, em = make(torch), make(gt)
    assert repr(em) == repr(tm)
    assert shapes(em.named_parameters()) == shapes(tm.named_parameters())
    copy_torch_state(tm, em)
    compare_forward_backward(tm, em, rand(*shape))


def test_maxpool_ties_send_the_grad_where_torch_does():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1:3, 1:3] = 1.0  # ties inside windows
    compare_forward_backward(torch.nn.MaxPool2d(2, 1), nn.MaxPool2d(2, 1), x)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.3}, {"momentum": None}, {"affine": False},
                                    {"track_running_stats": False}, {"eps": 1e-2}, {"bias": False}],
                         ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_batchnorm2d_train_and_eval_match_torch(kwargs):
    torch.manual_seed(0)
    tm, em = torch.nn.BatchNorm2d(4, **kwargs), nn.BatchNorm2d(4, **kwargs)
    if tm.affine:  # not the trivial 1/0 affine parameters
        with torch.no_grad():
            tm.weight.uniform_(0.5, 1.5)
            if tm.bias is not None:
                tm.bias.uniform_(-0.5, 0.5)
    copy_torch_state(tm, em)
    for step in range(4):  # running statistics after several steps
        x = rand(3, 4, 5, 6, seed=step) * (step + 1) + step
        compare_forward_backward(tm, em, x, rtol=1e-4, atol=1e-5, seed=step)
        for (n, e), (_, t) in zip(em.named_buffers(), tm.named_buffers()):
            assert_close(e, t, 1e-5, 1e-6, n)
        tm.zero_grad()
        em.zero_grad()
    if tm.track_running_stats:
        assert int(em.num_batches_tracked) == int(tm.num_batches_tracked) == 4
    tm.eval()
    em.eval()
    compare_forward_backward(tm, em, rand(2, 4, 3, 3, seed=9) + 1, rtol=1e-4, atol=1e-5)
    for (n, e), (_, t) in zip(em.named_buffers(), tm.named_buffers()):
        assert_close(e, t, 1e-5, 1e-6, n)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)])
def test_batchnorm1d_matches_torch(shape):
    tm, em = torch.nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    for step in range(2):
        compare_forward_backward(tm, em, rand(*shape, seed=step) + 2, rtol=1e-4, atol=1e-5)
        assert_close(em.running_mean, tm.running_mean)
        assert_close(em.running_var, tm.running_var)
    tm.eval()
    em.eval()
    compare_forward_backward(tm, em, rand(*shape, seed=5), rtol=1e-4, atol=1e-5)


def test_batchnorm_input_checks_match_torch():
    same_in_both(lambda lib: lib.nn.BatchNorm2d(3)(lib.ones(2, 3)))
    same_in_both(lambda lib: lib.nn.BatchNorm1d(3)(lib.ones(2, 3, 4, 5)))


def test_dropout_eval_is_identity_and_train_drops_with_scaling():
    x = rand(200, 500)
    for p in (0.0, 0.3, 1.0):
        tm, em = torch.nn.Dropout(p).eval(), nn.Dropout(p).eval()
        compare_forward_backward(tm, em, x)
    gt.manual_seed(0)
    m = nn.Dropout(0.3)
    xe = gt.tensor(x, requires_grad=True)
    out = m(xe)
    out.sum().backward()
    o = out.detach().numpy()
    kept = o != 0
    assert abs(1 - kept.mean() - 0.3) < 0.01
    np.testing.assert_allclose(o[kept], x[kept] / 0.7, rtol=1e-6)
    np.testing.assert_allclose(xe.grad.numpy(), kept / 0.7, rtol=1e-6)  # the mask scales the grad too
    assert np.all(nn.Dropout(1.0)(gt.tensor(x)).numpy() == 0)
    np.testing.assert_array_equal(nn.Dropout(0.0)(gt.tensor(x)).numpy(), x)
    same_in_both(lambda lib: lib.nn.Dropout(-0.1))
    same_in_both(lambda lib: lib.nn.Dropout(1.5))


def test_sequential_network_matches_torch_in_train_and_eval():
    torch.manual_seed(0)
    tm, em = small_net(torch), small_net(gt)
    copy_torch_state(tm, em)
    tm.head.drop.p = em.head.drop.p = 0.0  # dropout's mask is random; everything else is compared
    x = rand(4, 3, 10, 10)
    compare_forward_backward(tm, em, x, rtol=1e-4, atol=1e-5)
    for (n, e), (_, t) in zip(em.named_buffers(), tm.named_buffers()):
        assert_close(e, t, 1e-5, 1e-6, n)
    tm.zero_grad()
    em.zero_grad()
    tm.eval()
    em.eval()
    tm.head.drop.p = em.head.drop.p = 0.25  # eval: identity regardless of p
    compare_forward_backward(tm, em, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch(reduction):
    x, y = rand(4, 5), rand(4, 5, seed=1)
    xt, xe = tensors(x, requires_grad=True)
    yt, ye = tensors(y)
    lt = torch.nn.MSELoss(reduction=reduction)(xt, yt)
    le = nn.MSELoss(reduction=reduction)(xe, ye)
    assert_close(le, lt)
    lt.sum().backward()
    le.sum().backward()
    assert_close(xe.grad, xt.grad)


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 2},
                                    {"weight": [0.5, 1.0, 2.0, 0.1]},
                                    {"weight": [0.5, 1.0, 2.0, 0.1], "ignore_index": 1, "reduction": "mean"},
                                    {"probabilities": True}],
                         ids=lambda k: ",".join(f"{a}" for a in k) or "default")
def test_cross_entropy_loss_matches_torch(kwargs):
    kwargs = dict(kwargs)
    x = rand(6, 4) * 3
    xt, xe = tensors(x, requires_grad=True)
    if kwargs.pop("probabilities", False):
        p = np.random.default_rng(1).dirichlet(np.ones(4), 6).astype(np.float32)
        yt, ye = tensors(p)
    else:
        y = np.array([0, 1, 2, 3, 2, 1])
        yt, ye = torch.tensor(y), gt.tensor(y)
    tkw = dict(kwargs)
    if "weight" in kwargs:
        tkw["weight"], kwargs["weight"] = tensors(kwargs["weight"])
    tm, em = torch.nn.CrossEntropyLoss(**tkw), nn.CrossEntropyLoss(**kwargs)
    assert list(em.state_dict()) == list(tm.state_dict())
    lt, le = tm(xt, yt), em(xe, ye)
    assert_close(le, lt)
    lt.sum().backward()
    le.sum().backward()
    assert_close(xe.grad, xt.grad)


def test_loss_constructors_match_torch():
    def run(lib):
        n = lib.nn
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            legacy = [n.MSELoss(None, None, "sum").reduction, n.MSELoss(False).reduction,
                      n.CrossEntropyLoss(None, None, 3).ignore_index, n.CrossEntropyLoss(reduce=False).reduction,
                      n.NLLLoss(None, None, 5, None, "none").ignore_index]
        ce = n.CrossEntropyLoss(lib.ones(3), label_smoothing=0.0)
        return legacy, [str(c.message) for c in caught], names(ce.named_buffers()), \
            n.CrossEntropyLoss().weight, ce.ignore_index, ce.reduction

    same_in_both(run)


# -- containers ------------------------------------------------------------------------------------
def test_sequential_container_as_torch():
    def run(lib):
        n = lib.nn
        s = n.Sequential(n.Linear(2, 3), n.ReLU(), n.Linear(3, 4), n.Tanh())
        out = {"slice": names(s[1:3].named_children()), "slice_keys": list(s[2:].state_dict()),
               "slice_type": type(s[1:]).__name__, "neg": type(s[-1]).__name__, "len": len(s),
               "iter": [type(m).__name__ for m in s]}
        s[1] = n.Sigmoid()
        out["set"] = [type(m).__name__ for m in s]
        del s[0]
        out["del"] = (names(s.named_children()), list(s.state_dict()))
        s.append(n.ReLU())
        s.insert(1, n.Identity())
        s.insert(-1, n.Identity())
        s.extend([n.Linear(4, 1)])
        out["grown"] = (names(s.named_children()), [type(m).__name__ for m in s])
        out["pop"] = type(s.pop(0)).__name__
        out["add"] = names((s + n.Sequential(n.ReLU())).named_children())
        s += n.Sequential(n.ReLU())
        out["iadd"] = len(s)
        d = n.Sequential(OrderedDict([("first", n.Linear(2, 2)), ("act", n.ReLU())]))
        out["named"] = (names(d.named_parameters()), names(d[1:].named_children()), type(d.act).__name__)
        del d[0:1]
        out["del_slice"] = names(d.named_children())
        return out

    same_in_both(run)
    same_in_both(lambda lib: lib.nn.Sequential(lib.nn.ReLU())[3])
    same_in_both(lambda lib: lib.nn.Sequential(lib.nn.ReLU())[-2])
    error = outcome(lambda lib: lib.nn.Sequential(lib.nn.ReLU()) + lib.nn.ReLU(), gt)
    assert error[0] == "ValueError" and error[1].startswith("add operator supports only objects of Sequential class")


def test_module_list_as_torch():
    def run(lib):
        n = lib.nn
        ml = n.ModuleList([n.Linear(2, 2), n.ReLU()])
        ml.append(n.Tanh())
        ml.extend([n.Sigmoid()])
        ml.insert(1, n.Identity())
        ml += [n.ReLU()]
        out = [names(ml.named_children()), names(ml.named_parameters()), type(ml[-1]).__name__,
               names(ml[1:3].named_children()), type(ml[1:3]).__name__, len(ml), repr(ml)]
        ml[0] = n.Linear(2, 3)
        del ml[1]
        out += [names(ml.named_children()), tuple(ml[0].weight.shape), type(ml.pop(1)).__name__,
                len(ml + n.ModuleList([n.ReLU()])), "0" in dir(ml)]
        return out

    same_in_both(run)
    same_in_both(lambda lib: lib.nn.ModuleList([lib.nn.ReLU()])[2])
    same_in_both(lambda lib: lib.nn.ModuleList().extend(5))


@pytest.mark.parametrize("make", [lambda lib: lib.nn.MaxPool2d(2), lambda lib: lib.nn.AdaptiveAvgPool2d((2, 2))],
                         ids=["maxpool", "adaptive_avgpool"])
def test_pooling_unbatched_input_matches_torch(make):
    compare_forward_backward(make(torch), make(gt), rand(3, 4, 5))


def test_flatten_checks_dims_as_torch():
    same_in_both(lambda lib: lib.nn.Flatten()(lib.tensor(3.0)))


# -- once bugs outside nn/optim/models (engine/nn/functional.py, engine/ops), now fixed ------------------
def test_cross_entropy_k_dimensional_matches_torch():
    x = rand(2, 3, 4, 5)
    y = np.random.default_rng(1).integers(0, 3, (2, 4, 5))
    xt, xe = tensors(x, requires_grad=True)
    lt = torch.nn.CrossEntropyLoss()(xt, torch.tensor(y))
    le = nn.CrossEntropyLoss()(xe, gt.tensor(y))
    assert_close(le, lt)
    lt.backward()
    le.backward()
    assert_close(xe.grad, xt.grad)


def test_cross_entropy_all_targets_ignored_gives_zero_grad():
    xe = gt.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    loss = nn.CrossEntropyLoss(ignore_index=1)(xe, gt.tensor([1, 1]))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(xe.grad.numpy(), np.zeros((2, 3), np.float32))


def test_linear_rejects_mismatched_dtypes_as_torch():
    same_in_both(lambda lib: lib.nn.Linear(5, 2)(lib.ones(1, 5, dtype=lib.float64)))
