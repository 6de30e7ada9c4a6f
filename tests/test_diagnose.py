"""Where a gradient went wrong (issue 16, section 2): a NaN traced to its origin on the engine and on
PyTorch, in forward and in backward; the node where a gradient explodes; dead ReLU units and
parameters whose gradient has been zero for iterations."""
import math

import pytest

import gradviz
import gradviz.engine as et
from gradviz.app.labels import short_op
from gradviz.demos import run
from gradviz.trace.diagnose import DEFAULT_K, NoOrigin


def _ops(trace, origin):
    return [short_op(trace.nodes[int(s.key[1:])].op) if s.key[0] == "n" else trace.tensors[int(s.key[1:])].name
            for s in origin.path]


def test_the_nan_demo_traces_back_to_sqrt_at_zero_in_backward():
    with gradviz.record() as rec:
        run("nan")
    t = rec.trace
    o = t.nan_origin("p")
    # The gradient of the second point (i == 1): sqrt's backward made Inf at distance 0, Sum passed
    # it on, Pow turned Inf * 0 into NaN, then Sub, Select, AccumulateGrad into p.
    assert _ops(t, o) == ["SqrtBackward0", "SumBackward0", "PowBackward0", "SubBackward0", "SelectBackward0",
                          "AccumulateGrad", "p"]
    assert {s.moment for s in o.path} == {"backward"} and {s.pass_index for s in o.path} == {0}
    assert o.explanation == ("SqrtBackward0 at nan.py:12 made 1 Inf in backward (pass 0, iteration 0) from a "
                             "finite grad_output (max |g| 1) and finite input SumBackward0's output (= 0)")
    # The second Sqrt node of the three (i == 1), not the first or the last.
    sqrts = [n.id for n in t.nodes.values() if n.op == "SqrtBackward0"]
    assert o.origin.key == f"n{sqrts[1]}"
    # From any node on the way, the same origin; and the same from the file (summaries only).
    assert t.nan_origin(o.path[3].key).origin == o.origin
    assert str(t.nan_origin(o.path[3].key)) == o.explanation


def test_a_file_without_arrays_gives_the_same_origin(tmp_path):
    with gradviz.record(values="summaries") as rec:
        run("nan")
    rec.trace.save(tmp_path / "nan.gvz")
    t = gradviz.load(tmp_path / "nan.gvz")
    assert t.nan_origin("p").explanation.startswith("SqrtBackward0 at nan.py:12 made 1 Inf in backward")


def test_a_finite_node_says_there_is_nothing_to_trace():
    with gradviz.record() as rec:
        w = et.tensor([1.0, 2.0], requires_grad=True)
        (w * 2.0).sum().backward()
    with pytest.raises(NoOrigin, match="holds no NaN or Inf: nothing to trace"):
        rec.trace.nan_origin("w")


def test_a_forward_nan_in_the_engine_is_traced_through_forward():
    with gradviz.record() as rec:
        w = et.tensor([1.0, -2.0, 3.0], requires_grad=True)
        y = (w * 2.0).log()
        loss = (y * y).sum()
        loss.backward()
    t = rec.trace
    root = t.passes[0].roots[0]
    o = t.nan_origin(root)
    assert _ops(t, o) == ["LogBackward0", "MulBackward0", "SumBackward0"]
    assert [s.moment for s in o.path] == ["forward"] * 3
    assert "LogBackward0 at test_diagnose.py" in o.explanation
    assert "made 1 NaN in forward (iteration 0) from finite input MulBackward0's output (min -4, max 6)" \
        in o.explanation
    # w's gradient (2 / (2w) * 2y: NaN where y is) is traced into forward too: backward steps after forward ones.
    o = t.nan_origin("w")
    assert o.origin.moment == "forward" and _ops(t, o)[0] == "LogBackward0"
    assert o.path[-1].key[0] == "t" and o.path[-1].moment == "backward"


def test_a_leaf_given_with_nan():
    with gradviz.record() as rec:
        x = et.tensor([1.0, float("nan")], requires_grad=True)
        (x * 3.0).sum().backward()
    o = rec.trace.nan_origin("x")
    assert o.keys == [o.origin.key] and o.explanation == "x already held 1 NaN when forward first read it"


def test_a_parameter_turned_nan_by_a_step_is_traced_to_the_gradient_that_did_it():
    with gradviz.record() as rec:
        w = et.tensor([0.0, 1.0], requires_grad=True)
        opt = et.optim.SGD([w], lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            loss = (w.sqrt() * 1.0).sum()  # sqrt's backward at 0: Inf into w.grad, then w = -inf
            loss.backward()
            opt.step()
    t = rec.trace
    o = t.nan_origin("w")
    assert o.origin.moment == "backward" and t.nodes[int(o.origin.key[1:])].op == "SqrtBackward0"
    assert o.origin.iteration == 0 and o.path[-1].key.startswith("t")


def test_explosion_finds_the_first_node_that_grows_the_gradient():
    with gradviz.record() as rec:
        x = et.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
        h = x.tanh()
        big = h * 1000.0     # grows every element 1000 times
        y = big * 0.5        # shrinks it
        y.sum().backward()
    t = rec.trace
    o = t.explosion_origin("x")
    assert o.what == "explosion" and DEFAULT_K == 10.0
    assert _ops(t, o) == ["MulBackward0", "TanhBackward0", "AccumulateGrad", "x"]
    assert math.isclose(o.ratio, 1000.0, rel_tol=1e-5)
    assert "MulBackward0 at test_diagnose.py" in o.explanation and "grew the gradient 1000 times per element" \
        in o.explanation and "rms 0.5 in, 500 out" in o.explanation
    with pytest.raises(NoOrigin, match="grew its gradient more than 2000 times"):
        t.explosion_origin("x", k=2000)


def test_a_sum_of_many_elements_is_no_explosion():
    with gradviz.record() as rec:
        x = et.ones(10000, requires_grad=True)
        (x * 1.0).sum().backward()  # SumBackward0 grows the norm 100 times, every element stays 1
    with pytest.raises(NoOrigin):
        rec.trace.explosion_origin("x")


def test_dead_relu_fraction_and_iterations_since_a_nonzero_gradient():
    with gradviz.record() as rec:
        a = et.tensor([1.0, 2.0], requires_grad=True)
        b = et.tensor([1.0, 1.0], requires_grad=True)
        c = et.tensor([1.0, 1.0], requires_grad=True)
        x = et.tensor([-1.0, 2.0, -3.0, 4.0])
        for it in range(3):
            sign = 1.0 if it == 0 else -1.0
            loss = (a * 3.0).sum() + (b * sign).relu().sum() + (c * -1.0).relu().sum() \
                + (x * a[0]).relu().sum()
            loss.backward()
            for p in (a, b, c):
                p.grad = None
    t = rec.trace
    dead = t.dead_units()  # the last pass: b's relu all off, c's all off, x's two of four
    fractions = sorted((d.op, d.zero_fraction) for d in dead)
    assert fractions == [("ReluBackward0", 0.5), ("ReluBackward0", 1.0), ("ReluBackward0", 1.0)]
    first = sorted(d.zero_fraction for d in t.dead_units(0))
    assert first == [0.0, 0.5, 1.0]  # b's relu was on in iteration 0
    streaks = {s.name: (s.last_nonzero, s.since) for s in t.zero_grad_streaks().values()}
    assert streaks == {"a": (2, 0), "b": (0, 2), "c": (None, 3)}


def test_a_pass_still_running_marks_no_gradient_zero():
    """Paused at the first node of the first pass, no parameter has had a gradient yet: none is
    'never non-zero'. Once the pass ends, the one whose gradient really is 0 is."""
    from gradviz.trace.model import Trace
    with gradviz.record() as rec:
        w = et.tensor([1.0, 2.0], requires_grad=True)
        v = et.tensor([1.0, 1.0], requires_grad=True)
        ((w * 2.0).sum() + (v * 0.0).sum()).backward()
    events = rec.trace.events
    first_entered = next(i for i, e in enumerate(events) if type(e).__name__ == "NodeEntered")
    mid = Trace()
    mid.extend(events[:first_entered + 1])
    assert not mid.passes[0].finished
    assert {s.name: s.since for s in mid.zero_grad_streaks().values()} == {"w": 0, "v": 0}
    streaks = {s.name: (s.last_nonzero, s.since) for s in rec.trace.zero_grad_streaks().values()}
    assert streaks == {"w": (0, 0), "v": (None, 1)}


torch = None


def _torch():
    global torch
    torch = pytest.importorskip("torch")
    return torch


def test_pytorch_nan_made_in_forward_by_log_of_a_negative():
    torch = _torch()
    with gradviz.record() as rec:
        x = torch.tensor([-1.0, 2.0], requires_grad=True)
        y = torch.log(x)
        loss = (y * 3.0).sum()
        loss.backward()
    t = rec.trace
    o = t.nan_origin(t.passes[0].roots[0])
    assert _ops(t, o) == ["LogBackward0", "MulBackward0", "SumBackward0"]
    assert o.origin.moment == "forward"
    assert "LogBackward0 at test_diagnose.py" in o.explanation and \
        "made 1 NaN in forward (iteration 0) from finite input x (min -1, max 2)" in o.explanation


def test_pytorch_nan_made_in_backward_by_sqrt_at_zero():
    torch = _torch()
    with gradviz.record() as rec:
        x = torch.tensor([0.0, 3.0], requires_grad=True)
        y = torch.sqrt(x ** 2)  # forward finite: |x|
        y.sum().backward()
    t = rec.trace
    assert math.isnan(x.grad[0].item())
    o = t.nan_origin("x")
    assert _ops(t, o) == ["SqrtBackward0", "PowBackward0", "AccumulateGrad", "x"]
    assert [s.moment for s in o.path] == ["backward"] * 4
    assert "SqrtBackward0 at test_diagnose.py" in o.explanation and "made 1 Inf in backward (pass 0" in o.explanation


# -- the app: the path drawn, dead marks (state without a window, then the window) ----------------
def _nan_state():
    from gradviz.app.state import AppState
    with gradviz.record() as rec:
        run("nan")
    st = AppState(trace=rec.trace)
    st.wait_layout()
    return st


def test_the_app_state_draws_the_path_and_says_the_origin():
    from gradviz.app.diagnosis import ORIGIN_FILL, PATH
    st = _nan_state()
    d = st.diagnosis
    assert [a for a, _ in d.actions("t1")] == ["Trace NaN/Inf to its origin"]
    assert d.actions(f"n{st.trace.passes[0].roots[0]}") == []  # the loss: finite, and its gradient too
    origin = d.trace_origin("t1")
    assert st.message == d.message == "Origin: " + origin.explanation
    ov = st.graph_model.overlay()
    path = origin.keys
    assert set(ov.borders) == set(path) and set(ov.borders.values()) == {PATH}
    assert ov.fills == {path[0]: ORIGIN_FILL} and ov.badges[path[0]] == ("origin", PATH)
    # Each edge between neighbours on the path, as drawn (grad_fn -> its next node), and no other.
    assert sorted(ov.edges) == sorted(zip(path, path[1:]))
    assert [a for a, _ in d.actions("t1")][-1] == "Clear the traced path"
    d.clear()
    assert not st.graph_model.overlay().borders


def test_the_app_state_says_why_there_is_no_origin():
    st = _nan_state()
    root = st.trace.passes[0].roots[0]
    assert st.diagnosis.trace_origin(f"n{root}") is None
    assert st.message == f"No origin to show: n{root} holds no NaN or Inf: nothing to trace"


def test_dead_units_and_zero_streaks_are_marked_in_the_graph_and_the_flow():
    from gradviz.app.diagnosis import DEAD_BADGE
    from gradviz.app.plots import dead_note, gradient_flow
    from gradviz.app.state import AppState
    with gradviz.record() as rec:
        b = et.tensor([1.0, 1.0], requires_grad=True)
        c = et.tensor([1.0, 1.0], requires_grad=True)
        for it in range(3):
            loss = (b * (1.0 if it == 0 else -1.0)).relu().sum() + (c * 2.0).sum()
            loss.backward()
            b.grad = c.grad = None
    st = AppState(trace=rec.trace)
    st.wait_layout()
    badges = st.graph_model.overlay().badges
    relu = next(k for k, d in st.graph.nodes(data=True) if d.get("op") == "ReluBackward0")
    tb = next(k for k, d in st.graph.nodes(data=True) if d.get("name") == "b")
    assert badges[relu] == ("dead: all zero", DEAD_BADGE)
    assert badges[tb] == ("grad 0 for 2 it.", DEAD_BADGE)
    assert not any(d.get("name") == "c" and k in badges for k, d in st.graph.nodes(data=True))
    assert [(r.name, r.zero_for) for r in gradient_flow(rec.trace)] == [("b", 2), ("c", 0)]
    assert dead_note(rec.trace).startswith("1 of 1 ReLU-like nodes pass ≥50% zero gradient; the most: ReluBackward0")
    assert dead_note(rec.trace, 0) == ""


def test_the_window_draws_the_path_on_the_graph_items(qtbot):
    from PySide6.QtGui import QColor

    from gradviz.app.diagnosis import ORIGIN_FILL, PATH
    from gradviz.ui.main_window import MainWindow
    st = _nan_state()
    w = MainWindow(st)
    qtbot.addWidget(w)
    acts = dict(w.view.context_actions("t1"))
    acts["Trace NaN/Inf to its origin"]()
    path = st.diagnosis.path_keys()
    assert len(path) == 7
    for k in path:
        assert w.view.items_by_key[k].border == QColor(PATH)
    assert w.view.items_by_key[path[0]].fill == QColor(ORIGIN_FILL)
    assert w.view.items_by_key[path[0]].badge[0] == "origin"
    assert w.view.edges_by_key[path[0], path[1]].colour == QColor(PATH)
    off_path = next(k for k in w.view.items_by_key if isinstance(k, str) and k not in path)
    assert w.view.items_by_key[off_path].border is None
    assert w.diagnosis_line.text().startswith("Origin: SqrtBackward0 at nan.py:12 made 1 Inf in backward")


def test_the_headless_debugger_agrees_with_the_anomaly_breakpoint():
    """Paused by the anomaly breakpoint where the NaN/Inf first appears, the origin traced from
    that node is the node itself; after the run, p's NaN gradient leads back to it."""
    from gradviz import Debugger
    with Debugger.launch(demo="nan", stop_on_entry=True) as dbg:
        dbg.wait_paused(timeout=20)
        dbg.add_breakpoint(anomaly=True)
        dbg.resume()
        p = dbg.wait_paused(timeout=20)
        assert p.reason == "anomaly"
        with dbg.lock:
            o = dbg.trace.nan_origin(p.node)
        assert o.keys == [f"n{p.node}"] and o.explanation.startswith("SqrtBackward0 at nan.py:12 made 1 Inf")
        dbg.resume()
        assert dbg.wait_paused(timeout=20).reason == "exited"
        with dbg.lock:
            assert dbg.trace.nan_origin("p").origin.key == f"n{p.node}"


def test_gradviz_origin_prints_the_origin_and_the_path(tmp_path, capfd):
    from gradviz import cli
    out = tmp_path / "nan.gvz"
    assert cli.main(["record", "--demo", "nan", "-o", str(out)]) == 0
    capfd.readouterr()
    assert cli.main(["origin", str(out)]) == 0  # p's gradient, the first leaf holding a NaN
    lines = capfd.readouterr().out.splitlines()
    assert lines[0].startswith("SqrtBackward0 at nan.py:12 made 1 Inf in backward (pass 0, iteration 0)")
    assert lines[1] == "path, from the origin to t1:"
    assert [line.split()[4] for line in lines[2:]] == ["SqrtBackward0", "SumBackward0", "PowBackward0",
                                                       "SubBackward0", "SelectBackward0", "AccumulateGrad", "p"]
    assert lines[2].split()[:4] == ["backward", "pass", "0", lines[2].split()[3]] and lines[2].endswith("nan.py:12")
    assert cli.main(["origin", str(out), "nope"]) == 1
    assert capfd.readouterr().err == "gradviz: no tensor named 'nope' in this trace\n"
    cf = tmp_path / "cf.gvz"
    assert cli.main(["record", "--demo", "control-flow", "-o", str(cf)]) == 0
    capfd.readouterr()
    assert cli.main(["origin", str(cf)]) == 1
    assert capfd.readouterr().err == \
        f"gradviz: no NaN or Inf in {cf}; name a node or tensor to trace an explosion from\n"
    assert cli.main(["origin", str(cf), "w", "--explosion", "-k", "1.5"]) == 0
    assert capfd.readouterr().out.startswith("PowBackward0 at control_flow.py:17 grew the gradient 1.623 times")


def test_the_app_state_draws_an_explosion_in_its_own_colour():
    from gradviz.app.diagnosis import EXPLOSION
    from gradviz.app.state import AppState
    with gradviz.record() as rec:
        x = et.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
        (x.tanh() * 1e4).sum().backward()
    st = AppState(trace=rec.trace)
    st.wait_layout()
    tx = next(k for k, d in st.graph.nodes(data=True) if d.get("name") == "x")
    assert [a for a, _ in st.diagnosis.actions(tx)] == ["Trace exploding gradient to its origin"]
    o = st.diagnosis.trace_origin(tx, "explosion")
    assert st.message.startswith("Explosion: MulBackward0 at test_diagnose.py")
    ov = st.graph_model.overlay()
    assert set(ov.borders) == set(o.keys) and set(ov.borders.values()) == {EXPLOSION}


def test_pytorch_explosion():
    torch = _torch()
    with gradviz.record() as rec:
        x = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
        (torch.exp(x) * 500.0).mean().backward()  # MeanBackward0 shrinks per element; Mul grows 500x
    o = rec.trace.explosion_origin("x")
    assert _ops(rec.trace, o) == ["MulBackward0", "ExpBackward0", "AccumulateGrad", "x"]
    assert math.isclose(o.ratio, 500.0, rel_tol=1e-5)


def test_zero_streaks_asked_as_a_run_grows_equal_those_of_the_whole_trace():
    """The app asks at every poll while the trace grows: the finished passes folded in as they come
    must give what a fresh look at the whole trace gives, at every moment."""
    from gradviz.trace.model import Trace
    with gradviz.record() as rec:
        a = et.tensor([1.0, 2.0], requires_grad=True)
        b = et.tensor([1.0, 1.0], requires_grad=True)
        for it in range(4):
            sign = 1.0 if it % 2 == 0 else -1.0
            ((a * 3.0).sum() + (b * sign).relu().sum()).backward()
            a.grad = b.grad = None
    growing = Trace()
    for i, e in enumerate(rec.trace.events):
        growing.apply(e)
        fresh = Trace()
        fresh.extend(rec.trace.events[:i + 1])
        got = {k: (s.last_nonzero, s.since) for k, s in growing.zero_grad_streaks().items()}
        assert got == {k: (s.last_nonzero, s.since) for k, s in fresh.zero_grad_streaks().items()}, i
    assert {s.name: (s.last_nonzero, s.since) for s in growing.zero_grad_streaks().values()} == \
        {"a": (3, 0), "b": (2, 1)}
