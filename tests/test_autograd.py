"""The autograd machinery: graph structure, PyTorch's execution order, retain_graph, hooks, grad
mode and errors."""
import warnings

import numpy as np
import pytest

import gradviz.engine as gt
from gradviz.engine import autograd


def execution_order(root, names, gradient=None, backward=None):
    """Run backward from ``root`` and return the nodes in the order they ran, leaves' AccumulateGrad
    named after their variable. Works for torch and the engine alike (both have register_prehook)."""
    log, seen, stack = [], set(), [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)

        def hook(grad_outputs, node=node):
            label = node.name().replace("torch::autograd::", "")
            if hasattr(node, "variable"):
                label += f"({names.get(id(node.variable), '?')})"
            log.append(label)

        node.register_prehook(hook)
        stack.extend(fn for fn, _ in node.next_functions)
    (backward or (lambda: root.backward(gradient)))()
    return log


def test_tutorial_q_runs_in_pytorch_order():
    a = gt.tensor([2., 3.], requires_grad=True)
    b = gt.tensor([6., 4.], requires_grad=True)
    Q = 3 * a ** 3 - b ** 2
    order = execution_order(Q, {id(a): "a", id(b): "b"}, gt.tensor([1., 1.]))
    assert order == ["SubBackward0", "PowBackward0", "AccumulateGrad(b)",
                     "MulBackward0", "PowBackward0", "AccumulateGrad(a)"]


def test_graph_structure_follows_pytorch():
    a = gt.tensor([2., 3.], requires_grad=True)
    b = gt.tensor([6., 4.], requires_grad=True)
    Q = 3 * a ** 3 - b ** 2
    assert Q.grad_fn.name() == "SubBackward0" and not Q.is_leaf and a.is_leaf
    (mul, i0), (powb, i1) = Q.grad_fn.next_functions
    assert (mul.name(), powb.name(), i0, i1) == ("MulBackward0", "PowBackward0", 0, 0)
    (pow_a, _), = mul.next_functions  # 3 * ... has one tensor input
    (acc, _), = pow_a.next_functions
    assert acc.name() == "torch::autograd::AccumulateGrad" and type(acc).__name__ == "AccumulateGrad"
    assert acc.variable is a and acc.next_functions == ()
    # A leaf keeps one AccumulateGrad however often it is used.
    assert (a * 2).grad_fn.next_functions[0][0] is acc
    assert gt.tensor([1.]).grad_fn is None
    x = gt.tensor([1.])
    assert (x + a).grad_fn.next_functions[0] == (None, 0)


# Programs run on both torch and the engine; their backward orders must agree.
def _prog_fanin(t):
    ls = [t.full((2,), float(i), requires_grad=True) for i in range(5)]
    return t.cat(ls).sum(), {f"l{i}": v for i, v in enumerate(ls)}


def _prog_chain(t):
    ws = [t.full((2,), float(i), requires_grad=True) for i in range(5)]
    r = ws[0]
    for w in ws[1:]:
        r = r + w
    return r.sum(), {f"w{i}": v for i, v in enumerate(ws)}


def _prog_mlp(t):
    t.manual_seed(0)
    W = t.randn(4, 3, requires_grad=True)
    b = t.randn(4, requires_grad=True)
    W2 = t.randn(2, 4, requires_grad=True)
    b2 = t.randn(2, requires_grad=True)
    F = t.nn.functional
    out = F.linear(F.relu(F.linear(t.randn(5, 3), W, b)), W2, b2).sum()
    return out, dict(W=W, b=b, W2=W2, b2=b2)


def _prog_diamond(t):
    x = t.full((3,), 2.0, requires_grad=True)
    y = t.full((3,), 3.0, requires_grad=True)
    z = t.full((1,), 1.0, requires_grad=True)
    s = x * y
    return (s.exp() + s.sin() * z + ((x + y + z + x) ** 2)).sum(), dict(x=x, y=y, z=z)


def _prog_stack(t):
    p = t.full((3,), 2.0, requires_grad=True)
    q = t.full((3,), 3.0, requires_grad=True)
    return t.stack([p * 2, q * 3, p + q]).sum(), dict(p=p, q=q)


@pytest.mark.parametrize("prog", [_prog_fanin, _prog_chain, _prog_mlp, _prog_diamond, _prog_stack])
def test_execution_order_matches_torch(prog):
    torch = pytest.importorskip("torch")
    orders = []
    for lib in (torch, gt):
        out, leaves = prog(lib)
        orders.append(execution_order(out, {id(v): k for k, v in leaves.items()}))
    assert orders[1] == orders[0]


def test_fanin_order_is_libstdcxx_heap_order():
    # Several AccumulateGrad nodes ready at once leave PyTorch's priority queue in this order.
    out, leaves = _prog_fanin(gt)
    order = execution_order(out, {id(v): k for k, v in leaves.items()})
    assert order == ["SumBackward0", "CatBackward0"] + [f"AccumulateGrad(l{i})" for i in (0, 2, 4, 1, 3)]


def test_multiple_roots_use_a_graph_root():
    torch = pytest.importorskip("torch")
    orders = []
    for lib in (torch, gt):
        x = lib.full((2,), 2.0, requires_grad=True)
        y = lib.full((2,), 3.0, requires_grad=True)
        r1, r2 = (x * y).sum(), (y ** 2).sum()
        names = {id(x): "x", id(y): "y"}
        log = execution_order(r1, names, backward=lambda: None)
        log += execution_order(r2, names, backward=lambda: lib.autograd.backward([r1, r2]))
        orders.append(log)
        assert x.grad.tolist() == [3.0, 3.0] and y.grad.tolist() == [8.0, 8.0]
    assert orders[1] == orders[0]


def test_gradients_accumulate_and_retain_graph():
    x = gt.tensor([1., 2.], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4., 8.]  # 2 * 2x
    with pytest.raises(RuntimeError, match=r"^Trying to backward through the graph a second time \(or directly "
                                           r"access saved tensors after they have already been freed\)"):
        y.backward()


def test_nodes_without_saved_tensors_can_run_twice():
    # As in PyTorch, only nodes that saved tensors refuse a second backward.
    x = gt.tensor([1., 2.], requires_grad=True)
    y = (x + 1).sum()
    y.backward()
    y.backward()
    assert x.grad.tolist() == [2., 2.]


def test_non_leaf_grad_is_none_unless_retained():
    x = gt.tensor([1., 2.], requires_grad=True)
    h = x * 3
    k = x * 4
    k.retain_grad()
    (h * k).sum().backward()
    with pytest.warns(UserWarning, match="is not a leaf Tensor"):
        assert h.grad is None
    assert k.grad.tolist() == [3., 6.]  # d(h*k)/dk = h
    assert x.grad.tolist() == [24., 48.]  # 2 * 12 x


def test_scalar_only_implicit_gradient():
    x = gt.tensor([1., 2.], requires_grad=True)
    with pytest.raises(RuntimeError, match="^grad can be implicitly created only for scalar outputs$"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: grad_output\[0\] has a shape of torch.Size\(\[3\]\) "
                                           r"and output\[0\] has a shape of torch.Size\(\[2\]\)"):
        (x * 2).backward(gt.ones(3))
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad and does not have a grad_fn"):
        gt.tensor([1.]).sum().backward()


def test_vector_jacobian_product():
    x = gt.tensor([1., 2., 3.], requires_grad=True)
    y = x ** 2
    y.backward(gradient=gt.tensor([0.1, 1.0, 10.0]))
    np.testing.assert_allclose(x.grad.numpy(), [0.2, 4.0, 60.0], rtol=1e-6)


def test_autograd_grad_leaves_dot_grad_alone():
    x = gt.tensor([1., 2.], requires_grad=True)
    w = gt.tensor([3., 4.], requires_grad=True)
    h = x * w
    out = (h * h).sum()
    gx, gh = autograd.grad(out, [x, h], retain_graph=True)
    assert gx.tolist() == [18., 64.] and gh.tolist() == [6., 16.]
    assert x.grad is None and w.grad is None
    u = gt.tensor([1.], requires_grad=True)
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
        autograd.grad(out, [u], retain_graph=True)
    assert autograd.grad(out, [u], allow_unused=True) == (None,)


def test_autograd_grad_runs_only_what_it_needs():
    ran = []
    x = gt.tensor([1., 2.], requires_grad=True)
    w = gt.tensor([3., 4.], requires_grad=True)
    a, b = x.exp(), w.sin()
    out = (a + b).sum()
    for t, name in ((a, "exp"), (b, "sin")):
        t.grad_fn.register_prehook(lambda g, name=name: ran.append(name))
    (gx,) = autograd.grad(out, [x])
    np.testing.assert_allclose(gx.numpy(), np.exp([1., 2.]), rtol=1e-6)
    assert ran == ["exp"]


def test_create_graph_is_refused_clearly():
    x = gt.tensor([1.], requires_grad=True)
    with pytest.raises(NotImplementedError, match="create_graph=True"):
        (x * x).sum().backward(create_graph=True)


def test_grad_modes():
    x = gt.ones(2, requires_grad=True)
    with gt.no_grad():
        assert not (x * 2).requires_grad
        with gt.enable_grad():
            assert (x * 2).requires_grad
    assert gt.is_grad_enabled()

    @gt.no_grad()
    def f():
        return x * 2

    assert not f().requires_grad and gt.is_grad_enabled()
    gt.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        gt.set_grad_enabled(True)
    with gt.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_tensor_hooks_on_leaf_and_non_leaf():
    x = gt.tensor([1., 2.], requires_grad=True)
    seen = []
    handle = x.register_hook(lambda g: g * 10)
    y = x * 2
    y.register_hook(lambda g: seen.append(g.tolist()))
    y.sum().backward()
    assert seen == [[1., 1.]]
    assert x.grad.tolist() == [20., 20.]
    handle.remove()
    x.grad = None
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2., 2.]
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        gt.ones(1).register_hook(lambda g: g)


def test_node_hooks_see_grad_outputs_and_inputs():
    x = gt.tensor([1., 2.], requires_grad=True)
    y = x * 3
    calls = []
    y.grad_fn.register_hook(lambda gi, go: calls.append((gi[0].tolist(), go[0].tolist())))
    y.sum().backward()
    assert calls == [([3., 3.], [1., 1.])]


def test_long_chain_has_no_recursion_limit():
    x = gt.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 10_000], rtol=1e-3)


def test_graph_is_rebuilt_each_forward():
    w = gt.tensor([2.0], requires_grad=True)
    names = []
    for steps in (1, 3):
        y = w
        for _ in range(steps):
            y = y * w if steps > 1 else y.exp()
        names.append(y.grad_fn.name())
        y.sum().backward()
    assert names == ["ExpBackward0", "MulBackward0"]
    # exp(2) + d(w^4)/dw = e^2 + 4 * 2^3
    np.testing.assert_allclose(w.grad.numpy(), [np.exp(2.0) + 32.0], rtol=1e-6)


def test_requires_grad_rules():
    x = gt.ones(2, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
        y.requires_grad = False
    with pytest.raises(RuntimeError, match="only Tensors of floating point"):
        gt.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        x.add_(1)
    with gt.no_grad():
        x.add_(1)
    assert x.tolist() == [2., 2.]
    d = y.detach()
    assert d.grad_fn is None and not d.requires_grad and np.shares_memory(d.numpy(), y.detach().numpy())


def test_accumulated_grad_is_a_private_copy():
    # Add's backward hands the same gradient array to both inputs; .grad must not alias it.
    a = gt.ones(3, requires_grad=True)
    b = gt.ones(3, requires_grad=True)
    (a + b).sum().backward()
    a.grad.zero_()
    assert b.grad.tolist() == [1., 1., 1.]
    (a + b).sum().backward()
    assert a.grad.tolist() == [1., 1., 1.] and b.grad.tolist() == [2., 2., 2.]


def test_dtypes_and_repr():
    assert gt.tensor([1., 2.]).dtype is gt.float32
    assert gt.tensor([1, 2]).dtype is gt.int64
    assert gt.tensor([True]).dtype is gt.bool
    assert gt.ones(2, dtype=gt.float64).dtype is gt.float64
    x = gt.tensor([2., 3.], requires_grad=True)
    assert repr(x) == "tensor([2., 3.], requires_grad=True)"
    assert repr(x * 2) == "tensor([4., 6.], grad_fn=<MulBackward0>)"
    assert repr(gt.tensor([0.5, 1.25], dtype=gt.float64)) == "tensor([0.5000, 1.2500], dtype=torch.float64)"
    assert repr(gt.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(gt.ones(2, 3).shape) == "torch.Size([2, 3])"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (x * 2).sum().item() == 10.0
