"""Recording and debugging real PyTorch programs: the same events as the engine's."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import gradviz
import gradviz.engine as gt
from gradviz import Debugger, events as ev

torch = pytest.importorskip("torch")

# GRADVIZ_TEST_TORCH_DEVICE=cuda runs these tests with the tensors they make on that device (the
# adapter must work unchanged on CUDA tensors); the programs run in a child read it too.
DEVICE = os.environ.get("GRADVIZ_TEST_TORCH_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _default_device():
    torch.set_default_device(DEVICE)
    yield
    torch.set_default_device("cpu")


def _norm(op):
    return op.replace("torch::autograd::", "")


def test_torch_seed_is_recorded_with_torch_names():
    a = torch.tensor([2., 3.], requires_grad=True)
    b = torch.tensor([6., 4.], requires_grad=True)
    with gradviz.record() as rec:
        Q = 3 * a ** 3 - b ** 2
        Q.backward(gradient=torch.tensor([1., 1.]))
    t = rec.trace
    assert [t.nodes[n].op for n in t.passes[0].order] == [
        "SubBackward0", "PowBackward0", "torch::autograd::AccumulateGrad",
        "MulBackward0", "PowBackward0", "torch::autograd::AccumulateGrad"]
    np.testing.assert_array_equal(t.grad("a").array, [36., 81.])
    np.testing.assert_array_equal(t.grad("b").array, [-12., -8.])
    assert a.grad.tolist() == [36., 81.]  # PyTorch did the work; gradviz only watched
    sub = next(n for n in t.nodes.values() if n.op == "SubBackward0")
    assert sub.source.file == __file__ and sub.source.function == "test_torch_seed_is_recorded_with_torch_names"


def _mlp(lib, seed_weights=None):
    nn = lib.nn
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    if seed_weights is not None:
        with lib.no_grad():
            for (_name, p), w in zip(model.named_parameters(), seed_weights):
                p.copy_(lib.tensor(w))
    return model


def _train(lib, model, x, y, steps=3):
    opt = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        loss = lib.nn.functional.cross_entropy(model(lib.tensor(x)), lib.tensor(y))
        loss.backward()
        opt.step()


def test_parity_engine_and_torch_give_the_same_trace():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=s).astype(np.float32) for s in ((8, 4), (8,), (3, 8), (3,))]
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0, 2])
    traces = []
    for lib in (gt, torch):
        model = _mlp(lib, weights)
        with gradviz.record() as rec:
            _train(lib, model, x, y)
        traces.append(rec.trace)
    te, tt = traces
    # Same events, but not always in the same order: one torch call (linear) can make two nodes.
    # (Data tensors may differ: torch reports cross_entropy's integer target as an input.)
    kinds = lambda t: sorted(type(e).__name__ for e in t.events  # noqa: E731
                             if not (isinstance(e, ev.TensorDescribed) and e.kind == "input"))
    assert kinds(te) == kinds(tt)
    import networkx as nx
    assert nx.is_isomorphic(te.graph, tt.graph, node_match=lambda a, b: _norm(a["op"]) == _norm(b["op"]))
    assert len(te.passes) == len(tt.passes) == 3 and len(te.steps) == len(tt.steps) == 3
    # Within a pass, the same moments in the same order: an AccumulateGrad node is entered, adds
    # its gradient, then exits, in both.
    moments = lambda t: [(type(e).__name__, _norm(t.nodes[e.node].op)) for e in t.events  # noqa: E731
                         if isinstance(e, (ev.NodeEntered, ev.GradAccumulated, ev.NodeExited))]
    assert moments(te) == moments(tt)
    assert moments(tt)[-3:] == [("NodeEntered", "AccumulateGrad"), ("GradAccumulated", "AccumulateGrad"),
                                ("NodeExited", "AccumulateGrad")]
    for pe, pt in zip(te.passes, tt.passes):
        assert [_norm(te.nodes[n].op) for n in pe.order] == [_norm(tt.nodes[n].op) for n in pt.order]
        for ne, nt in zip(pe.order, pt.order):
            assert te.nodes[ne].scope == tt.nodes[nt].scope
            for ve, vt in zip(pe.grad_outputs[ne], pt.grad_outputs[nt]):
                np.testing.assert_allclose(ve.array, vt.array, rtol=1e-5, atol=1e-6)
                assert ve.summary.norm == pytest.approx(vt.summary.norm, rel=1e-5, abs=1e-6)
    names = lambda t: sorted(x.name for x in t.tensors.values() if x.kind == "parameter")  # noqa: E731
    assert names(te) == names(tt) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    for se, st in zip(te.steps, tt.steps):
        np.testing.assert_allclose(se.update_norms, st.update_norms, rtol=1e-5)
    assert te.graph.number_of_nodes() == tt.graph.number_of_nodes()
    assert te.graph.number_of_edges() == tt.graph.number_of_edges()


def test_hooks_are_removed_when_the_pass_ends():
    w = torch.randn(3, requires_grad=True)
    with gradviz.record():
        y = (w * 2).sum()
        y.backward(retain_graph=True)
    calls = []
    y.grad_fn.register_prehook(lambda g: calls.append(1))
    y.backward()  # outside the recording: only the test's own hook runs, nothing of gradviz's
    assert calls == [1] and w.grad.tolist() == [4., 4., 4.]


def _accumulations(model, x):
    """One backward pass of ``model``: for each parameter, whether ``.grad`` is the very gradient
    its AccumulateGrad node was handed (PyTorch takes it when nobody else holds it) or a copy."""
    model.zero_grad()
    y = model(x).sum()
    accs, stack, seen = [], [y.grad_fn], set()
    while stack:
        n = stack.pop()
        if n is not None and n not in seen:
            seen.add(n)
            if hasattr(n, "variable"):
                accs.append(n)
            stack.extend(f for f, _ in n.next_functions)
    handed = {}
    for a in accs:  # the pointer only: holding the tensor here would itself force a copy
        a.register_prehook(lambda go, a=a: handed.__setitem__(a, go[0].data_ptr()))
    y.backward()
    return sorted("taken" if a.variable.grad.data_ptr() == p else "copied" for a, p in handed.items())


@pytest.mark.parametrize("values", ["summaries", "full"])
def test_recording_lets_pytorch_take_the_gradient_into_grad_without_a_copy(values):
    # gradviz's hooks once kept the gradient an AccumulateGrad node was handed until it had been
    # accumulated, and PyTorch then copied every parameter's gradient (a model's worth of memory
    # and time, each step).
    model = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 1))
    x = torch.randn(8, 30)
    assert _accumulations(model, x) == ["taken"] * 4  # plain PyTorch
    with gradviz.record(values=values) as rec:
        for _ in range(2):
            assert _accumulations(model, x) == ["taken"] * 4
    # and the recorded accumulations still carry the gradients
    last = [e for e in rec.trace.events if isinstance(e, ev.GradAccumulated)][-4:]
    grads = {id(p): p.grad for p in model.parameters()}
    recorded = sorted(round(e.grad.summary.norm, 4) for e in last)
    assert recorded == sorted(round(float(g.norm()), 4) for g in grads.values())
    assert all(e.contribution is e.grad for e in last)  # .grad was None: the contribution is .grad

def test_a_gradient_written_in_place_is_recorded_as_it_is_then():
    # PyTorch adds a second branch's gradient into the first branch's tensor in place, and a
    # user's hook may scale a gradient in place: what a node is handed is the value after that.
    x = torch.ones(2, 3, requires_grad=True)
    with gradviz.record(values="full") as rec:
        y = x * 2
        (y[0].sum() + 10 * y[1].sum()).backward()
        z = x * 3
        z.register_hook(lambda g: g.mul_(2))
        (z * torch.ones(2, 3)).sum().backward()
    t = rec.trace
    muls = [n for n in t.passes[0].order if t.nodes[n].op == "MulBackward0"]
    handed = t.passes[0].grad_outputs[muls[-1]][0]  # y = x * 2 (the first is 10 * ...)
    assert handed.array.tolist() == [[1.0] * 3, [10.0] * 3]
    assert handed.summary.norm == pytest.approx(float(np.sqrt(3 + 300)))
    first, second = [n for n in t.passes[1].order if t.nodes[n].op == "MulBackward0"]
    assert t.passes[1].grad_inputs[first][0].array.tolist() == [[1.0] * 3] * 2  # as it left z * 1
    assert t.passes[1].grad_outputs[second][0].array.tolist() == [[2.0] * 3] * 2  # after the hook


def test_graph_nodes_that_are_not_torch_autograd_graph_nodes_are_recorded():
    # foreach ops (and TorchScript, forward-mode AD) make nodes of PyTorch's generic CppFunction
    # type, which is no torch.autograd.graph.Node; they once went to the engine's adapter and crashed
    p1, p2 = torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)
    with gradviz.record() as rec:
        outs = torch._foreach_mul([p1, p2], 2.0)
        (outs[0].sum() + outs[1].sum()).backward()
    assert type(outs[0].grad_fn).__name__ == "CppFunction"
    assert "ForeachMulBackward1Scalar" in [rec.trace.nodes[n].op for n in rec.trace.passes[0].order]
    np.testing.assert_array_equal(rec.trace.grad("p1").array, [2.0] * 3)


def test_roots_and_gradients_given_as_iterators_reach_pytorch_whole():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    with gradviz.record() as rec:
        torch.autograd.backward([a * 2, b * 3], (g for g in [torch.ones(3), torch.full((3,), 2.0)]))
        (ga,) = torch.autograd.grad(iter([(a * b).sum()]), [a], grad_outputs=iter([torch.tensor(2.0)]))
    assert (a.grad.tolist(), b.grad.tolist(), ga.tolist()) == ([2.0] * 3, [6.0] * 3, [2.0] * 3)
    assert len(rec.trace.passes) == 2


def test_a_compiled_model_is_recorded_as_the_graph_node_it_runs_as():
    # gradviz's hooks stand aside while torch.compile traces (tracing them once broke it); the
    # compiled graph runs as one PyTorch node. aot_eager: AOTAutograd's graphs, without a C compiler.
    import warnings
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    x = torch.randn(4, 8)
    model(x).sum().backward()
    plain = [q.grad.clone() for q in model.parameters()]
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing the program would not have printed itself
        with gradviz.record() as rec:
            model.zero_grad()
            compiled(x).sum().backward()
    assert all(torch.equal(q.grad, g) for q, g in zip(model.parameters(), plain))
    ops = [_norm(rec.trace.nodes[n].op) for n in rec.trace.passes[0].order]
    assert ops[:2] == ["SumBackward0", "CompiledFunctionBackward"] and ops.count("AccumulateGrad") == 4
    torch._dynamo.reset()


class _Wrapper(torch.Tensor):
    """A wrapper subclass with no storage of its own (as tensor-parallel and FP8 libraries make)."""

    @staticmethod
    def __new__(cls, elem):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype, device=elem.device,
                                                   requires_grad=elem.requires_grad)

    def __init__(self, elem):
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_map
        out = func(*tree_map(lambda t: t.elem if isinstance(t, _Wrapper) else t, args),
                   **tree_map(lambda t: t.elem if isinstance(t, _Wrapper) else t, kwargs or {}))
        return tree_map(lambda t: _Wrapper(t) if isinstance(t, torch.Tensor) else t, out)


def _through_wrapper():
    w = _Wrapper(torch.arange(3.0)).requires_grad_()
    (w * w).sum().backward()
    return w.grad.elem


def _batched_grads():
    a = torch.arange(3.0, requires_grad=True)
    return torch.autograd.grad(a * 2, a, torch.eye(3), is_grads_batched=True)[0]


def _jagged():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch's own: nested tensors are a prototype)
        a = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)], layout=torch.jagged,
                                       requires_grad=True)
    return (a * 2).sin().values()


@pytest.mark.parametrize("program", [
    lambda: torch.func.grad(lambda t: (t.sin() * 2).sum())(torch.arange(4.0)),
    lambda: torch.func.jacrev(lambda t: t.sin() * 2)(torch.arange(4.0)),
    _batched_grads, _through_wrapper, _jagged], ids=["func.grad", "jacrev", "batched grads", "wrapper", "jagged"])
def test_tensors_whose_values_cannot_be_read_are_recorded_by_shape_and_the_program_runs_as_alone(program):
    plain = program()
    with gradviz.record(values="full") as rec:
        got = program()
    assert torch.equal(got, plain)
    assert rec.trace.events  # something was recorded, and nothing broke


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # PyTorch's own, with or without gradviz
def test_torch_jit_trace_makes_the_same_graph_while_recording():
    # a summary's reductions once ran inside the trace and went into its graph (and its check failed)
    import re
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    x = torch.randn(4, 3)
    graph = lambda m: re.sub(r"___torch_mangle_\d+\.", "", str(m.graph))  # noqa: E731
    plain = torch.jit.trace(model, x)
    with gradviz.record() as rec:
        traced = torch.jit.trace(model, x)
        traced(x).sum().backward()
    assert graph(traced) == graph(plain)
    assert len(rec.trace.passes) == 1 and model[0].weight.grad is not None


def test_autograd_grad_is_recorded_and_leaves_grad_alone():
    x = torch.tensor([1., 2.], requires_grad=True)
    with gradviz.record() as rec:
        (g,) = torch.autograd.grad((x ** 2).sum(), [x])
    assert g.tolist() == [2., 4.] and x.grad is None
    assert [_norm(rec.trace.nodes[n].op) for n in rec.trace.passes[0].order] == ["SumBackward0", "PowBackward0"]


TORCH_SEED = """
import os, torch
torch.set_default_device(os.environ.get("GRADVIZ_TEST_TORCH_DEVICE", "cpu"))
a = torch.tensor([2., 3.], requires_grad=True)
b = torch.tensor([6., 4.], requires_grad=True)
Q = 3*a**3 - b**2
Q.backward(gradient=torch.tensor([1., 1.]))
print("done", a.grad.tolist())
"""


def test_stepping_pauses_pytorchs_own_backward(tmp_path):
    script = tmp_path / "torch_seed.py"
    script.write_text(TORCH_SEED)
    with Debugger.launch(script=script, break_on_backward=True) as dbg:
        seen = []
        for _ in range(6):
            p = dbg.wait_paused(timeout=60)
            assert p.reason == "step" and p.source.file == str(script) and p.source.line == 6
            seen.append((_norm(p.op), p.grad_outputs[0].tolist(), [(n, a.tolist()) for n, a in dbg.saved_tensors()]))
            dbg.step()
        # saved tensors by PyTorch's own names: b**2 saved self = b; 3*(a**3) saved other = 3
        assert seen == [("SubBackward0", [1., 1.], []), ("PowBackward0", [-1., -1.], [("self", [6., 4.])]),
                        ("AccumulateGrad", [-12., -8.], []), ("MulBackward0", [1., 1.], [("other", 3.0)]),
                        ("PowBackward0", [3., 3.], [("self", [2., 3.])]), ("AccumulateGrad", [36., 81.], [])]
        assert dbg.wait_paused(timeout=60).reason == "exited"
        assert "done [36.0, 81.0]" in "".join(t for _, t in dbg.output)


def test_program_importing_torch_later_is_recorded(tmp_path, capfd):
    # In the child, torch is imported by the program itself, after recording began.
    script = tmp_path / "late.py"
    script.write_text(TORCH_SEED)
    out = tmp_path / "t.gvz"
    assert subprocess.call([sys.executable, "-m", "gradviz", "record", str(script), "-o", str(out)]) == 0
    t = gradviz.load(out)
    assert len(t.passes) == 1 and t.grad("a").array.tolist() == [36., 81.]


def test_torch_resnet_demo_records_only_the_trained_fc():
    from gradviz import demos
    with gradviz.record(values="summaries") as rec:
        demos.run("torch-resnet")
    t = rec.trace
    assert sorted(x.name for x in t.tensors.values() if x.kind == "parameter") == ["fc.bias", "fc.weight"]
    # Frozen parameters make no graph nodes, but they are described, named after their modules.
    frozen = [x.name for x in t.tensors.values() if x.kind == "frozen"]
    assert len(frozen) == 60 and "conv1.weight" in frozen and "layer4.1.bn2.weight" in frozen
    assert all(d["kind"] != "frozen" for _, d in t.graph.nodes(data=True))


def test_nan_anomaly_in_torch(tmp_path):
    script = tmp_path / "nan.py"
    script.write_text(f"import torch\ntorch.set_default_device({DEVICE!r}); p = torch.zeros(2, requires_grad=True)\n"
                      "d = ((p - torch.zeros(2)) ** 2).sum().sqrt()\nd.backward()\n")
    with Debugger.launch(script=script, breakpoints=[{"anomaly": True}]) as dbg:
        p = dbg.wait_paused(timeout=60)
        assert (p.reason, _norm(p.op), p.source.line) == ("anomaly", "SqrtBackward0", 3)
        dbg.resume()
        assert dbg.wait_paused(timeout=60).reason == "exited"


def test_events_carry_torch_values_as_numpy():
    x = torch.ones(2, 3, requires_grad=True)
    with gradviz.record() as rec:
        (x * 2).sum().backward()
    created = [e for e in rec.trace.events if isinstance(e, ev.NodeCreated) and e.kind == "grad_fn"]
    assert all(isinstance(e.value.array, np.ndarray) for e in created)
    assert created[0].value.array.tolist() == [[2.] * 3] * 2 and created[0].output_dtype == "<f4"


@pytest.mark.parametrize("make", [
    lambda: torch.randn(8, 64, 32, 32),  # large: its exact statistics come from torch's reductions
    lambda: torch.randn(300, 300, dtype=torch.float64) * 1e3,
    lambda: torch.randn(64, 64)[:, ::2],  # a strided view: numpy's path
    lambda: torch.arange(100000, dtype=torch.int32),
])
def test_torch_summaries_equal_numpys(make):
    from gradviz.summary import summarize
    from gradviz.adapters.torch import TorchAdapter
    x = make()
    got, want = TorchAdapter(torch).summarize(x), summarize(x.cpu().contiguous().numpy())
    assert (got.shape, got.numel, got.nan, got.inf, got.sampled) == (want.shape, want.numel, want.nan, want.inf,
                                                                     want.sampled)
    assert (got.min, got.max) == (want.min, want.max) == (x.min().item(), x.max().item())
    assert got.norm == pytest.approx(want.norm, rel=1e-6)
    assert got.norm == pytest.approx(torch.linalg.vector_norm(x.double()).item(), rel=1e-5)
    assert got.hist == want.hist and got.mean == pytest.approx(want.mean, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("values", ["summaries", "full"])
@pytest.mark.parametrize("rows", [10, 40000])  # made dense; summarised from its stored values
def test_sparse_gradients_are_recorded_as_the_dense_values_they_stand_for(rows, values):
    # nn.Embedding(sparse=True) hands sparse gradients to AccumulateGrad and .grad; recording
    # once crashed the program on them (numpy cannot take a sparse tensor).
    torch.manual_seed(0)
    emb = torch.nn.Embedding(rows, 2, sparse=True)
    opt = torch.optim.SGD(emb.parameters(), lr=0.1)
    index = torch.arange(0, rows, 2)  # every other row: half the gradient's values are stored
    with gradviz.record(values=values) as rec:
        for _ in range(2):
            opt.zero_grad()
            emb(index).pow(2).sum().backward()
            opt.step()
    dense = emb.weight.grad.to_dense()
    assert emb.weight.grad.is_sparse
    got = rec.trace.grad("emb.weight")  # (a module called alone: named by its variable)
    s = got.summary
    assert (s.shape, s.numel, s.nan, s.inf) == ((rows, 2), rows * 2, 0, 0)
    assert (s.min, s.max) == (float(dense.min()), float(dense.max()))
    assert s.norm == pytest.approx(float(dense.norm()), rel=1e-6)
    assert s.sampled == (rows * 2 >= 65536)
    zero_bin = min(int((0 - s.hist_lo) / (s.hist_hi - s.hist_lo) * len(s.hist)), len(s.hist) - 1)
    assert s.hist[zero_bin] >= sum(s.hist) // 2  # the zeros it leaves out: half of the values
    assert s.mean == pytest.approx(float(dense.mean()), abs=0.1 * float(dense.std()))
    if values == "full":
        np.testing.assert_array_equal(got.array, dense.cpu().numpy())
    else:
        assert got.array is None


def test_complex_values_are_recorded_kept_and_written_to_trace_files(tmp_path):
    import warnings
    w = torch.randn(64, requires_grad=True)
    path = tmp_path / "fft.gvz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gradviz.record(values="full", path=path):
            y = torch.fft.rfft(w * 2)
            y.abs().sum().backward()
    fft = next(n for n in gradviz.load(path).nodes.values() if n.op == "FftR2CBackward0")
    assert fft.value.summary.dtype == "<c8" and fft.value.array.dtype == np.complex64
    np.testing.assert_array_equal(fft.value.array, y.detach().cpu().numpy())
    assert fft.value.summary.max == pytest.approx(float(y.detach().abs().max()))
    from gradviz.adapters.torch import TorchAdapter
    big = torch.randn(70000, dtype=torch.complex64)  # the large path: torch's reductions
    s = TorchAdapter(torch).summarize(big)
    assert s.dtype == "<c8" and s.norm == pytest.approx(float(torch.linalg.vector_norm(big)), rel=1e-5)
    assert s.min == pytest.approx(float(big.abs().min()))


def test_meta_tensors_are_recorded_by_shape_alone(tmp_path):
    # PyTorch's meta device: shapes without values (models built before their weights are loaded)
    with gradviz.record(values="full", path=tmp_path / "meta.gvz") as rec:
        m = torch.nn.Linear(4, 3, device="meta")
        m(torch.randn(2, 4, device="meta")).sum().backward()
    assert m.weight.grad.device.type == "meta"
    for t in (rec.trace, gradviz.load(tmp_path / "meta.gvz")):
        g = t.grad("m.weight")
        assert (g.summary.shape, g.summary.numel, g.array) == ((3, 4), 12, None)
        assert math.isnan(g.summary.max) and math.isnan(g.summary.norm) and g.summary.finite


def test_views_that_show_the_same_memory_another_way_are_recorded_as_they_show_it():
    # a conjugate view, a square transpose: the same memory and shape as the tensor behind them,
    # other values in each place (a cached value once stood in for them)
    w = torch.tensor([1 + 2j, 3 - 1j, -2j], requires_grad=True)
    A = torch.tensor([[1 + 1j, 2, 3j], [4, -5j, 6]], requires_grad=True)
    x = torch.arange(9.0).reshape(3, 3).requires_grad_()
    M = torch.arange(9.0).reshape(3, 3) * 10
    with gradviz.record(values="full") as rec:
        (w.conj() * torch.tensor([1, 1j, 2])).abs().sum().backward()
        (A.mH @ torch.ones(2, 1, dtype=torch.cfloat)).abs().sum().backward()
        (x.t() * M).sum().backward()
    for i, (name, t) in enumerate((("w", w), ("A", A), ("x", x))):
        np.testing.assert_allclose(rec.trace.grad(name, i).array, t.grad.resolve_conj().cpu().numpy(), rtol=1e-6)
    from gradviz.adapters.torch import TorchAdapter
    z = torch.tensor([1 + 2j, 3 - 4j])
    s = TorchAdapter(torch).summarize(z.conj().imag)  # a negative view
    assert (s.min, s.max) == (-2.0, 4.0)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")  # PyTorch's own, as are:
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_complex32_and_quantized_tensors_are_read_as_the_values_they_stand_for():
    from gradviz.adapters.torch import TorchAdapter
    adapter = TorchAdapter(torch)
    c = torch.tensor([3 + 4j, 1j], dtype=torch.complex64).to(torch.complex32)
    assert adapter.to_numpy(c, True).tolist() == [3 + 4j, 1j]
    assert (adapter.summarize(c).max, adapter.summarize(c).dtype) == (5.0, "complex32")
    q = torch.quantize_per_tensor(torch.tensor([-1.0, 0.5, 2.0], device="cpu"), scale=0.5, zero_point=0,
                                  dtype=torch.qint8)  # (quantized tensors live on the CPU)
    assert adapter.to_numpy(q, True).tolist() == [-1.0, 0.5, 2.0]
    assert (adapter.summarize(q).min, adapter.summarize(q).max) == (-1.0, 2.0)


def test_dtypes_numpy_lacks_are_summarised_and_kept_as_float64():
    from gradviz.adapters.torch import TorchAdapter
    x = torch.tensor([0.5, -2.0, 3.0]).to(torch.float8_e4m3fn)
    adapter = TorchAdapter(torch)
    s = adapter.summarize(x)
    assert (s.dtype, s.min, s.max, s.numel) == ("float8_e4m3fn", -2.0, 3.0, 3)
    assert adapter.to_numpy(x, True).tolist() == [0.5, -2.0, 3.0]


def test_torch_summary_of_a_large_tensor_with_nan_and_inf_counts_them():
    from gradviz.adapters.torch import TorchAdapter
    x = torch.randn(100000)
    x[3], x[10], x[11] = float("nan"), float("inf"), -float("inf")
    s = TorchAdapter(torch).summarize(x)
    finite = x[torch.isfinite(x)]
    assert (s.nan, s.inf) == (1, 2)
    assert (s.min, s.max) == (finite.min().item(), finite.max().item())


def test_the_device_path_of_summaries_on_bfloat16():
    """bfloat16 takes the path a CUDA tensor takes (torch's reductions and one copy to the host):
    exact min and max, the sample's histogram, NaN and Inf counted."""
    from gradviz.summary import summarize
    from gradviz.adapters.torch import TorchAdapter
    x = torch.randn(8, 64, 32, 32).to(torch.bfloat16)
    got, want = TorchAdapter(torch).summarize(x), summarize(x.float().cpu().numpy())
    assert (got.min, got.max, got.numel, got.sampled, got.hist) == (want.min, want.max, want.numel, True, want.hist)
    # float32 accumulation, not bfloat16 rounding (the norm was once rounded: 46.5 for 46.53)
    assert got.norm == pytest.approx(want.norm, rel=1e-4)
    y = torch.randn(5000).to(torch.bfloat16)
    y[3], y[7] = float("nan"), float("inf")
    s = TorchAdapter(torch).summarize(y)
    finite = y.float()[torch.isfinite(y.float())]
    assert (s.nan, s.inf, s.max) == (1, 1, finite.max().item())


def _described(trace, name):
    """The TensorDescribed events of the tensor named ``name``, in order."""
    return [e for e in trace.events if isinstance(e, ev.TensorDescribed) and e.name == name]


@pytest.mark.parametrize("update", ["fused", "data"])
def test_each_iteration_describes_a_leaf_with_its_value_then(update):
    """Ways a weight changes that PyTorch's version counter does not see (a fused optimizer's step;
    the manual SGD of pytorch/examples, ``p.data.add_``, here on an embedding whose untouched rows
    keep their values): each iteration's description still holds the weight's value then. (A
    recording once trusted the version counter and a probe of 16 values, and showed stale
    weights in 18 of 20 iterations here.)"""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(1000, 8)
    opt = torch.optim.SGD(emb.parameters(), lr=0.5, fused=update == "fused") if update == "fused" else None
    recorded, actual = [], []
    with gradviz.record(values="summaries") as rec:
        for _ in range(6):
            actual.append(float(np.linalg.norm(emb.weight.detach().cpu().numpy())))
            emb(torch.randint(0, 1000, (10,))).pow(2).sum().backward()
            if opt is not None:
                opt.step()
                opt.zero_grad()
            else:
                with torch.no_grad():
                    emb.weight.data.add_(emb.weight.grad, alpha=-0.5)
                emb.weight.grad = None
    recorded = [e.value.summary.norm for e in _described(rec.trace, "emb.weight")]
    assert len(recorded) == 6 and len(set(actual)) == 6
    assert recorded == pytest.approx(actual, rel=1e-5)


def test_a_leafs_accumulate_grad_keeps_its_id_across_iterations_as_in_the_engine():
    """PyTorch makes a new AccumulateGrad node for each iteration's graph (it keeps one only while
    a graph holds it); the vocabulary's AccumulateGrad lives as long as its leaf, as the engine's
    does, so the graph does not grow by one node per parameter and iteration."""
    graphs = []
    for lib in (gt, torch):
        model = _mlp(lib)
        opt = lib.optim.SGD(model.parameters(), lr=0.1)
        x, y = lib.ones(6, 4), lib.tensor([0, 1, 2, 1, 0, 2])

        def step():  # the loss, and with it the graph, is let go after each step
            opt.zero_grad()
            lib.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        with gradviz.record(values="summaries") as rec:
            for _ in range(4):
                step()
        t = rec.trace
        acc = [e for e in t.events if isinstance(e, ev.NodeCreated) and e.kind == "accumulate_grad"]
        assert len(acc) == 4  # one per parameter, announced once
        runs = [[n for n in p.order if t.nodes[n].kind == "accumulate_grad"] for p in t.passes]
        assert len(runs) == 4 and all(sorted(r) == sorted(e.id for e in acc) for r in runs)
        graphs.append((t.graph.number_of_nodes(), t.graph.number_of_edges()))
    assert graphs[0] == graphs[1]


def test_the_accumulate_grad_ids_of_leaves_that_died_are_let_go():
    w = torch.nn.Parameter(torch.ones(3))
    with gradviz.record(values="summaries") as rec:
        for i in range(300):
            x = torch.full((3,), float(i), requires_grad=True)  # a new leaf every iteration, then dropped
            (w * x).sum().backward()
    assert len(rec.producer._accumulators) < 150
    acc = [e for e in rec.trace.events if isinstance(e, ev.NodeCreated) and e.kind == "accumulate_grad"]
    assert len(acc) == 301  # w's once, and one for each new leaf


def test_optimizer_steps_record_each_parameters_change_and_leave_the_weights_as_torch_made_them():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50, 20))
    h = torch.nn.Parameter(torch.randn(20, dtype=torch.bfloat16))
    opt = torch.optim.Adam([w, h], lr=0.1)
    expected, after = [], []
    with gradviz.record(values="summaries") as rec:
        for _ in range(3):
            before = [w.detach().clone(), h.detach().clone()]
            ((w @ torch.ones(20)).sum() + h.float().pow(2).sum()).backward()
            opt.step()
            opt.zero_grad()
            expected.append([float(torch.linalg.vector_norm((p.detach() - b).double()))
                             for p, b in zip((w, h), before)])
            after.append([w.detach().clone(), h.detach().clone()])
    steps = rec.trace.steps
    assert [s.optimizer for s in steps] == ["Adam"] * 3 and [s.lr for s in steps] == [0.1] * 3
    for s, want in zip(steps, expected):
        assert s.update_norms == pytest.approx(want, rel=1e-5)
    # Recording read the weights and changed nothing: a second run without gradviz gives the same.
    torch.manual_seed(0)
    w2, h2 = torch.nn.Parameter(torch.randn(50, 20)), torch.nn.Parameter(torch.randn(20, dtype=torch.bfloat16))
    opt2 = torch.optim.Adam([w2, h2], lr=0.1)
    for _ in range(3):
        ((w2 @ torch.ones(20)).sum() + h2.float().pow(2).sum()).backward()
        opt2.step()
        opt2.zero_grad()
    assert torch.equal(w2, after[-1][0]) and torch.equal(h2, after[-1][1])
