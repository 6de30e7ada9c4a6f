"""Issue 13, item 12: the parent's memory is bounded beyond the arrays' bytes: each kept array counts
its Python objects too, and older iterations' values keep slim summaries past ``detail_events``."""
import contextlib
import io
import math

import numpy as np
import pytest

import gradviz
import gradviz.engine as torch
from gradviz.app.state import AppState
from gradviz.summary import HIST_BINS
from gradviz.trace.gvz import values_of
from gradviz import events as ev
from gradviz.trace.model import ARRAY_OVERHEAD, FORGOTTEN, Trace, is_slim, node_key


def _events(iterations):
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        w = torch.tensor([1., 2., 3.], requires_grad=True)
        b = torch.tensor([0.5], requires_grad=True)
        for _ in range(iterations):
            loss = ((w * 2 + b) ** 2).sum()
            loss.backward()
            w.grad = None
            b.grad = None
    return rec.trace.events


def _summaries(events):
    return [[None if v is None else v.summary for v in values_of(e)] for e in events]


def test_many_small_arrays_are_bounded_by_their_objects_too():
    events = _events(30)

    def with_arrays():
        return {id(v): v for e in events for v in values_of(e) if v is not None and v.array is not None}
    arrays = len(with_arrays())
    budget = 4096
    assert sum(v.array.nbytes for v in with_arrays().values()) < budget  # by their bytes alone, all fit
    t = Trace(budget)
    t.extend(events)
    kept = len(with_arrays())
    assert t.values.stored_bytes <= budget
    assert budget // (ARRAY_OVERHEAD + 12) <= kept <= budget // (ARRAY_OVERHEAD + 4)  # (3- and 1-element arrays)
    assert t.values.dropped == arrays - kept > 0
    assert t.dropped_brief() == f"{arrays - kept} oldest arrays dropped (memory budget)"


def test_older_iterations_keep_slim_summaries_past_the_detail_bound():
    events = _events(40)
    whole = [[None if s is None else (s.norm, s.min, s.max, s.nan, s.inf, s.shape, s.numel, s.mean, s.hist)
              for s in row] for row in _summaries(events)]
    per = len(events) // 40
    t = Trace(detail_events=10 * per)
    t.extend(events)
    first = t.slim_iterations()
    assert 20 <= first <= 40 - 10 and t.slim_before == next(
        k for k, e in enumerate(t.events) if type(e).__name__ == "IterationStarted" and e.index == first)
    for k, row in enumerate(_summaries(t.events)):
        for s, w in zip(row, whole[k]):
            if s is None:
                continue
            assert (s.norm, s.min, s.max, s.nan, s.inf, s.shape, s.numel) == w[:7]  # what plots and labels read
            if k < t.slim_before:
                assert is_slim(s) and math.isnan(s.mean) and s.hist == (0,) * HIST_BINS
                assert all(v.array is None for v in values_of(t.events[k]) if v is not None)
            else:
                assert not is_slim(s) and s.mean == w[7] and s.hist == w[8]
    assert t.values.discarded > 0 and t.values.dropped == 0  # (not the memory budget's doing)
    assert any(v.array is not None for e in t.events[t.slim_before:] for v in values_of(e) if v is not None)
    # the norm history of a parameter is whole from the first iteration
    hist = t.grad_history("w")
    assert len(hist) == 40 and all(np.isfinite(v.summary.norm) for _, v in hist)
    line = t.dropped_lines()[0]
    assert line.startswith(f"iterations before {first} keep slim summaries (shape, min, max, norm, NaN and Inf")
    assert line.endswith(f"whole ones for the latest {10 * per:,} events")
    assert t.dropped_brief() == f"slim summaries before iteration {first} (memory bound)"
    assert AppState(trace=t).status_text().endswith(" · " + t.dropped_brief())


def test_a_short_run_keeps_every_summary_whole():
    t = Trace()
    t.extend(_events(5))
    assert t.slim_before == 0 and t.dropped_lines() == []
    assert not any(is_slim(v.summary) for e in t.events for v in values_of(e) if v is not None)


# -- the event budget: the oldest whole iterations forgotten ------------------------------------------
def _training(iterations):
    """A run whose iterations share a node made once before the loop (``c``'s MulBackward0, reached by
    every iteration's graph), besides the parameters' AccumulateGrad nodes."""
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        w = torch.tensor([1., 2., 3.], requires_grad=True)
        b = torch.tensor([0.5], requires_grad=True)
        v = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
        c = v * 3
        opt = torch.optim.SGD([w, b], lr=0.001)
        for i in range(iterations):
            x = torch.tensor([1., -1., 2.]) * (i % 5)
            loss = ((w * x + b + c) ** 2).sum()
            opt.zero_grad()
            v.grad = None
            loss.backward(retain_graph=True)
            opt.step()
    return rec.trace.events


def _bounded(events, budget):
    from gradviz.app.timeline import Timeline
    t = Trace(event_budget=budget)
    tl = Timeline(t)
    live_max = 0
    for e in events:
        t.apply(e)
        live_max = max(live_max, sum(1 for x in t.events if x is not FORGOTTEN))
        if len(t.events) % 50 == 0:
            tl.marks()  # the window's indexes, built as the run goes
    return t, tl, live_max


def test_past_the_event_budget_the_oldest_whole_iterations_are_forgotten():
    from gradviz.app.plots import grad_norm_history, gradient_flow
    from gradviz.app.timeline import Timeline
    events = _training(40)
    per = len(events) // 40
    full = Trace(event_budget=None)
    full.extend(events)
    t, tl, live_max = _bounded(events, 8 * per)
    gone = t.forgotten_iterations
    assert 40 - 8 <= gone < 40 - 8 * 3 // 4 + 2 and t.iterations == 40
    assert live_max <= 8 * per + per + 2  # the budget, exceeded at most by the iteration under way
    # whole iterations, the oldest: everything before the kept first iteration's start, nothing after
    start = t.forgotten_before
    assert type(t.events[start]) is ev.IterationStarted and t.events[start].index == gone
    assert all(e is FORGOTTEN for e in t.events[:start]) and FORGOTTEN not in t.events[start:]
    assert len(t.events) == len(full.events)
    assert all(v.array is None for p in t.passes if p.forgotten for _, v in p.accumulated.values())
    assert [p.iteration for p in t.passes if p.forgotten] == list(range(gone))
    assert not any(p.forgotten for p in t.passes if p.iteration >= gone)
    # the graph keeps the kept iterations' nodes and what they reach (c's node, made before the loop)
    assert set(t.graph) < set(full.graph) and len(t.graph) < len(full.graph) / 3
    c_node = next(n.id for n in full.nodes.values() if n.op == "MulBackward0" and n.iteration == 0)
    assert node_key(c_node) in t.graph and c_node in t.nodes
    assert [k for it, keys in t.iteration_nodes.items() if it < gone for k in keys] == [node_key(c_node)]
    # a kept moment is the same as without the bound
    ftl = Timeline(full)
    for k in range(tl.first(), len(events) + 1, 5):
        a, b = tl.trace_at(k), ftl.trace_at(k)
        it = a.iterations - 1
        ga, gb = a.iteration_graph(it), b.iteration_graph(it)
        assert a.iterations == b.iterations and sorted(ga.edges(data=True)) == sorted(gb.edges(data=True))
        assert dict(ga.nodes(data=True)) == dict(gb.nodes(data=True))
        pa, pb = a.passes[-1], b.passes[-1]
        if pb.iteration < gone:  # the pass of a forgotten iteration, before the kept one's first: a stub
            assert pa.forgotten and pa.index == pb.index and not pa.order and not pa.grad_outputs
            assert {i: g.summary.norm for i, (_, g) in pa.accumulated.items()} == {
                i: g.summary.norm for i, (_, g) in pb.accumulated.items()}
            continue
        assert (pa.index, pa.order) == (pb.index, pb.order)
        for n in pb.grad_outputs:
            for va, vb in zip(pa.grad_outputs[n], pb.grad_outputs[n]):
                assert va.summary.norm == vb.summary.norm
                if va.array is not None:
                    np.testing.assert_array_equal(va.array, vb.array)
        assert tl.describe(k) == ftl.describe(k)
    # a forgotten moment is refused, with the message
    message = f"iterations 0..{gone - 1} were forgotten to bound memory"
    assert tl.forgotten_message() == message and tl.describe(start // 2) == message
    with pytest.raises(IndexError, match=f"position {start}: {message}"):
        tl.trace_at(start)
    st = AppState(trace=t)
    old = node_key(next(n.id for n in full.nodes.values() if n.iteration == 1 and n.kind == "grad_fn"))
    st.selected = old  # selected before its iteration was forgotten: let go at the next poll
    st.poll()
    assert st.selected is None
    st.set_time(3)
    assert st.time == tl.first() == start + 1 and st.message == message
    # said in the status line and the file notes
    assert t.dropped_brief() == f"iterations 0..{gone - 1} forgotten (memory bound)"
    assert st.status_text().endswith(" · " + t.dropped_brief())
    assert t.dropped_lines()[0].startswith(f"iterations 0..{gone - 1} were forgotten to bound memory: "
                                           f"{8 * per:,} events kept in detail")
    # the plots draw: a parameter's norm for every iteration, the gradient flow of the last pass
    for name in ("w", "b", "t1"):  # (t1: v, described before the loop)
        its, norms = grad_norm_history(t, name)
        f_its, f_norms = grad_norm_history(full, name)
        assert list(its) == list(f_its) == list(range(40))
        np.testing.assert_array_equal(norms, f_norms)
    assert gradient_flow(t) == gradient_flow(full)
    assert t.zero_grad_streaks() == full.zero_grad_streaks()


def test_what_a_bounded_trace_holds_does_not_grow_with_the_run():
    from gradviz.app.timeline import Timeline

    def sizes(t, tl):
        tl.marks()
        return (len(t.graph), len(t.nodes), len(t.tensors), len(t.born), len(t._made_by),
                sum(len(ids) for ids in t._peers.values()), len(t.values._kept), len(tl._nodes.by_id),
                sum(len(h[0]) for h in tl._tensors.by_id.values()), len(tl._ops), len(tl.marks()),
                sum(e is not FORGOTTEN for e in t.events))
    budget = 8 * (len(_training(1)) + 4)
    most = []
    for n in (30, 60):  # the most each holds at any iteration's start: the same, however long the run
        t = Trace(event_budget=budget)
        tl = Timeline(t)
        top = None
        for e in _training(n):
            t.apply(e)
            if type(e) is ev.IterationStarted:
                now = sizes(t, tl)
                top = now if top is None else tuple(map(max, top, now))
        most.append(top)
    assert most[0] == most[1]


def test_a_bounded_trace_saves_its_kept_events_and_short_runs_forget_nothing(tmp_path):
    events = _training(30)
    t, _, _ = _bounded(events, 100)
    t.save(tmp_path / "kept.gvz")
    back = gradviz.load(tmp_path / "kept.gvz")
    assert len(back.events) == len(events) - t.forgotten_before and back.iterations == 30
    short = Trace()
    short.extend(events)
    assert short.forgotten_before == 0 and short.dropped_lines() == []
    with pytest.raises(ValueError, match="event budget must be >= 1 event"):
        Trace(event_budget=0)


def test_the_timeline_bar_greys_the_forgotten_iterations_and_will_not_go_there(qtbot):
    from gradviz.ui.timeline import TimelineBar
    t, tl, _ = _bounded(_training(30), 100)
    bar = TimelineBar(tl)
    qtbot.addWidget(bar)
    assert bar.slider.forgotten == tl.first() > 0
    assert all(position > t.forgotten_before for position, _ in bar.slider.marks)
    with qtbot.waitSignal(bar.positionChanged) as got:
        bar.slider.setValue(2)
    assert bar.slider.value() == got.args[0] == tl.first()
    assert bar.label.text().endswith(f" · iterations 0..{t.forgotten_iterations - 1} were forgotten to bound memory")


def test_the_event_budget_is_a_flag():
    from gradviz import cli
    from gradviz.trace.model import EVENT_BUDGET
    parser = cli.build_parser()
    assert cli.EVENT_BUDGET == EVENT_BUDGET
    assert parser.parse_args([]).event_budget == EVENT_BUDGET
    assert parser.parse_args(["open", "x.gvz", "--event-budget", "200000"]).event_budget == 200_000
    assert parser.parse_args(["--event-budget", "none", "run", "--demo", "mlp"]).event_budget is None
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        parser.parse_args(["open", "x.gvz", "--event-budget", "-3"])
    assert "argument --event-budget: expected a number of events >= 1, or none; got '-3'" in err.getvalue()


def test_a_forgotten_iteration_is_not_diffed():
    from gradviz.trace.diff import diff
    t, _, _ = _bounded(_training(30), 100)
    gone = t.forgotten_iterations
    with pytest.raises(ValueError, match=f"recording A's iteration 0 was forgotten to bound memory "
                                         f"\\(it keeps {gone}..29\\)"):
        diff(t, 0, iteration_b=29)
    assert diff(t, gone, iteration_b=29) is not None


def test_info_says_the_forgotten_passes_in_one_line():
    from gradviz.trace.report import info_text
    t, _, _ = _bounded(_training(30), 100)
    gone = t.forgotten_iterations
    lines = info_text(t).splitlines()
    assert lines[2] == (f"passes 0..{gone - 1} (iterations 0..{gone - 1}): forgotten to bound memory, their "
                        f"gradients' norms kept")
    assert lines[3].startswith(f"pass {gone} (iteration {gone}), ")
    assert f"  iterations 0..{gone - 1} were forgotten to bound memory: 100 events kept in detail" in info_text(t)


def test_a_timeline_made_after_the_trace_forgot_shows_the_same_moments():
    """A long file opened (forgotten while loading), or a window that read the trace late: the
    timeline indexes what the trace kept, as one that followed the run does."""
    from gradviz.app.timeline import Timeline
    t, followed, _ = _bounded(_training(30), 100)
    late = Timeline(t)
    assert late.first() == followed.first() > 0 and late.marks() == followed.marks()
    for k in range(late.first(), len(t.events) + 1):
        a, b = late.trace_at(k), followed.trace_at(k)
        assert (a.iterations, len(a.steps), len(a.passes), a.node_count()) == (
            b.iterations, len(b.steps), len(b.passes), b.node_count())
        assert dict(a.nodes) == dict(b.nodes) and set(a.tensors) == set(b.tensors)
        assert [p.order for p in a.passes[-3:]] == [p.order for p in b.passes[-3:]]
        pa, pb = late.pause_at(k), followed.pause_at(k)
        assert (pa.phase, pa.node, pa.op, pa.pass_index) == (pb.phase, pb.node, pb.op, pb.pass_index)
        # (a leaf's name from a description the trace let go of, the timeline that followed remembers)
        assert late.describe(k) == followed.describe(k).replace("(v)", "(t1)").replace(" v.grad", " t1.grad")


def test_a_long_file_is_loaded_within_its_event_budget(tmp_path):
    from gradviz.app.timeline import Timeline
    events = _training(30)
    whole = Trace(event_budget=None)
    whole.extend(events)
    whole.save(tmp_path / "run.gvz")
    t = gradviz.load(tmp_path / "run.gvz", event_budget=100)
    assert t.forgotten_iterations > 20 and sum(e is not FORGOTTEN for e in t.events) <= 100 + len(events) // 30
    tl = Timeline(t)
    assert tl.first() == t.forgotten_before + 1
    last = tl.trace_at(len(t.events))
    assert sorted(last.iteration_graph(29).edges) == sorted(whole.iteration_graph(29).edges)


LOOP = """
import gradviz.engine as torch
w = torch.tensor([1., 2., 3.], requires_grad=True)
for i in range(150):
    loss = (w * (i % 3)).sum()
    loss.backward()
    w.grad = None
"""


def test_a_live_run_forgets_within_the_budget_launch_was_given(tmp_path):
    import time
    from gradviz import Debugger
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    st = AppState(launch=lambda breakpoints=(), **switches: Debugger.launch(
        script=str(script), breakpoints=breakpoints, event_budget=300, **switches))
    try:
        deadline = time.monotonic() + 30
        while st.debugger.state != "exited" and time.monotonic() < deadline:
            st.poll()
            time.sleep(0.05)
        st.poll()
        t = st.live_trace
        assert t.iterations == 150 and 100 < t.forgotten_iterations < 150
        assert sum(e is not FORGOTTEN for e in t.events) <= 300 + len(t.events) // 150 + 5
        assert t.dropped_brief() in st.status_text()
        st.set_time(0)
        assert st.time == st.timeline.first() and "were forgotten to bound memory" in st.message
        assert st.trace.iterations == t.forgotten_iterations + 1
    finally:
        st.close()


def test_a_forgetting_step_forgets_one_iteration_and_an_iteration_start_at_most_two():
    """Issue 13, item 13: forgetting is done in bounded steps (one iteration each), not down to a
    fraction of the budget at once, and still comes back under the budget."""
    from gradviz.app.timeline import Timeline
    from gradviz.trace.forget import STEPS_PER_ITERATION, forget_step
    from gradviz.trace.model import _values_of, peer_signature, slim
    events = _training(40)
    per = len(events) // 40
    # one call, one iteration: the oldest, up to the next one's start; never the current one
    t = Trace(event_budget=10 ** 9)
    t.extend(events)
    starts = [k for k, e in enumerate(events) if type(e) is ev.IterationStarted]
    for i in range(39):
        assert forget_step(t, _values_of, slim, peer_signature) == starts[i + 1] - (starts[i] if i else 0)
        assert (t.forgotten_iterations, t.forgotten_before) == (i + 1, starts[i + 1])
    assert forget_step(t, _values_of, slim, peer_signature) == 0 and t.forgotten_iterations == 39
    # a budget lowered under a run's feet: at most two iterations forgotten at each start, back
    # under the budget within the run; the timeline's indexes stay those of what the trace holds
    t = Trace(event_budget=10 ** 9)
    tl = Timeline(t)
    t.extend(events[:starts[20]])
    tl.marks()
    t.event_budget = 4 * per
    for e in events[starts[20]:]:
        before = t.forgotten_iterations
        t.apply(e)
        assert t.forgotten_iterations - before <= STEPS_PER_ITERATION == 2
        if type(e) is ev.IterationStarted:
            tl.marks()
            assert tl._births == list(t.born.values())
            assert set(tl._nodes.by_id) <= set(t.nodes) and set(tl._tensors.by_id) <= set(t.tensors)
            assert tl._nodes.order == sorted(tl._nodes.by_id, key=lambda i: tl._nodes.by_id[i][0][0])
    assert len(t.events) - t.forgotten_before <= 4 * per + per
    assert t.forgotten_iterations >= 40 - 5  # (4 or 5 iterations kept, the current one with them)


def test_a_forgotten_pass_keeps_each_gradient_as_a_compact_slim_summary():
    from gradviz.trace.forget import SlimGrads
    from gradviz.trace.model import slim
    events = _training(30)
    full = Trace(event_budget=None)
    full.extend(events)
    t, _, _ = _bounded(events, 6 * (len(events) // 30))
    stubs = [p for p in t.passes if p.forgotten]
    assert len(stubs) == t.forgotten_iterations > 20
    for p in stubs:
        whole = full.passes[p.index].accumulated
        acc = p.accumulated
        assert isinstance(acc, SlimGrads) and list(acc) == [tid for tid in whole if tid in t.tensors] != []
        for tid, (contribution, grad) in acc.items():
            assert contribution is None and grad.array is None and is_slim(grad.summary)
            assert repr(grad.summary) == repr(slim(whole[tid][1].summary))  # (NaN fields: by repr)
            assert tid in acc and acc.get(tid)[1].summary.norm == whole[tid][1].summary.norm
        assert 10 ** 9 not in acc and acc.get(10 ** 9) is None
        with pytest.raises(KeyError):
            acc[10 ** 9]
    assert len(t._grad_kinds) == 2  # one template per (shape, dtype): w and v (3,), b (1,)
