"""What changed between iterations (issue 16, section 3): the control-flow demo's branches as a
graph diff (exact node and edge sets), two recordings compared, and ``gradviz diff``."""
import math

import pytest

import gradviz
from gradviz import cli
from gradviz.demos import run
from gradviz.trace.diff import diff

MM, TANH, RELU = ("MmBackward0", "", "control_flow.py:15"), ("TanhBackward0", "", "control_flow.py:16"), \
    ("ReluBackward0", "", "control_flow.py:16")
POW, MEAN = ("PowBackward0", "", "control_flow.py:17"), ("MeanBackward0", "", "control_flow.py:17")
ACC, W = ("AccumulateGrad", "w"), ("tensor", "w")


@pytest.fixture(scope="module")
def control_flow():
    with gradviz.record() as rec:
        run("control-flow")  # iteration 0: depth 1, tanh; 1: depth 2, relu; 2: depth 3, tanh; 3: depth 1, relu
    return rec.trace


def test_the_two_branches_of_the_control_flow_demo(control_flow):
    d = diff(control_flow, 0, iteration_b=1)
    assert [n.identity for n in d.only_a] == [(*TANH, 0)]
    assert sorted(n.identity for n in d.only_b) == sorted([(*RELU, 0), (*MM, 1), (*RELU, 1)])
    assert sorted(n.identity for n in d.both) == sorted([(*MM, 0), (*POW, 0), (*MEAN, 0), ACC, W])
    assert sorted(d.edges_only_a) == sorted([((*POW, 0), (*TANH, 0)), ((*TANH, 0), (*MM, 0))])
    assert sorted(d.edges_only_b) == sorted([((*POW, 0), (*RELU, 1)), ((*RELU, 1), (*MM, 1)),
                                             ((*MM, 1), (*RELU, 0)), ((*RELU, 0), (*MM, 0)), ((*MM, 1), ACC)])
    # Matched nodes keep their keys in each iteration; the ratio is B's norm over A's.
    w = d.by_identity()[W]
    assert w.key_a == w.key_b == "t2"
    p0, p1 = control_flow.passes[0], control_flow.passes[1]
    assert math.isclose(w.ratio, p1.accumulated[2][0].summary.norm / p0.accumulated[2][0].summary.norm)
    mean = d.by_identity()[(*MEAN, 0)]
    assert mean.ratio == 1.0 and mean.key_a != mean.key_b
    # The same iteration against itself: nothing changed.
    same = diff(control_flow, 2, iteration_b=2)
    assert not same.only_a and not same.only_b and not same.edges_only_a and not same.edges_only_b
    assert all(n.ratio == 1.0 for n in same.both)


def test_two_recordings_of_one_program_match_by_identity(control_flow, tmp_path):
    with gradviz.record() as rec:
        run("control-flow")
    d = diff(control_flow, 3, rec.trace, 0)  # depth 1 relu against depth 1 tanh
    assert [n.identity for n in d.only_a] == [(*RELU, 0)] and [n.identity for n in d.only_b] == [(*TANH, 0)]
    assert d.summary_line() == ("iteration 3 -> iteration 0: 5 nodes in both, 1 only in A, 1 only in B; "
                                "2 edges only in A, 2 only in B")


def test_a_missing_iteration_is_named(control_flow):
    with pytest.raises(ValueError, match=r"recording B has no iteration 7 \(it has 0..3\)"):
        diff(control_flow, 0, iteration_b=7)


def test_gradviz_diff_prints_the_summary_the_nodes_and_the_ratios(tmp_path, capfd):
    out = tmp_path / "cf.gvz"
    assert cli.main(["record", "--demo", "control-flow", "-o", str(out)]) == 0
    capfd.readouterr()
    assert cli.main(["diff", str(out), "--iterations", "0", "1"]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert lines[0] == ("cf.gvz iteration 0 -> cf.gvz iteration 1: 5 nodes in both, 1 only in A, 3 only in B; "
                        "2 edges only in A, 5 only in B")
    assert lines[1:7] == ["only in A (cf.gvz iteration 0):",
                          "  - TanhBackward0            control_flow.py:16",
                          "only in B (cf.gvz iteration 1):",
                          "  + ReluBackward0            control_flow.py:16",
                          "  + MmBackward0              control_flow.py:15 (#2)",
                          "  + ReluBackward0            control_flow.py:16 (#2)"]
    assert lines[7] == "gradient norm B/A, furthest from 1 first:"
    assert "AccumulateGrad(w)" in lines[8] and lines[8].strip().startswith("x1.43")
    # Without --iterations: the last two; two files: the last of each.
    assert cli.main(["diff", str(out)]) == 0
    assert capfd.readouterr().out.startswith("cf.gvz iteration 2 -> cf.gvz iteration 3:")
    assert cli.main(["diff", str(out), str(out), "--iterations", "1", "1"]) == 0
    assert ": 8 nodes in both, 0 only in A, 0 only in B" in capfd.readouterr().out


def test_gradviz_diff_errors_are_one_line(tmp_path, capfd):
    out = tmp_path / "cf.gvz"
    assert cli.main(["record", "--demo", "control-flow", "-o", str(out)]) == 0
    capfd.readouterr()
    assert cli.main(["diff", str(out), "--iterations", "0", "9"]) == 1
    assert capfd.readouterr().err == "gradviz: recording B has no iteration 9 (it has 0..3)\n"
    assert cli.main(["diff", str(tmp_path / "none.gvz")]) == 1
    assert capfd.readouterr().err == f"gradviz: no such trace file: {tmp_path / 'none.gvz'}\n"
    bad = tmp_path / "bad.gvz"
    bad.write_bytes(b"not a trace")
    assert cli.main(["diff", str(out), str(bad)]) == 1
    err = capfd.readouterr().err
    assert err.startswith(f"gradviz: {bad} is not a valid trace:") and err.count("\n") == 1
    seed = tmp_path / "seed.gvz"
    assert cli.main(["record", "--demo", "seed", "-o", str(seed)]) == 0
    capfd.readouterr()
    assert cli.main(["diff", str(seed)]) == 1
    assert capfd.readouterr().err == \
        "gradviz: the recording has 1 iteration: a diff needs two (or a second recording)\n"


# -- the app: the diff drawn (state without a window, then the window) ------------------------------
def test_ratio_colours_on_a_log_scale():
    from gradviz.app.diffview import NO_RATIO, ratio_colour
    assert ratio_colour(1.0) == "#ffffff"
    assert ratio_colour(10.0) == ratio_colour(1e6) == ratio_colour(math.inf) == "#e67e22"
    assert ratio_colour(0.1) == ratio_colour(0.0) == "#3b74c4"
    assert ratio_colour(math.sqrt(10)) == "#f2be90"  # halfway in log scale: halfway in colour
    assert ratio_colour(math.nan) == NO_RATIO


def test_the_diff_state_colours_the_union_graph(control_flow):
    from gradviz.app.diffview import ONLY_A, ONLY_A_BORDER, ONLY_B, ONLY_B_BORDER, DiffState, ratio_colour
    st = DiffState(control_flow, 0, iteration_b=1)
    d = st.diff
    # The union: B's graph (8 nodes) and A's own Tanh, each node's place in the diff said.
    assert st.graph.number_of_nodes() == 9
    ov = st.overlay()
    tanh = d.only_a[0].key_a
    assert st.graph.nodes[tanh]["diff"] == "a" and ov.fills[tanh] == ONLY_A and ov.borders[tanh] == ONLY_A_BORDER
    assert ov.badges[tanh] == ("only in A", ONLY_A_BORDER)
    assert {n.key_b for n in d.only_b} == {k for k, c in ov.fills.items() if c == ONLY_B}
    for n in d.both:
        assert ov.fills[n.key_b] == ratio_colour(n.ratio) and n.key_b not in ov.borders
    w = d.by_identity()[W]
    assert ov.badges[w.key_b] == (f"×{w.ratio:.3g}", "#404040")
    assert sum(c == ONLY_A_BORDER for c in ov.edges.values()) == 2
    assert sum(c == ONLY_B_BORDER for c in ov.edges.values()) == 5
    assert all(st.graph.has_edge(*e) for e in ov.edges)
    assert [t for _, t in ov.legend][:2] == ["only in A (iteration 0)", "only in B (iteration 1)"]
    # Another pair of iterations; a missing one is refused and the last diff kept.
    st.set_iterations(2, 3)
    assert len(st.diff.only_a) == 5 and st.graph.number_of_nodes() == 11
    with pytest.raises(ValueError, match="no iteration 5"):
        st.set_iterations(0, 5)
    assert st.iteration_b == 3


def test_two_recordings_union_keeps_the_keys_apart(control_flow):
    from gradviz.app.diffview import DiffState
    with gradviz.record() as rec:
        run("control-flow")
    st = DiffState(control_flow, 3, rec.trace, 0)
    only_a = [k for k, d in st.graph.nodes(data=True) if d["diff"] == "a"]
    assert len(only_a) == 1 and only_a[0].startswith("a:n")
    assert st.graph.nodes[only_a[0]]["op"] == "ReluBackward0"


def test_the_diff_window_draws_the_colours_on_the_graph_items(qtbot, control_flow):
    from PySide6.QtGui import QColor

    from gradviz.app.diffview import ONLY_A, ONLY_B, ONLY_B_BORDER
    from gradviz.ui.diff_view import DiffWindow
    w = DiffWindow(control_flow, 0, 1)
    qtbot.addWidget(w)
    d = w.state.diff
    items = w.view.items_by_key
    assert items[d.only_a[0].key_a].fill == QColor(ONLY_A)
    assert all(items[n.key_b].fill == QColor(ONLY_B) for n in d.only_b)
    assert sum(e.colour == QColor(ONLY_B_BORDER) for e in w.view.edges_by_key.values()) == 5
    assert w.summary.text() == d.summary_line()
    assert "only in A (iteration 0)" in w.legend.text()
    w.spin_b.setValue(3)  # the user picks another iteration: drawn anew
    assert w.state.iteration_b == 3 and w.summary.text().startswith("iteration 0 -> iteration 3")
    w.compare_with(control_flow)
    assert w.summary.text().startswith("iteration 0 -> iteration 3")


def test_the_main_window_opens_the_diff(qtbot, control_flow):
    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow
    st = AppState(trace=control_flow)
    st.wait_layout()
    w = MainWindow(st)
    qtbot.addWidget(w)
    diff_window = w.open_diff()
    qtbot.addWidget(diff_window)
    assert diff_window.state.iteration_a == 2 and diff_window.state.iteration_b == 3


def test_a_moment_in_the_past_diffs_only_what_was_made_by_then(control_flow):
    from gradviz.app.diffview import DiffState
    from gradviz.app.timeline import Timeline
    past = Timeline(control_flow).trace_at(60)  # in iteration 2's forward or backward: 3 iterations begun
    st = DiffState(past)
    assert (st.iteration_a, st.iteration_b) == (1, 2)
    with pytest.raises(ValueError, match=r"no iteration 3 \(it has 0..2\)"):
        st.set_iterations(0, 3)
