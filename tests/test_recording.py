"""Recording: the events the engine emits, the Trace built from them, summaries and the budget."""
import math

import numpy as np
import pytest

import gradviz
import gradviz.engine as torch
from gradviz import demos, events as ev
from gradviz.engine import nn
from gradviz.summary import HIST_BINS, SAMPLE_SIZE, summarize


def record_seed():
    with gradviz.record() as rec:
        a = torch.tensor([2., 3.], requires_grad=True)
        b = torch.tensor([6., 4.], requires_grad=True)
        Q = 3 * a ** 3 - b ** 2  # SEED-LINE
        Q.backward(gradient=torch.tensor([1., 1.]))
    return rec.trace


def _line_of(marker):
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if marker in line and "_line_of" not in line)


def test_seed_events_in_order():
    t = record_seed()
    kinds = [type(e).__name__ for e in t.events]
    assert kinds[0] == "IterationStarted"
    backward = kinds[kinds.index("BackwardStarted"):]
    assert backward == ["BackwardStarted"] + ["NodeEntered", "NodeExited"] * 2 + \
        ["NodeEntered", "GradAccumulated", "NodeExited"] + ["NodeEntered", "NodeExited"] * 2 + \
        ["NodeEntered", "GradAccumulated", "NodeExited", "BackwardFinished"]
    ops = [t.nodes[n].op for n in t.passes[0].order]
    assert ops == ["SubBackward0", "PowBackward0", "AccumulateGrad", "MulBackward0", "PowBackward0", "AccumulateGrad"]
    # The AccumulateGrad nodes feed the leaves named after the user's variables.
    leaves = [t.tensors[t.nodes[n].output].name for n in t.passes[0].order if t.nodes[n].op == "AccumulateGrad"]
    assert leaves == ["b", "a"]


def test_seed_gradients_and_source_lines():
    t = record_seed()
    np.testing.assert_array_equal(t.grad("a").array, [36., 81.])
    np.testing.assert_array_equal(t.grad("b").array, [-12., -8.])
    assert t.grad("a").summary.norm == pytest.approx(np.hypot(36, 81))
    line = _line_of("SEED-LINE")
    for node in t.nodes.values():
        if node.kind == "grad_fn":
            assert node.source.file == __file__ and node.source.line == line
            assert node.source.function == "record_seed"
    sub = next(n for n in t.nodes.values() if n.op == "SubBackward0")
    np.testing.assert_array_equal(sub.value.array, [-12., 65.])  # Q itself
    entered = [e for e in t.events if isinstance(e, ev.NodeEntered)]
    np.testing.assert_array_equal(entered[0].grad_outputs[0].array, [1., 1.])  # the external gradient
    exited_sub = next(e for e in t.events if isinstance(e, ev.NodeExited) and e.node == sub.id)
    np.testing.assert_array_equal(exited_sub.grad_inputs[1].array, [-1., -1.])


def test_graph_edges_follow_the_gradient():
    t = record_seed()
    g = t.graph
    by_op = {}
    for key, d in g.nodes(data=True):
        by_op.setdefault(d["op"] or d["label"], []).append(key)
    (sub,) = by_op["SubBackward0"]
    assert [g.nodes[k]["op"] for k in g.successors(sub)] == ["MulBackward0", "PowBackward0"]
    assert sorted(g.nodes[k]["label"] for k in by_op["a"] + by_op["b"]) == ["a", "b"]
    a_key = by_op["a"][0]
    assert g.nodes[a_key]["kind"] == "leaf" and g.nodes[a_key]["shape"] == (2,)
    assert [g.nodes[k]["op"] for k in g.predecessors(a_key)] == ["AccumulateGrad"]
    assert g.number_of_nodes() == 8 and g.number_of_edges() == 7


def test_module_scopes_and_parameter_names():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.body(x))

    net = Net()
    with gradviz.record() as rec:
        net(torch.randn(5, 3)).sum().backward()
    t = rec.trace
    scopes = {n.op: n.scope for n in t.nodes.values() if n.kind == "grad_fn"}
    assert scopes["ReluBackward0"] == "body.1"
    assert scopes["SumBackward0"] == ""
    addmm_scopes = sorted(n.scope for n in t.nodes.values() if n.op == "AddmmBackward0")
    assert addmm_scopes == ["body.0", "head"]
    params = {x.name: x.kind for x in t.tensors.values() if x.kind == "parameter"}
    assert params == {"body.0.weight": "parameter", "body.0.bias": "parameter",
                      "head.weight": "parameter", "head.bias": "parameter"}
    acc_scope = {t.tensors[n.output].name: n.scope for n in t.nodes.values() if n.kind == "accumulate_grad"}
    assert acc_scope["head.bias"] == "head"


def test_iterations_keep_graphs_apart_and_parameters_identity():
    with gradviz.record() as rec:
        losses = demos.run("mlp")
    t = rec.trace
    assert t.iterations == 5 and len(t.passes) == 5 and len(t.steps) == 5
    iters = [t.iteration_graph(i) for i in range(5)]
    # Each iteration has its own grad_fn nodes ...
    fn_sets = [{k for k, d in g.nodes(data=True) if d["kind"] == "grad_fn"} for g in iters]
    assert all(len(s) == 10 for s in fn_sets)
    assert not set.intersection(*fn_sets)
    # ... while parameters (and their AccumulateGrad nodes) are the same across iterations.
    param_sets = [{k for k, d in g.nodes(data=True) if d["kind"] == "parameter"} for g in iters]
    assert all(s == param_sets[0] for s in param_sets) and len(param_sets[0]) == 6
    history = t.grad_history("4.bias")
    assert [p for p, _ in history] == [0, 1, 2, 3, 4]
    assert len({round(v.summary.norm, 6) for _, v in history}) == 5  # the gradient changes as it trains
    assert losses[-1] < losses[0]
    step = t.steps[0]
    assert step.optimizer == "SGD" and step.lr == 0.1 and len(step.params) == 6
    assert all(n > 0 for n in step.update_norms)


def test_control_flow_graphs_differ_between_iterations():
    with gradviz.record() as rec:
        depths = demos.run("control-flow")
    t = rec.trace
    ops = [sorted(d["op"] for _, d in t.iteration_graph(i).nodes(data=True) if d["kind"] == "grad_fn")
           for i in range(len(depths))]
    assert ops[0].count("MmBackward0") == depths[0] == 1 and "TanhBackward0" in ops[0]
    assert ops[1].count("MmBackward0") == depths[1] == 2 and "ReluBackward0" in ops[1]
    assert ops[2].count("MmBackward0") == 3


def test_nan_demo_records_where_nan_appears():
    with gradviz.record() as rec:
        demos.run("nan")
    t = rec.trace
    first_bad = next(e for e in t.events if isinstance(e, ev.NodeExited)
                     and any(v is not None and not v.summary.finite for v in e.grad_inputs))
    node = t.nodes[first_bad.node]
    assert node.op == "SqrtBackward0" and first_bad.grad_inputs[0].summary.inf == 1
    assert node.source.file.endswith("demos/nan.py")
    p_grad = t.grad("p")
    assert p_grad.summary.nan == 2 and np.isnan(p_grad.array[1]).all()


def test_summaries_only_keeps_no_arrays():
    with gradviz.record(values="summaries") as rec:
        demos.run("seed")
    t = rec.trace
    assert t.values.stored_bytes == 0
    assert t.grad("a").array is None and t.grad("a").summary.max == 81.0


def test_recording_summaries_keeps_no_array_alive():
    """A recording must not hold arrays the program has let go: kept alive, every later array of
    the program is fresh memory (page faults; once measured as +50% on a training step)."""
    import gc
    import weakref
    x = torch.ones(1000, requires_grad=True)
    with gradviz.record(values="summaries") as rec:
        y = x * 2
        z = y.exp()
        gone = weakref.ref(z._np)
        del z
        gc.collect()
        assert gone() is None
        seen = []
        y.register_hook(lambda g: seen.append(weakref.ref(g._np)))
        (y * 4).sum().backward()
        gc.collect()
        assert seen and seen[0]() is None  # the gradient handed through y, gone once used
    assert rec.trace.grad("x").array is None and rec.trace.grad("x").summary.max == 8.0


def test_budget_is_never_exceeded_over_10000_iterations():
    budget = 64 * 1024
    w = torch.randn(32, 32, requires_grad=True)
    x = torch.randn(8, 32)
    with gradviz.record(budget_bytes=budget) as rec:
        for _ in range(10_000):
            (x @ w).relu().sum().backward()
            w.grad = None
            assert rec.trace.values.stored_bytes <= budget
    t = rec.trace
    assert t.values.peak_bytes <= budget and t.values.stored_bytes > budget // 2
    assert len(t.passes) == 10_000
    # Old values lost their arrays, never their summaries; the newest still have both.
    first, last = t.passes[0], t.passes[-1]
    assert all(v.summary is not None for vs in first.grad_outputs.values() for v in vs)
    assert all(v.array is None for vs in first.grad_outputs.values() for v in vs)
    assert all(v.array is not None for vs in last.grad_outputs.values() for v in vs)


def test_recordings_do_not_nest_and_stop_cleanly():
    from gradviz.engine import hooks
    with gradviz.record(), pytest.raises(RuntimeError, match="already recording"):
        gradviz.record().start()
    assert {name: len(h) for name, h in hooks.MOMENTS.items()} == dict.fromkeys(hooks.MOMENTS, 0)
    x = torch.ones(2, requires_grad=True)
    (x * 2).sum().backward()  # nobody listening: nothing recorded, nothing fails


def test_named_tensors():
    with gradviz.record() as rec:
        t0 = gradviz.name(torch.ones(2, requires_grad=True), "weights")
        (t0 * 2).sum().backward()
    assert [x.name for x in rec.trace.tensors.values()] == ["weights"]


def test_summary_values():
    x = np.arange(-5, 5, dtype=np.float32)
    s = summarize(x)
    assert (s.numel, s.min, s.max, s.mean, s.nan, s.inf, s.sampled) == (10, -5.0, 4.0, -0.5, 0, 0, False)
    assert s.norm == pytest.approx(np.linalg.norm(x)) and s.std == pytest.approx(x.std())
    assert sum(s.hist) == 10 and len(s.hist) == HIST_BINS
    y = np.array([1.0, np.nan, np.inf, -np.inf, 2.0])
    s = summarize(y)
    assert (s.nan, s.inf, s.min, s.max) == (1, 2, 1.0, 2.0) and s.norm == pytest.approx(np.sqrt(5))
    big = np.random.default_rng(0).normal(size=(300, 300)).astype(np.float32)
    s = summarize(big)
    assert s.sampled and s.min == big.min() and s.max == big.max()
    assert s.norm == pytest.approx(np.linalg.norm(big), rel=1e-5)
    assert abs(s.mean) < 0.1 and s.std == pytest.approx(1.0, abs=0.05)
    assert summarize(np.zeros((0, 3))).numel == 0
    assert summarize(np.array([True, False])).max == 1.0
    relu_grad = np.where(np.arange(10) < 7, 0.0, 1.5)  # seven of ten units dead
    assert summarize(relu_grad).zeros == pytest.approx(0.7)
    assert summarize(np.array([0.0, np.nan, 2.0])).zeros == 0.5  # of the finite values


@pytest.mark.parametrize("case", ["normal", "offset", "integers", "one", "two", "float64", "sampled", "nonfinite",
                                  "huge"])
def test_summary_statistics_match_numpy(case):
    """mean, std, mean |x| and the 64-bin histogram against numpy's own, for the values a summary
    reads (all of them up to EXACT_LIMIT elements, else its strided sample)."""
    rng = np.random.default_rng(1)
    x = {"normal": rng.normal(size=3000).astype(np.float32),
         "offset": (1000.0 + 1e-4 * rng.normal(size=2000)).astype(np.float64),  # E[x^2] - mean^2 cancels
         "integers": np.arange(65, dtype=np.float32),  # every value on a bin edge
         "one": np.array([3.5], dtype=np.float32),
         "two": np.array([-1.0, 2.0]),
         "float64": rng.normal(3.0, 2.0, size=(40, 50)),
         "sampled": rng.standard_cauchy(size=(512, 640)).astype(np.float32),
         "nonfinite": np.array([1.0, np.nan, 4.0, np.inf, -2.0, 7.0, -np.inf]),
         "huge": np.array([1e160, 1e160 + 1e150, 1e160 - 2e150])}[case]  # squares overflow, deviations do not
    s = summarize(x)
    flat = x.reshape(-1)
    read = flat[:: flat.size // SAMPLE_SIZE] if s.sampled else flat
    read = read[np.isfinite(read)].astype(np.float64)
    finite = flat[np.isfinite(flat)]
    assert s.sampled == (case == "sampled")
    assert (s.min, s.max) == (finite.min(), finite.max())
    assert s.mean == pytest.approx(read.mean(), rel=1e-12, abs=1e-12)
    assert s.std == pytest.approx(read.std(), rel=1e-9, abs=1e-12)
    assert s.mean_abs == pytest.approx(np.abs(read).mean(), rel=1e-12)
    assert s.zeros == np.count_nonzero(read == 0) / read.size
    want = np.histogram(read, bins=HIST_BINS, range=(s.min, s.max))[0] if s.max > s.min else \
        np.array([read.size] + [0] * (HIST_BINS - 1))
    assert s.hist == tuple(want.tolist())
    with np.errstate(over="ignore"):  # the huge case's squares overflow in numpy's norm too
        assert s.norm == pytest.approx(np.linalg.norm(finite.astype(np.float64)), rel=1e-6)


def test_complex_values_are_summarised_by_their_magnitudes():
    import warnings
    z = np.array([3 + 4j, -1j, 0, 2 - 2j, np.nan + 1j], dtype=np.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning would drop the imaginary parts
        s = summarize(z)
    want = summarize(np.abs(z))
    assert s.dtype == "<c8" and {**s.to_dict(), "dtype": "<f4"} == want.to_dict()
    assert (s.max, s.nan) == (5.0, 1) and s.norm == pytest.approx(float(np.sqrt(25 + 1 + 8)))


def test_summaries_of_huge_and_non_finite_values_write_no_numpy_warnings():
    """PyTorch says nothing when a tensor's squares overflow; gradviz must not write numpy's
    RuntimeWarnings into the program's output either."""
    import warnings
    from gradviz.summary import from_parts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize(np.array([3e38, -3e38, np.inf, np.nan], dtype=np.float32))
        assert (s.nan, s.inf, s.norm) == (1, 1, pytest.approx(np.hypot(3e38, 3e38), rel=1e-6))
        assert math.isinf(summarize(np.full(5000, 1e300)).norm)
        # Ranges past the largest float, and of a few denormals, still make a histogram.
        wide = summarize(np.array([-1e308, 0.0, 1e308]))
        assert wide.hist == tuple(np.histogram([-0.5, 0.0, 0.5], bins=HIST_BINS, range=(-0.5, 0.5))[0].tolist())
        tiny = summarize(np.array([0.0, 5e-324, 1e-323]))
        assert tiny.hist[0] == 1 and tiny.hist[HIST_BINS // 2] == 1 and tiny.hist[-1] == 1
        ends = from_parts((2,), "<f8", 2, -1.5e308, 1.5e308, math.inf, 0, 0, np.array([-1.5e308, 1.5e308]), False)
        assert (ends.hist[0], ends.hist[-1], sum(ends.hist)) == (1, 1, 2)


@pytest.mark.parametrize("values", ["summaries", "full"])
def test_a_view_shares_its_memorys_summary_in_its_own_shape(values):
    w = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], requires_grad=True)
    with gradviz.record(values=values) as rec:
        (torch.ones(4, 3) @ w.t()).sum().backward()
    t = rec.trace
    transposed = next(n for n in t.nodes.values() if n.op == "TBackward0").value.summary
    weight = t.tensors[next(iter(t.tensors))].value.summary
    assert (transposed.shape, weight.shape) == ((3, 2), (2, 3))
    assert (transposed.min, transposed.max, transposed.norm, transposed.hist) == (-6.0, 5.0, weight.norm, weight.hist)
    assert transposed.to_dict() == {**weight.to_dict(), "shape": (3, 2)}


def test_kept_values_do_not_change_when_tensors_change_in_place():
    w = torch.ones(2, 3, requires_grad=True)
    x = torch.ones(4, 3)
    with gradviz.record() as rec:
        out = (x @ w.t()).sum()  # w.t() is a view of w's memory
        out.backward()
        with torch.no_grad():
            w -= 1.0  # an optimizer-like step, in place
    t = rec.trace
    transposed = next(n for n in t.nodes.values() if n.op == "TBackward0")
    np.testing.assert_array_equal(transposed.value.array, np.ones((3, 2)))
    assert t.tensors[transposed.inputs[0]].value.array.tolist() == [[1.0] * 3] * 2


@pytest.mark.parametrize("roots", [1, 2])
def test_an_engine_autograd_grad_pass_counts_the_nodes_it_runs(roots):
    """The engine's autograd.grad runs only the way to its inputs: the pass's steps are those."""
    from gradviz.app.state import AppState
    with gradviz.record() as rec:
        x = torch.ones(3, requires_grad=True)
        w = torch.ones(3, requires_grad=True)
        h = (x * w).tanh()
        y = (h * 2).sum()
        outs = [y] if roots == 1 else [y, (h * 3).sum()]
        torch.autograd.grad(outs, [h])
    p = rec.trace.passes[-1]
    assert p.planned is not None and sorted(p.planned) == sorted(p.order)
    reach = sum(1 for _, d in rec.trace.graph.nodes(data=True) if d.get("kind") in ("grad_fn", "accumulate_grad"))
    assert len(p.order) < reach
    assert AppState(trace=rec.trace).step_position() == (len(p.order), len(p.order))
    with gradviz.record() as rec:
        (x * w).tanh().sum().backward()
    assert rec.trace.passes[-1].planned is None
