"""Time travel: the trace as it was after k events (gradviz.app.timeline), the state the app shows at
that moment (AppState), and the slider that picks the moment (ui/timeline.TimelineBar)."""
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gradviz  # noqa: E402
from gradviz import cli, demos, events as ev  # noqa: E402
from gradviz.app.state import AppState  # noqa: E402
from gradviz.trace.model import ARRAY_OVERHEAD  # noqa: E402
from gradviz.app.timeline import Timeline  # noqa: E402
from gradviz.trace.model import Trace  # noqa: E402
from gradviz.trace.gvz import write_trace  # noqa: E402

# The seed demo's events, by position k (the trace after k events): 1 IterationStarted, 2 a,
# 3 AccumulateGrad(a) n2, 4 PowBackward0 n3, 5 MulBackward0 n5, 6 b, 7 AccumulateGrad(b) n8,
# 8 PowBackward0 n9, 9 SubBackward0 n11, 10 BackwardStarted, then entered/exited: 11/12 n11,
# 13/14 n9, 15 entered n8, 16 b.grad accumulated, 17 n8 done, 18/19 n5, 20/21 n3, 22 entered n2,
# 23 a.grad accumulated, 24 n2 done, 25 BackwardFinished.
SEED_LEN = 25


def _record(name, **kw):
    """A demo's trace without its SourceText events (the lines' texts, told before the nodes they
    made), so that the positions above count the events that change the graph and its values."""
    with gradviz.record(**kw) as rec:
        demos.run(name)
    return _replayed([e for e in rec.trace.events if type(e) is not ev.SourceText], rec.trace.values.budget)


@pytest.fixture(scope="module")
def seed():
    return _record("seed")


@pytest.fixture(scope="module")
def mlp():
    return _record("mlp")


def _replayed(events, budget):
    t = Trace(budget)
    t.extend(events)
    return t


def _same(a, b):
    """Two traces hold the same graph, passes, gradients and tensors (Values compared by identity:
    a replay shares them)."""
    assert a.events == b.events
    assert dict(a.graph.nodes(data=True)) == dict(b.graph.nodes(data=True))
    assert sorted(a.graph.edges(data=True)) == sorted(b.graph.edges(data=True))
    assert a.nodes == b.nodes and a.tensors == b.tensors and a.steps == b.steps
    assert a.iterations == b.iterations
    assert [(p.index, p.iteration, p.roots, p.order, p.finished) for p in a.passes] == \
        [(p.index, p.iteration, p.roots, p.order, p.finished) for p in b.passes]
    for p, q in zip(a.passes, b.passes):
        assert p.grad_outputs == q.grad_outputs and p.grad_inputs == q.grad_inputs
        assert p.accumulated == q.accumulated
    if type(a) is type(b):
        assert a.values.stored_bytes == b.values.stored_bytes
    assert a.node_count() == b.node_count() == b.graph.number_of_nodes()
    for i in range(a.iterations):
        assert set(a.iteration_graph(i).edges) == set(b.iteration_graph(i).edges)
        assert set(a.iteration_graph(i)) == set(b.iteration_graph(i))


def _position_after(trace, kind, n):
    """The position just after the n-th (1-based) event of type ``kind``."""
    seen = 0
    for i, e in enumerate(trace.events):
        if type(e) is kind:
            seen += 1
            if seen == n:
                return i + 1
    raise AssertionError(f"fewer than {n} {kind.__name__} events")


# -- the trace at a position ---------------------------------------------------------------------
def test_seed_mid_backward_has_exactly_what_had_happened(seed):
    tl = Timeline(seed)
    assert len(tl) == SEED_LEN
    k = _position_after(seed, ev.NodeEntered, 3)
    assert k == 15 and tl.describe(k) == "pass 0 · entered AccumulateGrad (b)"
    t = tl.trace_at(k)
    assert len(t.events) == 15 and len(t.passes) == 1 and not t.passes[0].finished
    assert t.passes[0].order == [11, 9, 8]
    assert set(t.passes[0].grad_inputs) == {11, 9}  # n8 entered, not yet run
    np.testing.assert_array_equal(t.grad("n8").array, [-12., -8.])  # what flows into b's AccumulateGrad
    with pytest.raises(KeyError):
        t.grad("b")  # b.grad not yet accumulated
    with pytest.raises(KeyError):
        t.grad("a")
    np.testing.assert_array_equal(tl.trace_at(16).grad("b").array, [-12., -8.])
    with pytest.raises(KeyError):
        tl.trace_at(22).grad("a")  # AccumulateGrad(a) entered, a.grad not yet there
    end = tl.trace_at(SEED_LEN)
    np.testing.assert_array_equal(end.grad("a").array, [36., 81.])
    np.testing.assert_array_equal(end.grad("b").array, [-12., -8.])
    assert end.passes[0].finished


def test_graph_grows_node_by_node_in_forward_and_not_in_backward(seed):
    tl = Timeline(seed)
    counts = [tl.trace_at(k).graph.number_of_nodes() for k in range(len(tl) + 1)]
    # each AccumulateGrad brings its leaf's tensor node along (2 at once)
    assert counts[:11] == [0, 0, 0, 2, 3, 4, 4, 6, 7, 8, 8]
    assert counts[11:] == [8] * 15
    assert all(a <= b for a, b in zip(counts, counts[1:]))
    assert set(tl.trace_at(5).graph) == {"n2", "t1", "n3", "n5"}
    assert set(tl.trace_at(5).graph.successors("n5")) == {"n3"}


def test_replay_of_all_events_equals_the_live_trace(seed, mlp):
    for trace in (seed, mlp):
        tl = Timeline(trace)
        _same(tl.trace_at(len(tl)), trace)
        assert tl.trace_at(len(tl)) is not trace


def test_every_position_equals_a_fresh_replay_in_any_order(mlp):
    """Asked in random order, then backwards as a drag does: every moment is the fresh replay of
    the events before it (graph, nodes, tensors, passes mid-run, steps, iterations)."""
    tl = Timeline(mlp)
    n = len(tl)
    order = list(range(n + 1))
    random.Random(0).shuffle(order)
    for k in order + list(range(n, -1, -1)):
        _same(tl.trace_at(k), _replayed(mlp.events[:k], mlp.values.budget))


def test_a_moment_is_read_only_and_tensor_history_is_exact(seed):
    """A TensorDescribed repeated later (a parameter frozen between iterations): the moment before
    shows the first description; writing to a moment is refused."""
    later = ev.TensorDescribed(1, "a", (2,), "float32", False, "frozen", None)
    trace = _replayed(list(seed.events) + [ev.IterationStarted(1), later], seed.values.budget)
    tl = Timeline(trace)
    assert tl.trace_at(SEED_LEN).tensors[1].kind == "leaf"
    assert tl.trace_at(SEED_LEN + 2).tensors[1] is later
    assert tl.trace_at(SEED_LEN + 2).iterations == 2 and tl.trace_at(SEED_LEN).iterations == 1
    assert list(tl.trace_at(2).tensors) == [1] and len(tl.trace_at(1).tensors) == 0
    assert 1 not in tl.trace_at(1).tensors
    with pytest.raises(TypeError, match="read-only"):
        tl.trace_at(3).apply(ev.IterationStarted(5))


def test_a_moment_costs_one_pass_not_the_run():
    """A long run (200 iterations of the mlp demo): a moment in the middle is built without
    replaying or copying what came before it: the number of events it reads is at most one pass's."""
    with gradviz.record() as rec:
        demos.demo_module("mlp").main(iterations=200)
    trace = rec.trace
    tl = Timeline(trace)
    tl.marks()  # indexes the events
    per_pass = max(len(events) for events in tl._pass_events)
    reads = []
    orig = Timeline._rebuild_pass

    def counting(self, j, k):
        reads.append(sum(1 for i in self._pass_events[j] if i < k))
        return orig(self, j, k)
    Timeline._rebuild_pass = counting
    try:
        k = _position_after(trace, ev.NodeEntered, 1000)  # mid-backward of a middle iteration
        t = tl.trace_at(k)
    finally:
        Timeline._rebuild_pass = orig
    assert sum(reads) <= per_pass
    _same(t, _replayed(trace.events[:k], trace.values.budget))


def test_an_answer_is_not_changed_by_later_questions(mlp):
    tl = Timeline(mlp)
    t = tl.trace_at(100)
    nodes, passes = t.graph.number_of_nodes(), [list(p.order) for p in t.passes]
    for k in (250, 17, 101, len(tl)):
        tl.trace_at(k)
    assert len(t.events) == 100 and t.graph.number_of_nodes() == nodes
    assert [p.order for p in t.passes] == passes
    assert tl.trace_at(40) is tl.trace_at(40)  # asked again: the same, for a GUI's polling


def test_a_growing_trace_grows_the_timeline_and_keeps_the_past(seed):
    live = Trace()
    tl = Timeline(live)
    live.extend(seed.events[:12])
    assert len(tl) == 12
    mid = tl.trace_at(9)
    assert mid.graph.number_of_nodes() == 8 and not mid.passes
    with pytest.raises(IndexError):
        tl.trace_at(13)
    live.extend(seed.events[12:])
    assert len(tl) == SEED_LEN
    _same(tl.trace_at(SEED_LEN), live)
    _same(tl.trace_at(9), _replayed(seed.events[:9], live.values.budget))
    assert tl.marks()[-1] == (25, "pass 0 ends")


def test_replay_never_drops_an_array_the_trace_still_holds():
    """With a budget that holds only a few gradients, the recording dropped the oldest arrays; the
    replays share the same Value objects and must leave every kept array in place."""
    budget = 40 + 4 * ARRAY_OVERHEAD  # (each array counts its Python objects too)
    trace = _record("seed", budget_bytes=budget)
    values = [v for e in trace.events for v in _values(e)]
    kept = [(v, v.array) for v in values if v.array is not None]
    assert kept and len(kept) < len(values)  # the budget did drop some
    tl = Timeline(trace)
    for k in list(range(len(tl), -1, -1)) + list(range(len(tl) + 1)):
        t = tl.trace_at(k)
        assert t.values.stored_bytes <= budget
    assert all(v.array is a for v, a in kept)
    assert sum(v.array is not None for v in values) == len(kept)


def _values(e):
    for name in ("value", "contribution", "grad"):
        v = getattr(e, name, None)
        if isinstance(v, ev.Value):
            yield v
    for name in ("grads", "grad_outputs", "grad_inputs"):
        yield from (v for v in getattr(e, name, ()) if v is not None)


# -- words and marks -------------------------------------------------------------------------------
def test_describe_says_what_happened_at_known_positions(seed):
    tl = Timeline(seed)
    assert tl.describe(0) == "start: nothing recorded yet"
    assert tl.describe(1) == "iteration 0 started"
    assert tl.describe(2) == "leaf a (2,) seen"
    assert tl.describe(3) == "created AccumulateGrad (a) (seed.py:9)"
    assert tl.describe(5) == "created MulBackward0 (seed.py:9)"
    assert tl.describe(10) == "pass 0 · backward from SubBackward0"
    assert tl.describe(13) == "pass 0 · entered PowBackward0"
    assert tl.describe(14) == "pass 0 · PowBackward0 done"
    assert tl.describe(16) == "pass 0 · b.grad accumulated"
    assert tl.describe(23) == "pass 0 · a.grad accumulated"
    assert tl.describe(25) == "pass 0 · backward finished"
    with pytest.raises(IndexError):
        tl.describe(26)


def test_marks_tick_iterations_and_passes(seed, mlp):
    assert Timeline(seed).marks() == [(1, "iteration 0"), (10, "pass 0 starts"), (25, "pass 0 ends")]
    marks = Timeline(mlp).marks()
    assert [label for _, label in marks if label.startswith("iteration")] == [f"iteration {i}" for i in range(5)]
    assert [label for _, label in marks if label.startswith("pass")] == \
        [f"pass {i} {w}" for i in range(5) for w in ("starts", "ends")]
    for k, _label in marks:
        e = mlp.events[k - 1]
        assert type(e) in (ev.IterationStarted, ev.BackwardStarted, ev.BackwardFinished)
    steps = [i + 1 for i, e in enumerate(mlp.events) if type(e) is ev.OptimizerStep]
    assert Timeline(mlp).describe(steps[0]) == "optimizer step 0 (SGD, 6 parameters)"


# -- where the debugger stood ------------------------------------------------------------------------
def test_pause_at_gives_the_node_about_to_run_and_what_had_run(seed):
    tl = Timeline(seed)
    p = tl.pause_at(13)
    assert (p.reason, p.phase, p.node, p.op, p.pass_index) == ("history", "backward", 9, "PowBackward0", 0)
    np.testing.assert_array_equal(p.grad_outputs[0], [-1., -1.])
    assert p.grad_inputs == [] and p.source.line == 9
    assert tl.ran_at(13) == {"n11"}
    p = tl.pause_at(14)
    assert (p.phase, p.node) == ("backward-done", 9)
    np.testing.assert_array_equal(p.grad_inputs[0], [-12., -8.])
    assert tl.ran_at(14) == {"n11", "n9"}
    assert (tl.pause_at(16).phase, tl.pause_at(16).node) == ("backward", 8)  # mid-AccumulateGrad
    assert tl.ran_at(16) == {"n11", "n9"}
    assert tl.ran_at(17) == {"n11", "n9", "n8"}
    assert (tl.pause_at(5).phase, tl.pause_at(5).node) == ("forward", 5)
    assert (tl.pause_at(1).phase, tl.pause_at(1).node) == ("program", None)
    assert tl.ran_at(9) == set() and tl.ran_at(SEED_LEN) == {"n11", "n9", "n8", "n5", "n3", "n2"}


def test_history_shows_what_the_live_debugger_showed_at_each_step():
    """Stepping the seed demo live: at every pause, the timeline at that moment names the same
    node and the same nodes run as the live AppState does."""
    with gradviz.Debugger.launch(demo="seed", break_on_backward=True) as dbg:
        live = AppState(debugger=dbg)
        tl = Timeline(dbg.trace)
        seen = []
        for _ in range(6):
            deadline = time.monotonic() + 20
            while True:
                live.poll()
                if live.pause is not None and (not seen or live.pause is not seen[-1][0]):
                    break
                assert time.monotonic() < deadline, "no pause"
                time.sleep(0.01)
            with dbg.lock:
                k = len(tl)
                assert (tl.pause_at(k).node, tl.pause_at(k).phase) == (live.pause.node, live.pause.phase)
                assert tl.ran_at(k) == live.ran()
                seen.append((live.pause, len(tl.ran_at(k))))
            live.step()
        assert [n for _, n in seen] == [0, 1, 2, 3, 4, 5]


def test_timeline_state_shows_the_past_and_comes_back_live(seed):
    st = AppState(trace=seed)
    st.poll()
    assert st.status_text().startswith("recording: 1 iteration, 1 backward pass, 25 events")
    st.select("t1")
    np.testing.assert_array_equal(st.selected_value().array, [36., 81.])

    changed = st.set_time(13)
    assert {"time", "pause"} <= changed
    assert st.current == "n9" and st.ran() == {"n11"}
    assert st.status_text() == "time travel: event 13 of 25 · pass 0 step 2 of 6 · pass 0 · entered PowBackward0"
    assert st.selected_value() is None  # a.grad did not exist yet
    st.select("t7")
    assert st.selected_value() is None
    st.select(None)
    np.testing.assert_array_equal(st.selected_value().array, [-1., -1.])  # n9's grad_outputs

    assert "graph" in st.set_time(5)  # the graph as it was: 4 nodes, laid out
    assert set(st.graph) == {"n2", "t1", "n3", "n5"} and set(st.layout.positions) == set(st.graph)
    assert st.current == "n5" and st.pause.phase == "forward"
    st.select("t7")
    assert st.selected is None  # b was not there yet

    assert st.set_time(5) == set()
    assert st.set_time(999) and st.time == SEED_LEN
    st.set_time(None)
    assert st.trace is seed and st.pause is None and st.time is None
    assert set(st.graph) == set(seed.graph)

    st.set_time(3)
    other = Trace()  # a restart attaches a new trace: its own timeline, shown live
    st._attach(None, other)
    assert st.time is None and st.trace is other and len(st.timeline) == 0


# -- programs that ended badly ------------------------------------------------------------------------
BOOM = """\
import gradviz.engine as torch

a = torch.tensor([2., 3.], requires_grad=True)
(a * a).sum().backward()
b = a * a
c = b * 3
raise RuntimeError("boom half-way")
"""


def test_time_travel_in_a_recording_of_a_program_that_raised(tmp_path):
    script, out = tmp_path / "boom.py", tmp_path / "boom.gvz"
    script.write_text(BOOM)
    assert cli.main(["record", str(script), "-o", str(out)]) == 1
    trace = gradviz.load(str(out))
    tl = Timeline(trace)
    n = len(tl)
    assert tl.describe(n) == "program raised: RuntimeError: boom half-way"
    assert tl.marks()[-1] == (n, "program raised")
    _same(tl.trace_at(n), trace)
    end_of_pass = next(k for k, label in tl.marks() if label == "pass 0 ends")
    at = tl.trace_at(end_of_pass)
    np.testing.assert_array_equal(at.grad("a").array, [4., 6.])
    assert at.iterations == 1 and tl.trace_at(n).iterations == 2
    ops = lambda t: sorted(d["op"] for _, d in t.iteration_graph(1).nodes(data=True) if d["op"])  # noqa: E731
    assert ops(at) == [] and ops(tl.trace_at(n)) == ["AccumulateGrad", "MulBackward0", "MulBackward0"]

    # the file cut mid-frame, as when the program was killed while writing: the same, less the end
    data = out.read_bytes()
    cut = tmp_path / "cut.gvz"
    cut.write_bytes(data[:data.rindex(b"GVEV") + 7])  # (the last event's frame: array and note frames follow)
    partial = gradviz.load(str(cut), partial=True)
    tlp = Timeline(partial)
    assert len(tlp) == n - 1
    _same(tlp.trace_at(len(tlp)), partial)
    np.testing.assert_array_equal(tlp.trace_at(end_of_pass).grad("a").array, [4., 6.])


def test_a_partially_loaded_inconsistent_trace_replays_as_it_loaded(seed, tmp_path):
    """An event that does not fit (a node entered in a pass never started): load(partial=True)
    keeps it and stops; the timeline replays up to it and past it the same way."""
    bad = list(seed.events[:12]) + [ev.NodeEntered(pass_index=7, node=9)] + list(seed.events[12:])
    path = tmp_path / "bad.gvz"
    write_trace(str(path), bad)
    trace = gradviz.load(str(path), partial=True)
    tl = Timeline(trace)
    assert len(tl) == 13
    _same(tl.trace_at(13), trace)
    assert tl.trace_at(13).passes[0].order == [11]


def test_the_timeline_core_imports_no_qt():
    code = ("import sys, gradviz.app.timeline; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph')); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# -- the slider ----------------------------------------------------------------------------------------
@pytest.fixture
def bar(qtbot, seed):
    from gradviz.ui.timeline import TimelineBar
    w = TimelineBar(Timeline(seed))
    qtbot.addWidget(w)
    w.resize(800, 40)
    w.show()
    return w


def test_bar_starts_live_at_the_end_with_the_marks(bar, seed):
    assert bar.live.isChecked() and bar.position is None
    assert (bar.slider.minimum(), bar.slider.maximum(), bar.slider.value()) == (0, SEED_LEN, SEED_LEN)
    assert bar.label.text() == "live · pass 0 · backward finished"
    assert bar.slider.marks == [(1, "iteration 0"), (10, "pass 0 starts"), (25, "pass 0 ends")]


def test_moving_the_slider_goes_back_in_time(bar, qtbot):
    from PySide6.QtCore import Qt
    with qtbot.waitSignal(bar.positionChanged) as blocker:
        bar.slider.setValue(13)
    assert blocker.args == [13]
    assert not bar.live.isChecked() and bar.position == 13
    assert bar.label.text() == "13 / 25 · pass 0 · entered PowBackward0"
    bar.slider.setFocus()
    with qtbot.waitSignal(bar.positionChanged) as blocker:
        qtbot.keyClick(bar.slider, Qt.Key_Left)
    assert blocker.args == [12] and bar.label.text() == "12 / 25 · pass 0 · SubBackward0 done"
    with qtbot.waitSignal(bar.positionChanged) as blocker:
        bar.live.setChecked(True)
    assert blocker.args == [None]
    assert bar.slider.value() == SEED_LEN and bar.label.text().startswith("live · ")
    with qtbot.waitSignal(bar.positionChanged) as blocker:
        bar.set_position(3)
    assert blocker.args == [3] and bar.position == 3
    with qtbot.waitSignal(bar.positionChanged) as blocker:
        bar.set_position(None)
    assert blocker.args == [None] and bar.live.isChecked()


def test_refresh_follows_new_events_when_live_and_stays_put_in_the_past(qtbot, seed):
    from gradviz.ui.timeline import TimelineBar
    live = Trace()
    live.extend(seed.events[:10])
    tl = Timeline(live)
    w = TimelineBar(tl)
    qtbot.addWidget(w)
    with qtbot.assertNotEmitted(w.positionChanged):
        live.extend(seed.events[10:14])
        w.refresh(tl)
    assert (w.slider.maximum(), w.slider.value()) == (14, 14)
    assert w.label.text() == "live · pass 0 · PowBackward0 done"
    w.slider.setValue(5)
    with qtbot.assertNotEmitted(w.positionChanged):
        live.extend(seed.events[14:])
        w.refresh(tl)
    assert (w.slider.maximum(), w.slider.value(), w.position) == (SEED_LEN, 5, 5)
    assert w.label.text() == "5 / 25 · created MulBackward0 (seed.py:9)"
    assert w.slider.marks[-1] == (25, "pass 0 ends")


def test_the_marks_are_drawn(bar):
    with_marks = bar.slider.grab().toImage()
    bar.slider.set_marks([])
    without = bar.slider.grab().toImage()
    assert with_marks != without


def test_output_in_chunks_is_described_by_its_last_line():
    t = Trace()
    for text in ("iteration 0: loss nan", "\n", "iteration 1: loss 0.5\n"):
        t.apply(ev.ProgramOutput("stdout", text))
    tl = Timeline(t)
    assert [tl.describe(k) for k in (1, 2, 3)] == ["stdout: iteration 0: loss nan", "stdout: iteration 0: loss nan",
                                                    "stdout: iteration 1: loss 0.5"]


def test_a_fast_drag_is_shown_at_most_once_a_frame(bar, qtbot):
    """Many slider moves in a row (a drag): the label follows each, the moment shown is asked for
    once with the latest position, not once per step."""
    got = []
    bar.positionChanged.connect(got.append)
    for k in range(24, 4, -1):
        bar.slider.setValue(k)
    assert bar.label.text() == "5 / 25 · created MulBackward0 (seed.py:9)" and got == []
    qtbot.waitUntil(lambda: got == [5], timeout=2000)
    qtbot.wait(100)
    assert got == [5]


def test_marks_of_a_long_run_draw_ticks_a_few_pixels_apart(bar):
    marks = [(k, "x") for k in range(0, 25)] * 400  # 10,000 marks
    bar.slider.set_marks(marks)
    bar.slider.grab()
    columns = bar.slider._columns[1]
    assert len(columns) == len(set(columns)) <= 26
    assert all(b - a >= 4 for a, b in zip(columns, columns[1:]))  # thinned, not a solid bar


# -- event orders gradviz's producers never emit, as a trace file from elsewhere may hold ---------------
def _v(x):
    from gradviz.summary import summarize
    a = np.asarray(x, dtype=np.float32)
    return ev.Value(summarize(a), a)


_SRC = ev.Source("/x.py", 3, "f")
_BASE = [ev.IterationStarted(0),
         ev.TensorDescribed(1, "w", (2,), "float32", True, "parameter", None),
         ev.NodeCreated(2, "AccumulateGrad", "accumulate_grad", 0, (1,), 1, (), (2,), "float32"),
         ev.NodeCreated(3, "MulBackward0", "grad_fn", 0, (1,), 4, (2,), (2,), "float32", "", _SRC),
         ev.NodeCreated(5, "SumBackward0", "grad_fn", 0, (4,), 6, (3,), (), "float32", "", _SRC)]


def test_overlapping_passes_answer_the_last_pass_that_ran_a_node_at_every_moment():
    from gradviz.app import plots
    events = _BASE + [ev.BackwardStarted(0, 0, (5,)), ev.BackwardStarted(1, 0, (3,)), ev.BackwardStarted(2, 0, (3,)),
                      ev.NodeEntered(2, 2, (_v([1, 1]),)), ev.GradAccumulated(2, 2, 1, _v([1, 1]), _v([1, 1])),
                      ev.NodeEntered(0, 2, (_v([1, 1]),)), ev.GradAccumulated(0, 2, 1, _v([1, 1]), _v([2, 2]))]
    trace = _replayed(events, 2**20)
    assert trace._entered_in[2] == [0, 2]  # sorted by place, whatever the order they ran in
    assert trace.last_run(2).index == 2 and trace.last_accumulated(1).index == 2  # the last in passes
    tl = Timeline(trace)
    for k in range(len(events) + 1):
        t, fresh = tl.trace_at(k), _replayed(events[:k], 2**20)
        _same(t, fresh)
        for what in ("t1", "n2"):
            assert plots.latest_grad(t, what) is plots.latest_grad(fresh, what)


def test_events_of_a_pass_after_its_end_are_cut_at_the_moment():
    events = _BASE + [ev.BackwardStarted(0, 0, (5,)), ev.NodeEntered(0, 5, (_v(1),)),
                      ev.NodeExited(0, 5, (_v([1, 1]),)), ev.BackwardFinished(0),
                      ev.NodeEntered(0, 3, (_v([1, 1]),)), ev.NodeExited(0, 3, (_v([1, 1]),)),
                      ev.BackwardStarted(1, 0, (5,)), ev.NodeEntered(0, 2, (_v([1, 1]),))]
    trace = _replayed(events, 2**20)
    tl = Timeline(trace)
    for k in range(len(events) + 1):
        _same(tl.trace_at(k), _replayed(events[:k], 2**20))
    assert tl.trace_at(9).passes[0].order == [5]


def test_a_node_announced_twice_is_the_one_of_its_moment():
    again = ev.NodeCreated(2, "AccumulateGrad", "accumulate_grad", 1, (1,), 1, (), (2,), "float32")
    events = _BASE + [ev.IterationStarted(1), again]
    tl = Timeline(_replayed(events, 2**20))
    t = tl.trace_at(5)
    assert dict(t.nodes) == _replayed(events[:5], 2**20).nodes and t.nodes[2] is events[2]
    assert tl.trace_at(len(events)).nodes[2] is again


def test_a_moment_inside_a_running_pass_does_not_grow_with_it(seed):
    """The live trace stops mid-backward (a paused program); the moment at its end is taken; the
    program steps on: that moment still has the nodes run by then, not the later ones."""
    live = Trace()
    live.extend(seed.events[:15])  # 3 nodes entered, the pass running
    tl = Timeline(live)
    at = tl.trace_at(15)
    live.extend(seed.events[15:])
    assert at.passes[0].order == [11, 9, 8] and not at.passes[0].finished
    assert tl.trace_at(15) is at and tl.trace_at(SEED_LEN).passes[0].finished
