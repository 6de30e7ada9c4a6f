"""Issue 13, items 12 and 13: a long live run. A training loop's iterations build graphs of one
shape, laid out once (the layout renamed for the next), and the trace's memory beyond its arrays."""
import gradviz
import gradviz.engine as torch
from gradviz.app.layouts import LayoutScheduler, lay_out, shape_of


def _training_trace(iterations=3, values="summaries"):
    with gradviz.record(values=values) as rec:
        w = torch.tensor([1., 2., 3.], requires_grad=True)
        b = torch.tensor([0.5], requires_grad=True)
        for _ in range(iterations):
            loss = ((w * 2 + b) ** 2).sum()
            loss.backward()
            w.grad = None
            b.grad = None
    return rec.trace


def test_an_iteration_of_the_same_shape_takes_the_last_layout_renamed():
    trace = _training_trace(3)
    g0, g1 = (trace.iteration_graph(i).copy() for i in (0, 1))
    assert set(g0) != set(g1)  # new grad_fn nodes each iteration (the leaves' nodes are shared)
    sched = LayoutScheduler()
    first = sched.run("k0", g0, 0, None)
    assert not first.layout.stats.get("reused")
    second = sched.run("k1", g1, 1, None)
    assert second.layout.stats.get("reused") is True
    assert second.graph is g1 and second.iteration == 1 and set(second.labels) == set(g1)
    # The same picture: each node where its counterpart was (same op, same place in the graph).
    same = {"n3": "n13", "n7": "n15", "n9": "n17", "n11": "n19", "n2": "n2", "t1": "t1", "n6": "n6", "t5": "t5"}
    assert set(g0) == set(same) and set(g1) == set(same.values())
    lay0, lay1 = first.layout, second.layout
    assert {same[k]: v for k, v in lay0.positions.items()} == lay1.positions
    assert {same[k]: v for k, v in lay0.layers.items()} == lay1.layers
    assert [[same[k] for k in row] for row in lay0.order] == lay1.order
    assert {(same[u], same[v]): line for (u, v), line in lay0.edges.items()} == lay1.edges
    assert set(lay1.edges) == set(g1.edges)
    assert second.labels == lay_out(g1, 1, None).labels
    assert {same[k]: v for k, v in first.labels.items()} == second.labels


def test_a_graph_of_another_shape_is_laid_out_afresh():
    trace = _training_trace(2)
    g0 = trace.iteration_graph(0).copy()
    part = g0.subgraph(list(g0)[:-2]).copy()  # an iteration seen part built, mid-forward
    assert shape_of(part, {k: str(d.get("op")) for k, d in part.nodes(data=True)}) != \
        shape_of(g0, {k: str(d.get("op")) for k, d in g0.nodes(data=True)})
    sched = LayoutScheduler()
    sched.run("k0", g0, 0, None)
    other = sched.run("k1", part, 0, None)
    assert not other.layout.stats.get("reused")
    assert set(other.layout.positions) == set(part)


def test_a_node_not_announced_yet_counts_by_its_size_not_its_key():
    import networkx as nx
    from gradviz.app.labels import node_label

    def part_built(first):  # a grad_fn whose next node is named, not yet announced
        g = nx.DiGraph()
        g.add_node(f"n{first}", kind="grad_fn", op="MulBackward0")
        g.add_edge(f"n{first}", f"n{first + 1}")
        return g, {k: node_label(d, k) for k, d in g.nodes(data=True)}

    assert shape_of(*part_built(3)) == shape_of(*part_built(13))
    sched = LayoutScheduler()
    sched.run("a", part_built(3)[0], 0, None)
    again = sched.run("b", part_built(13)[0], 1, None)
    assert again.layout.stats.get("reused") and set(again.layout.positions) == {"n13", "n14"}
    assert again.labels == {"n13": "MulBackward0", "n14": "n14"}


def test_a_timelines_ordered_marks_draw_the_ticks_the_full_sort_draws(qtbot):
    from gradviz.ui.timeline import MarkedSlider
    import random
    rng = random.Random(7)
    positions = sorted(rng.randrange(0, 300_000) for _ in range(20_000))
    marks = [(p, "x") for p in positions]
    columns = []
    for ordered in (False, True):
        s = MarkedSlider()
        qtbot.addWidget(s)
        s.resize(900, 30)
        s.setRange(0, 300_000)
        s.set_marks(list(marks), ordered=ordered)
        s.grab()
        columns.append(s._columns[1])
    assert columns[0] == columns[1] and 100 < len(columns[0]) <= 900 // 4 + 1
    assert all(b - a >= 4 for a, b in zip(columns[1], columns[1][1:]))


def test_the_last_pass_of_an_iteration_is_found_now_and_in_the_past():
    from gradviz.app.timeline import Timeline
    trace = _training_trace(3)
    assert [trace.last_pass_of(i) for i in range(4)] == [0, 1, 2, None]
    tl = Timeline(trace)
    start_of_pass_2 = next(k for k, label in tl.marks() if label == "pass 2 starts")
    before = tl.trace_at(start_of_pass_2 - 1)
    assert before.last_pass_of(2) is None and before.last_pass_of(1) == 1
    assert tl.trace_at(start_of_pass_2).last_pass_of(2) == 2


def test_the_timelines_births_follow_the_trace_as_it_grows():
    from gradviz.app.timeline import Timeline
    from gradviz.trace.model import Trace
    whole = _training_trace(3)
    live = Trace()
    tl = Timeline(live)
    for start in range(0, len(whole.events), 7):
        live.extend(whole.events[start:start + 7])
        tl.mark_count()
        assert tl._births == list(live.born.values())
    assert tl.trace_at(len(whole.events)).node_count() == whole.node_count()


def test_the_flow_plot_redraws_only_when_its_bars_change(qtbot):
    import pyqtgraph as pg
    from gradviz.app.timeline import Timeline
    from gradviz.ui.grad_plot import GradPlot
    trace = _training_trace(3)  # no optimizer: every pass gives the same gradients
    tl = Timeline(trace)
    ends = [k for k, label in tl.marks() if label.endswith("ends")]
    plot = GradPlot()
    qtbot.addWidget(plot)

    def bars():
        return [i for i in plot.flow_plot.getPlotItem().items if isinstance(i, pg.BarGraphItem)]

    plot.show_flow(tl.trace_at(ends[1]))
    first = bars()
    assert len(first) == 2 and plot.flow_note.text().startswith("Backward pass 1 (iteration 1)")
    plot.show_flow(tl.trace_at(ends[2]))
    assert bars() == first and plot.flow_note.text().startswith("Backward pass 2 (iteration 2)")
    assert [r.name for r in plot.flow_shown] == ["w", "b"]
    plot.show_flow(None)
    assert plot.flow_shown == [] and plot.pages["Gradient flow"].currentIndex() == 0
    plot.show_flow(tl.trace_at(ends[2]))
    assert len(bars()) == 2 and bars() != first  # drawn again after the message


def test_a_loaded_long_run_keeps_one_copy_of_each_histogram_shape_and_name(tmp_path):
    """Item 12: what a long run repeats every iteration (small tensors' histograms, shapes, dtypes,
    ops) is held once, not once per event."""
    trace = _training_trace(50)
    path = tmp_path / "long.gvz"
    trace.save(path)
    loaded = gradviz.load(path)
    summaries = [v.summary for e in loaded.events for v in _values(e)]
    assert len(summaries) > 500
    for field in ("hist", "shape", "dtype"):
        got = [getattr(s, field) for s in summaries]
        assert len({id(x) for x in got}) == len(set(got)) < 60  # one object per distinct value
    ops = [e.op for e in loaded.events if type(e).__name__ == "NodeCreated"]
    assert len({id(op) for op in ops}) == len(set(ops)) == 5
    # the values themselves are as recorded
    assert [s.hist for s in summaries] == [v.summary.hist for e in trace.events for v in _values(e)]


def test_interning_forgets_past_its_cap(monkeypatch):
    from gradviz import summary
    monkeypatch.setattr(summary, "INTERNED_MAX", 3)
    monkeypatch.setattr(summary, "_interned", {})
    a = summary.interned((1, 2))
    assert summary.interned(tuple([1, 2])) is a
    for i in range(5):
        summary.interned((i,))
    assert len(summary._interned) <= 3
    assert summary.interned((1, 2)) == (1, 2)


def _values(e):
    from gradviz.trace.model import _values_of
    return [v for v in _values_of(e) if v is not None]


def test_an_iteration_listed_in_another_order_takes_the_last_layout():
    # An iteration's graph is a subgraph view whose nodes come in a set's order, which differs
    # from iteration to iteration: the shape must not depend on it.
    import networkx as nx
    from gradviz.app.labels import node_label

    def iteration(first, order):
        g = nx.DiGraph()
        ops = {first: "MulBackward0", first + 1: "AddBackward0", first + 2: "PowBackward0", first + 3: "SumBackward0"}
        for i in order:
            g.add_node(f"n{first + i}", kind="grad_fn", op=ops[first + i], label=ops[first + i])
        g.add_node("n2", kind="accumulate_grad", op="AccumulateGrad", label="AccumulateGrad")
        g.add_node("t1", kind="leaf", op="", label="w", name="w")
        for a, b in ((3, 2), (2, 1), (1, 0)):
            g.add_edge(f"n{first + a}", f"n{first + b}", index=0)
        g.add_edge(f"n{first}", "n2", index=0)
        g.add_edge("n2", "t1", index=0)
        return g

    g0, g1 = iteration(10, [0, 1, 2, 3]), iteration(20, [2, 0, 3, 1])
    labels = {k: node_label(d, k) for k, d in g1.nodes(data=True)}
    assert shape_of(g0, {k: node_label(d, k) for k, d in g0.nodes(data=True)}) == shape_of(g1, labels)
    sched = LayoutScheduler()
    first = sched.run("k0", g0, 0, None)
    second = sched.run("k1", g1, 1, None)
    assert second.layout.stats.get("reused") is True
    same = {f"n{10 + i}": f"n{20 + i}" for i in range(4)} | {"n2": "n2", "t1": "t1"}
    assert {same[k]: v for k, v in first.layout.positions.items()} == second.layout.positions
