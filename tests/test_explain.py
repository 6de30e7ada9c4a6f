"""Backward explained (issue 20): each rule's text, its substituted numbers, and the result equal to
the grad_inputs the engine and PyTorch record."""
import numpy as np
import pytest

import gradviz
import gradviz.demos.seed as seed
from gradviz.trace.explain import RULES, Values, explain, explain_node, unbroadcast


def _seed_trace():
    with gradviz.record() as rec:
        seed.main()
    return rec.trace


def test_the_seed_pow_and_accumulate_grad_read_as_the_tutorial_writes_them():
    tr = _seed_trace()
    texts = {}
    for nid in tr.passes[-1].order:
        e = explain_node(tr, nid)
        assert all(t.matches for t in e.terms), e.text
        texts.setdefault(tr.nodes[nid].op, []).append(e.text)
    assert "grad_a = grad * 3 * a**2 = [3, 3] * 3 * [4, 9] = [36, 81]" in texts["PowBackward0"]
    assert "grad_b = grad * 2 * b = [-1, -1] * 2 * [6, 4] = [-12, -8]" in texts["PowBackward0"]
    assert "a.grad += [36, 81]: None -> [36, 81]" in texts["AccumulateGrad"]
    assert "grad_other = -grad = -[1, 1] = [-1, -1]" in texts["SubBackward0"][0]


def test_a_node_without_a_rule_says_so():
    e = explain("CumprodBackward0", Values())
    assert not e.known and "no rule" in e.text


def test_broadcasting_is_summed_and_said():
    g, why = unbroadcast(np.ones((2, 3)), (1, 3))
    assert g.tolist() == [[2, 2, 2]] and "dim 0" in why
    e = explain("AddBackward0", Values(inputs=[np.ones((2, 3)), np.ones(3)], grad_outputs=[np.ones((2, 3))],
                                       grad_inputs=[np.ones((2, 3)), np.full(3, 2.0)]))
    assert e.terms[1].matches and "leading" in e.terms[1].broadcast


def _torch_values(torch, fn, *xs, attrs=None):
    """Run ``fn`` in PyTorch, its output's grad_fn's grad_outputs/grad_inputs caught by a hook."""
    xs = [x.detach().requires_grad_(x.is_floating_point()) for x in xs]
    y = fn(*xs)
    node, got = y.grad_fn, {}
    node.register_hook(lambda gi, go: got.update(gi=gi, go=go))
    g = torch.linspace(-1, 1.5, y.numel()).reshape(y.shape) if y.numel() > 1 else torch.tensor(1.7)
    y.backward(g, retain_graph=True)
    saved = {n[len("_saved_"):]: getattr(node, n) for n in dir(node) if n.startswith("_saved_")}
    arrays = {k: v.detach().numpy() for k, v in saved.items() if torch.is_tensor(v)}
    scal = {k: v for k, v in saved.items() if isinstance(v, (int, float, str, tuple))}
    scal.update(attrs or {})
    np_ = lambda t: None if t is None else t.detach().numpy()  # noqa: E731
    return node, Values(inputs=[np_(x) for x in xs], output=np_(y), saved=arrays, attrs=scal,
                        grad_outputs=[np_(t) for t in got["go"]], grad_inputs=[np_(t) for t in got["gi"]])


CASES = [
    ("Add", lambda a, b: a + b, [(2, 3), (3,)], {}),
    ("Sub", lambda a, b: a - b, [(3,), (3,)], {}),
    ("Mul", lambda a, b: a * b, [(2, 2), (2, 2)], {}),
    ("Div", lambda a, b: a / b, [(3,), (3,)], {}),
    ("Neg", lambda a: -a, [(3,)], {}),
    ("Pow", lambda a: a ** 3, [(3,)], {}),
    ("Exp", lambda a: a.exp(), [(3,)], {}),
    ("Log", lambda a: a.log(), [(3,)], {}),
    ("Sqrt", lambda a: a.sqrt(), [(3,)], {}),
    ("Tanh", lambda a: a.tanh(), [(3,)], {}),
    ("Sigmoid", lambda a: a.sigmoid(), [(3,)], {}),
    ("Relu", lambda a: (a - 1).relu(), [(4,)], {}),
    ("Sum", lambda a: a.sum(), [(2, 3)], {}),
    ("Mean", lambda a: a.mean(), [(2, 3)], {}),
    ("Mm", lambda a, b: a @ b, [(2, 3), (3, 2)], {}),
    ("T", lambda a: a.t(), [(2, 3)], {}),
    ("View", lambda a: a.view(3, 2), [(2, 3)], {}),
    ("Expand", lambda a: a.expand(2, 3), [(1, 3)], {}),
    ("Softmax", lambda a: a.softmax(-1), [(2, 3)], {"dim": -1}),
    ("LogSoftmax", lambda a: a.log_softmax(-1), [(2, 3)], {"dim": -1}),
]


@pytest.mark.parametrize("op,fn,shapes,attrs", CASES, ids=[c[0] for c in CASES])
def test_each_rule_against_pytorch(op, fn, shapes, attrs):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    xs = [torch.rand(*s, dtype=torch.float64) + 0.5 for s in shapes]
    node, v = _torch_values(torch, fn, *xs, attrs=attrs)
    e = explain(type(node).__name__, v)
    assert e.known and e.terms, type(node).__name__
    assert all(t.matches for t in e.terms if t.recorded is not None), e.text
    assert any(t.substituted for t in e.terms), e.text


@pytest.mark.parametrize("op,fn,shapes,attrs", CASES, ids=[c[0] for c in CASES])
def test_each_rule_against_the_engine(op, fn, shapes, attrs):
    import gradviz.engine as gt
    rng = np.random.default_rng(0)
    xs = [gt.tensor(rng.random(s) + 0.5, requires_grad=True) for s in shapes]
    with gradviz.record() as rec:
        y = fn(*xs)
        y.backward(gt.ones(y.shape) if y.ndim else None)
    tr = rec.trace
    ran = [n for n in tr.passes[-1].order if tr.nodes[n].kind == "grad_fn"]
    e = explain_node(tr, ran[0], attrs=attrs)
    assert e.known and e.terms, tr.nodes[ran[0]].op
    assert all(t.matches for t in e.terms if t.recorded is not None), e.text


LISTED = ("Add Sub Mul Div Neg Pow Exp Log Sqrt Tanh Sigmoid Relu Gelu Sum Mean Mm Addmm Bmm T Transpose View Reshape "
          "Expand Softmax LogSoftmax NllLoss Convolution NativeBatchNorm NativeLayerNorm Embedding "
          "MaxPool2DWithIndices AccumulateGrad")


def test_every_listed_op_has_a_rule():
    for op in LISTED.split():
        assert op in RULES


def test_gradviz_seed_prints_each_steps_rule_with_its_numbers(capsys):
    from gradviz import cli
    assert cli.main(["seed"]) == 0
    out = capsys.readouterr().out
    assert "grad_a = grad * 3 * a**2 = [3, 3] * 3 * [4, 9] = [36, 81]" in out
    assert "a.grad += [36, 81]: None -> [36, 81]" in out


def test_debugger_explain_the_paused_node_before_it_runs():
    from gradviz import Debugger
    with Debugger.launch(demo="seed", breakpoints=[{"op": "PowBackward0"}]) as dbg:
        pause = dbg.wait_paused(timeout=30)
        pause = dbg.resume() or dbg.wait_paused(timeout=30)  # the second Pow: a**3's
        e = dbg.explain()
        assert pause.op == "PowBackward0"
        assert e.text == "grad_a = grad * 3 * a**2 = [3, 3] * 3 * [4, 9] = [36, 81]"
        (term,) = e.terms
        assert term.computed.tolist() == [36, 81] and term.rule == "grad * 3 * a**2"
        dbg.step()
        dbg.wait_paused(timeout=30)
        assert dbg.explain(pause.node).terms[0].matches  # now checked against the recorded grad_input


def _ints(*values):
    return lambda torch: torch.tensor(values)


def _floats(*shape):
    return lambda torch: torch.rand(*shape, dtype=torch.float64) + 0.5


NN_CASES = [
    ("Gelu", lambda F, a: F.gelu(a), [_floats(3)]),
    ("Addmm", lambda F, b, m1, m2: b.addmm(m1, m2), [_floats(2), _floats(3, 4), _floats(4, 2)]),
    ("Bmm", lambda F, a, b: a.bmm(b), [_floats(2, 2, 3), _floats(2, 3, 2)]),
    ("Transpose", lambda F, a: a.transpose(0, 2), [_floats(2, 1, 3)]),
    ("Reshape", lambda F, a: a.reshape(3, 2), [_floats(2, 3)]),
    ("SumDim", lambda F, a: a.sum(0), [_floats(2, 3)]),
    ("MeanDim", lambda F, a: a.mean(1), [_floats(2, 3)]),
    ("NllLoss", lambda F, a, t: F.nll_loss(a.log_softmax(-1), t), [_floats(2, 3), _ints(0, 2)]),
    ("Convolution", lambda F, x, w, b: F.conv2d(x, w, b, padding=1), [_floats(1, 2, 4, 4), _floats(3, 2, 3, 3),
                                                                      _floats(3)]),
    ("NativeBatchNorm", lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
     [_floats(3, 2, 2, 2), _floats(2), _floats(2)]),
    ("NativeLayerNorm", lambda F, x, w, b: F.layer_norm(x, (3,), w, b), [_floats(2, 3), _floats(3), _floats(3)]),
    ("Embedding", lambda F, w, i: F.embedding(i, w), [_floats(4, 2), _ints(1, 3, 1)]),
    ("MaxPool", lambda F, x: F.max_pool2d(x, 2), [_floats(1, 1, 4, 4)]),
]


@pytest.mark.parametrize("op,fn,makers", NN_CASES, ids=[c[0] for c in NN_CASES])
def test_the_network_rules_against_pytorch(op, fn, makers):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    torch.manual_seed(0)
    node, v = _torch_values(torch, lambda *xs: fn(F, *xs), *[m(torch) for m in makers])
    e = explain(type(node).__name__, v)
    assert e.known and e.terms, type(node).__name__
    checked = [t for t in e.terms if t.recorded is not None]
    assert checked and all(t.matches for t in checked), e.text
    assert all(t.substituted for t in checked), e.text


ENGINE_NN = [c for c in NN_CASES if c[0] not in ("Addmm", "NllLoss", "Embedding", "MaxPool")] + [
    ("Linear", lambda F, x, w, b: F.linear(x, w, b), [_floats(3, 4), _floats(2, 4), _floats(2)])]


class _EngineAsTorch:
    """The makers' torch.rand and torch.tensor, on the engine."""
    rng = np.random.default_rng(0)

    def __init__(self):
        import gradviz.engine as gt
        self.gt, self.float64 = gt, gt.float64

    def rand(self, *shape, dtype=None):
        return self.gt.tensor(self.rng.random(shape))

    def tensor(self, values):
        return self.gt.tensor(values)


@pytest.mark.parametrize("op,fn,makers", ENGINE_NN, ids=[c[0] for c in ENGINE_NN])
def test_the_network_rules_against_the_engine(op, fn, makers):
    """From the trace alone (no saved tensors): NllLoss, Embedding and MaxPool need their integer
    inputs, which the debugger fetches as saved tensors when paused there."""
    import gradviz.engine as gt
    import gradviz.engine.nn.functional as F
    t = _EngineAsTorch()
    xs = [m(t) for m in makers]
    xs = [x.requires_grad_() if x.dtype == gt.float64 else x for x in xs]
    with gradviz.record() as rec:
        y = fn(F, *xs)
        y.backward(gt.ones(y.shape) if y.ndim else None)
    tr = rec.trace
    nid = [n for n in tr.passes[-1].order if tr.nodes[n].kind == "grad_fn"][0]
    e = explain_node(tr, nid)
    checked = [t for t in e.terms if t.recorded is not None]
    assert checked and all(t.matches for t in checked), (tr.nodes[nid].op, e.text)


def test_the_jacobian_of_the_paused_node_and_its_vjp_check():
    from gradviz import Debugger
    with Debugger.launch(demo="seed", breakpoints=[{"op": "PowBackward0"}]) as dbg:
        dbg.wait_paused(timeout=30)
        dbg.resume()
        pause = dbg.wait_paused(timeout=30)  # a**3's PowBackward0, v = [3, 3]
        jac = dbg.jacobian()
        (J,) = jac.blocks
        assert J.tolist() == [[12.0, 0.0], [0.0, 27.0]]  # d(a**3)/da = diag(3 * a**2), a = [2, 3]
        assert [x.tolist() for x in jac.vjp()] == [[36.0, 81.0]] and jac.matches == [True]
        typed = dbg.vjp([np.array([1.0, 2.0])])  # a v the user typed: only this node runs again
        assert typed[0].tolist() == [12.0, 54.0] and jac.vjp([np.array([1.0, 2.0])])[0].tolist() == [12.0, 54.0]
        assert len(dbg.trace.passes[-1].grad_inputs) == 4  # the pass did not move: Sub, Pow, Acc, Mul
        dbg.step()
        dbg.wait_paused(timeout=30)
        assert dbg.trace.passes[-1].grad_inputs[pause.node][0].array.tolist() == [36.0, 81.0]


def test_the_jacobian_against_pytorchs(tmp_path):
    torch = pytest.importorskip("torch")
    from gradviz import Debugger
    script = tmp_path / "prog.py"
    script.write_text("import torch\nx = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)\n"
                      "y = x.softmax(0)\ny.backward(torch.tensor([1.0, 2.0, 3.0]))\n")
    with Debugger.launch(str(script), breakpoints=[{"op": "SoftmaxBackward0"}]) as dbg:
        pause = dbg.wait_paused(timeout=60)
        assert pause.op == "SoftmaxBackward0", pause
        jac = dbg.jacobian()
        expected = torch.autograd.functional.jacobian(lambda x: x.softmax(0), torch.tensor([0.5, -1.0, 2.0]))
        assert np.allclose(jac.blocks[0], expected.numpy(), atol=1e-6)
        assert jac.matches == [True]


PROGRAM = """
import {mod} as torch
import {F} as F
a = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]], requires_grad=True)
w = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]], requires_grad=True)
b = torch.tensor([0.1, -0.1], requires_grad=True)
h = (a @ w + b).tanh() * 2 - a.sum(1, keepdim=True).sigmoid() / 3
z = F.relu(h).exp() + (h ** 2 + 1).log()
loss = F.nll_loss(z.log_softmax(-1), torch.tensor([1, 0])) + z.mean()
loss.backward()
"""


@pytest.mark.parametrize("framework", ["engine", "torch"])
def test_every_paused_node_explained_and_its_jacobian_checked(tmp_path, framework):
    """Stepping a small program node by node: each node's computed rule (with the saved tensors
    the child fetches) and its Jacobian's v^T . J equal the grad_inputs it then records."""
    from gradviz import Debugger
    if framework == "torch":
        pytest.importorskip("torch")
        mod, F = "torch", "torch.nn.functional"
    else:
        mod, F = "gradviz.engine", "gradviz.engine.nn.functional"
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM.format(mod=mod, F=F))
    checked, jacobians = [], 0
    with Debugger.launch(str(script), break_on_backward=True) as dbg:
        pause = dbg.wait_paused(timeout=60)
        while pause.reason != "exited":
            node = pause.node if pause.phase == "backward" and "AccumulateGrad" not in (pause.op or "") else None
            e = dbg.explain() if node is not None else None
            jac = dbg.jacobian() if node is not None else None
            dbg.step()
            pause = dbg.wait_paused(timeout=60)
            if node is None:
                continue
            recorded = [None if v is None else v.array for v in dbg.trace.passes[-1].grad_inputs[node]]
            for t, r in zip(e.terms, recorded):
                if t.computed is not None and r is not None:
                    assert np.allclose(t.computed, r, rtol=1e-4, atol=1e-6), (e.op, e.text)
                    checked.append(e.op)
            for c, r in zip(jac.vjp(), recorded):
                if c is not None and r is not None:
                    assert np.allclose(c, np.ravel(r), rtol=1e-4, atol=1e-6), jac.op
                    jacobians += 1
    assert len(set(checked)) >= 10 and jacobians >= 12, (checked, jacobians)


def test_the_inspector_draws_the_jacobian_and_its_check():
    pytest.importorskip("PySide6")
    from gradviz.debug.debugger import Jacobian
    from gradviz.ui.inspector import jacobian_html
    jac = Jacobian(3, "PowBackward0", [np.array([3.0, 3.0])], [np.array([[12.0, 0.0], [0.0, 27.0]])],
                   [np.array([36.0, 81.0])])
    html = jacobian_html(jac)
    assert "v = [3, 3]" in html and "v^T . J = [36, 81]" in html and "✓" in html and ">27<" in html
    jac.grad_inputs = [np.array([36.0, 80.0])]
    assert "differs" in jacobian_html(jac)


def test_a_typed_v_reruns_only_the_paused_node_in_the_inspector(qtbot):
    """The seed's PowBackward0 of a**3: the user types v = [1, 2]; the inspector shows v^T . J from
    the Jacobian and from the node's backward run once more in the program, and the pass is as it was."""
    from gradviz import Debugger
    from gradviz.app.state import AppState
    from gradviz.ui.inspector import Inspector
    import time
    st = AppState(launch=lambda breakpoints=(), **_: Debugger.launch(demo="seed", breakpoints=[{"op": "PowBackward0"}]))
    dbg = st.debugger

    def paused(n):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st.poll()
            if st.pause is not None and len(st.trace.passes[-1].order if st.trace.passes else ()) >= n:
                return
            time.sleep(0.02)
        raise AssertionError("no pause")
    try:
        paused(1)  # b**2's PowBackward0
        st.resume()
        paused(4)  # a**3's PowBackward0, v = [3, 3]
        assert st.pause.op == "PowBackward0"
        ins = Inspector(st)
        qtbot.addWidget(ins)
        with st.lock:
            ins.show_key(st.current)
        assert "Try another v" in ins.toHtml()
        with st.lock:
            assert ins.try_v("1, 2") is None
        text = ins.toPlainText()
        assert "your v = [1, 2]" in text
        assert "v^T . J = [12, 54] for input 0; the node's backward run again on it: [12, 54] ✓" in text
        with st.lock:
            assert "2 elements" in ins.try_v("1 2 3")  # a v of the wrong size: said, not raised
            assert "not numbers" in ins.try_v("one, two")
        assert len(dbg.trace.passes[-1].grad_inputs) == 4  # the pass did not move
    finally:
        st.close()


JACOBIAN_OPS = {  # forward op on x (a 2x3 tensor), as text both frameworks run
    "exp": "x.exp()", "log": "x.abs().log()", "sqrt": "x.abs().sqrt()", "tanh": "x.tanh()",
    "sigmoid": "x.sigmoid()", "relu": "x.relu()", "neg": "-x", "mul": "x * 3", "div": "x / 4",
    "pow": "x ** 3", "sum": "x.sum(1)", "mean": "x.mean()", "softmax": "x.softmax(-1)",
    "log_softmax": "x.log_softmax(-1)", "mm": "x @ W", "t": "x.t()", "reshape": "x.reshape(3, 2)",
    "view": "x.view(6)", "transpose": "x.transpose(0, 1)", "gelu": "torch.nn.functional.gelu(x)",
    "layer_norm": "torch.nn.functional.layer_norm(x, (3,))",
    "addmm": "torch.nn.functional.linear(x, W.t(), torch.ones(2))",
    "nll_loss": "torch.nn.functional.nll_loss(x, torch.tensor([1, 0]))",
    "bmm": "torch.bmm(x.view(1, 2, 3), W.view(1, 3, 2))",
    "max_pool2d": "torch.nn.functional.max_pool2d(x.view(1, 1, 2, 3), 2, 1)",
    "conv2d": "torch.nn.functional.conv2d(x.view(1, 1, 2, 3), W.view(1, 1, 3, 2)[:, :, :2, :])",
    "batch_norm": "torch.nn.functional.batch_norm(x, None, None, training=True)",
    "add": "x + 2", "sub": "x - 2", "expand": "x.view(2, 1, 3).expand(2, 2, 3)",
    "embedding": "torch.nn.functional.embedding(torch.tensor([1, 0, 1]), x)",
}


@pytest.mark.parametrize("framework", ["engine", "torch"])
@pytest.mark.parametrize("op", list(JACOBIAN_OPS))
def test_a_nodes_jacobian_equals_pytorchs_functional_jacobian(op, framework, tmp_path):
    """The paused node's Jacobian (its backward run on each unit vector in the child) against
    torch.autograd.functional.jacobian of the same forward op on the same input."""
    torch = pytest.importorskip("torch")
    from gradviz import Debugger
    x0 = [[0.5, -1.2, 2.0], [1.5, 0.3, -0.7]]
    W0 = [[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]]
    expr = JACOBIAN_OPS[op]

    def forward(x):
        W = torch.tensor(W0)  # noqa: F841 (used by the expression)
        return eval(expr)
    x = torch.tensor(x0, requires_grad=True)
    y = forward(x)
    node = y.grad_fn  # the op's own node (log and sqrt read |x|: their input comes from AbsBackward0)
    expected = torch.autograd.functional.jacobian(forward, torch.tensor(x0)).reshape(y.numel(), -1).numpy()
    mod = "torch" if framework == "torch" else "gradviz.engine"
    script = tmp_path / "prog.py"
    script.write_text(f"import {mod} as torch\nx = torch.tensor({x0}, requires_grad=True)\n"
                      f"W = torch.tensor({W0})\ny = {expr}\ny.backward(torch.ones_like(y))\n")
    with Debugger.launch(str(script), breakpoints=[{"op": node.name()}]) as dbg:
        pause = dbg.wait_paused(timeout=60)
        assert pause.op == node.name(), pause
        jac = dbg.jacobian()
        (J,) = [b for b in jac.blocks if b is not None]
        if op in ("log", "sqrt"):  # the node's input is |x|: d/d|x|, times sign(x) for d/dx
            J = J * np.sign(np.array(x0).ravel())[None, :]
        np.testing.assert_allclose(J, expected, rtol=1e-4, atol=1e-5)
        assert True in jac.matches and all(m in (True, None) for m in jac.matches)  # v^T . J = grad_inputs
