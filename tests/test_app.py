"""The desktop app (offscreen) and the plain state behind it."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from gradviz import Debugger  # noqa: E402
from gradviz.app.state import AppState  # noqa: E402
from gradviz.debug.breakpoints import Breakpoint  # noqa: E402

SEED_ORDER = ["SubBackward0", "PowBackward0", "AccumulateGrad", "MulBackward0", "PowBackward0", "AccumulateGrad"]


def _wait(cond, timeout=20.0, tick=None):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        if tick:
            tick()
        time.sleep(0.01)


def test_state_follows_the_seed_demo_without_a_window():
    with Debugger.launch(demo="seed", break_on_backward=True) as dbg:
        st = AppState(debugger=dbg)
        ops, ran_sizes, prev = [], [], None
        for i in range(6):
            _wait(lambda: (st.poll(), st.pause is not None and st.pause is not prev)[1])
            prev = st.pause
            ops.append((st.pause.op, st.current))
            ran_sizes.append(len(st.ran()))
            assert st.status_text().startswith(f"pass 0 · step {i + 1} of 6 · paused (step) at ")
            st.step()
        _wait(lambda: (st.poll(), st.pause.reason == "exited")[1])
        assert [o for o, _ in ops] == SEED_ORDER
        assert ran_sizes == [0, 1, 2, 3, 4, 5]
        assert st.layout is not None and set(st.layout.positions) == set(st.trace.graph)
        st.select(next(k for k, d in st.trace.graph.nodes(data=True) if d.get("name") == "a"))
        np.testing.assert_array_equal(st.selected_value().array, [36., 81.])
        assert st.status_text() == "program exited (status 0)"


@pytest.fixture
def window(qtbot):
    from gradviz.ui.main_window import MainWindow
    dbg = Debugger.launch(demo="seed", break_on_backward=True)
    w = MainWindow(AppState(debugger=dbg))
    qtbot.addWidget(w)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)  # shortcuts act in the active window
    yield w
    w.timer.stop()
    dbg.close()


def test_stepping_with_f10_highlights_each_node_in_order(window, qtbot):
    from PySide6.QtCore import Qt
    from gradviz.ui.graph_view import CURRENT
    st = window.state
    qtbot.waitUntil(lambda: st.current is not None, timeout=20000)
    seen = []
    for i in range(6):
        qtbot.waitUntil(lambda: st.current is not None and len(st.ran()) == i, timeout=20000)
        item = window.view.items_by_key[st.current]
        assert item.fill == CURRENT
        seen.append(st.trace.graph.nodes[st.current]["op"])
        assert window.status.text().startswith(f"pass 0 · step {i + 1} of 6")
        if i == 1:  # PowBackward0 of b**2: what its backward reads, fetched from the paused program
            assert "saved tensors (what its backward reads)\nself (2,) float32\n" \
                   "min 4, max 6, mean 5, std 1, norm 7.2111\n6\n4" in window.inspector.toPlainText()
        qtbot.keyClick(window, Qt.Key_F10)
    qtbot.waitUntil(lambda: st.pause is not None and st.pause.reason == "exited", timeout=20000)
    assert seen == SEED_ORDER
    a_key = next(k for k, d in st.trace.graph.nodes(data=True) if d.get("name") == "a")
    window.select(a_key)
    kind, _, heights = window.plot.shown
    assert kind == "values" and heights.tolist() == [36.0, 81.0]
    text = window.inspector.toPlainText()
    assert ".grad (2,) float32\nmin 36, max 81, mean 58.5, std 22.5, norm 88.64\n36\n81" in text
    assert window.status.text() == "program exited (status 0)"


def test_clicking_a_node_selects_it(window, qtbot):
    st = window.state
    qtbot.waitUntil(lambda: st.current is not None, timeout=20000)
    from PySide6.QtCore import Qt
    key = next(k for k, d in st.trace.graph.nodes(data=True) if d.get("op") == "MulBackward0")
    item = window.view.items_by_key[key]
    pos = window.view.mapFromScene(item.rect.center())
    qtbot.mouseClick(window.view.viewport(), Qt.LeftButton, pos=pos)
    assert st.selected == key and item.selected
    assert "MulBackward0" in window.inspector.toPlainText()
    assert "Q = 3*a**3 - b**2" in window.inspector.toPlainText()  # the source line that made it


def _non_blank(path):
    from PySide6.QtGui import QImage
    img = QImage(str(path))
    assert not img.isNull() and img.width() > 600
    colours = {img.pixel(x, y) for x in range(0, img.width(), 17) for y in range(0, img.height(), 17)}
    return len(colours)


def test_screenshot_of_the_default_app(tmp_path):
    png = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "gradviz", "--screenshot", str(png)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert _non_blank(png) > 8


def test_a_bad_trace_file_is_a_clear_message(tmp_path):
    bad = tmp_path / "bad.gvz"
    bad.write_bytes(b"\x89PNG not a trace")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "gradviz", "open", str(bad), "--screenshot", str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1 and "not a gradviz trace" in out.stderr


def test_open_a_recording(tmp_path):
    trace = tmp_path / "mlp.gvz"
    assert subprocess.call([sys.executable, "-m", "gradviz", "record", "--demo", "mlp", "-o", str(trace)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
    png = tmp_path / "open.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "gradviz", "open", str(trace), "--screenshot", str(png)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert _non_blank(png) > 8


LOOP = ("import gradviz.engine as torch\n"
        "w = torch.tensor([1., 2.], requires_grad=True)\n"
        "for it in range(3):\n"
        "    z = w * (it + 1)\n"
        "    y = z.sum()\n"
        "    y.backward()\n"
        "    print('iteration', it, 'grad', w.grad.tolist())\n")


def _launcher(**kw):
    def launch(breakpoints=(), **switches):
        return Debugger.launch(breakpoints=breakpoints, **{**kw, **switches})
    return launch


def _next_pause(st, prev):
    _wait(lambda: (st.poll(), st.pause is not None and st.pause is not prev)[1])
    return st.pause


def test_breakpoints_switches_restart_and_console_without_a_window(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    st = AppState(launch=_launcher(script=str(script), break_on_backward=True))
    try:
        p = _next_pause(st, None)
        assert (p.op, p.pass_index) == ("SumBackward0", 0) and st.break_on_backward
        mul = next(k for k, d in st.graph.nodes(data=True) if d.get("op") == "MulBackward0")
        st.select(mul)
        assert st.toggle_breakpoint() is True
        assert st.breakpoint_rows() == [(1, "MulBackward0 · loop.py:4, every iteration")]
        assert st.set_anomaly(True) and [label for _, label in st.breakpoint_rows()][-1].startswith("anomaly")
        seen = []
        for _ in range(3):  # Continue leaves the every-node mode: it stops only at the breakpoint
            st.resume()
            p = _next_pause(st, p)
            seen.append((p.reason, p.op, p.pass_index, p.grad_outputs[0].tolist()))
        assert not st.break_on_backward
        assert seen == [("breakpoint", "MulBackward0", i, [1.0, 1.0]) for i in range(3)]
        assert st.toggle_breakpoint(st.current) is False  # F9 again on the same line: removed
        assert [label for _, label in st.breakpoint_rows()] == ["anomaly: NaN or Inf anywhere"]
        st.resume()
        p = _next_pause(st, p)
        assert p.reason == "exited"
        _wait(lambda: "iteration 2" in "".join(text for _, text in st.console()))
        out = "".join(text for stream, text in st.console() if stream == "stdout")
        assert out == "".join(f"iteration {i} grad {[float(sum(range(1, i + 2)))] * 2}\n" for i in range(3))
        assert st.set_anomaly(False) is False and not st.anomaly_on  # remembered, the program is gone
        st.set_anomaly(True)
        assert st.restart()
        p = _next_pause(st, None)
        assert (p.reason, p.op, p.pass_index) == ("step", "SumBackward0", 0)
        assert [label for _, label in st.breakpoint_rows()] == ["anomaly: NaN or Inf anywhere"]
        assert st.debugger.breakpoints == {st.anomaly: Breakpoint(anomaly=True)}
        assert st.debugger.breakpoints[st.anomaly].id == st.anomaly
        assert st.console() == [] or all("iteration" not in text for _, text in st.console())
    finally:
        st.close()


def test_an_exception_in_backward_shows_in_the_console_with_its_node(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import gradviz.engine as torch\n"
                      "w = torch.tensor([1., 2.], requires_grad=True)\n"
                      "w.register_hook(lambda g: 1 / 0)\n"
                      "(w * 3).sum().backward()\n")
    st = AppState(launch=_launcher(script=str(script)))
    try:
        p = _next_pause(st, None)
        assert p.reason == "exception"
        text = st.console()[-1]
        assert text[0] == "exception" and "ZeroDivisionError" in text[1]
        assert text[1].startswith("in backward node ")
        st.resume()
        _wait(lambda: (st.poll(), st.pause.reason == "exited")[1])
        assert "ZeroDivisionError" in st.console()[-1][1]
    finally:
        st.close()


def test_anomaly_switch_in_the_window_stops_where_the_nan_is_made(qtbot):
    from PySide6.QtCore import Qt
    from gradviz.ui.graph_view import CURRENT
    from gradviz.ui.main_window import MainWindow
    w = MainWindow(AppState(launch=_launcher(demo="nan", break_on_backward=True)))
    qtbot.addWidget(w)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)  # shortcuts act in the active window
    try:
        st = w.state
        qtbot.waitUntil(lambda: st.pause is not None and st.pause.reason == "step", timeout=20000)
        assert w.actions_by_name["Every node"].isChecked()
        w.actions_by_name["Anomaly"].trigger()
        assert st.anomaly_on and w.breakpoint_list.count() == 1
        qtbot.keyClick(w, Qt.Key_F5)
        qtbot.waitUntil(lambda: st.pause.reason == "anomaly", timeout=20000)
        assert st.pause.op == "SqrtBackward0" and st.graph.nodes[st.current]["op"] == "SqrtBackward0"
        assert w.view.items_by_key[st.current].fill == CURRENT
        assert not w.actions_by_name["Every node"].isChecked()
        assert "dist = ((p[i] - q[i]) ** 2).sum().sqrt()" in w.inspector.toPlainText()
        assert "grad_input 0 → SumBackward0" in w.inspector.toPlainText()
        assert "0 NaN, 1 Inf\ninf" in w.inspector.toPlainText()  # the Inf sqrt's derivative makes at 0
        assert "NaN or Inf" in w.status.text()
    finally:
        w.timer.stop()
        w.state.close()


def _long_chain_trace(path, n_ops):
    import gradviz
    import gradviz.engine as torch
    with gradviz.record(values="summaries") as rec:
        x = torch.ones(3, requires_grad=True)
        y = x
        for i in range(n_ops):
            y = y * 1.0001 if i % 2 else y + 0.5
        y.sum().backward()
    rec.trace.save(path)
    return rec.trace


def test_a_5000_node_trace_is_laid_out_off_the_gui_thread_and_the_window_answers(qtbot, tmp_path):
    import gradviz
    from PySide6.QtCore import QTimer
    from gradviz.ui.main_window import MainWindow
    path = tmp_path / "big.gvz"
    _long_chain_trace(path, 5000)
    st = AppState(trace=gradviz.load(path))
    w = MainWindow(st)
    qtbot.addWidget(w)
    w.show()
    assert st.laying_out and "laying out the graph" in w.status.text()
    answered = []  # the event loop runs (input, timers, painting) while the layout is computed
    QTimer.singleShot(0, lambda: answered.append(st.laying_out))
    qtbot.waitUntil(lambda: bool(answered), timeout=5000)
    assert answered == [True]
    qtbot.waitUntil(lambda: not st.laying_out and len(w.view.items_by_key) == st.graph.number_of_nodes(),
                    timeout=120000)
    assert st.graph.number_of_nodes() >= 5000
    key = next(k for k, d in st.graph.nodes(data=True) if d.get("op") == "SumBackward0")
    w.select(key)
    assert "SumBackward0" in w.inspector.toPlainText()
    # Zoomed out, one overview item draws the graph in place of its 10,000 items, and a click
    # still picks the node under the pointer.
    w.view.fit()
    assert w.view.overview.isVisible() and not w.view.items_by_key[key].isVisible()
    other = next(k for k, d in st.graph.nodes(data=True) if d.get("op") == "MulBackward0")
    w.view.resetTransform()
    w.view.scale(0.1, 0.1)  # still far: boxes a few pixels tall
    assert w.view.overview.isVisible()
    w.view.centerOn(w.view.items_by_key[other].rect.center())
    from PySide6.QtCore import Qt
    centre = w.view.mapFromScene(w.view.items_by_key[other].rect.center())
    qtbot.mouseClick(w.view.viewport(), Qt.LeftButton, pos=centre)
    assert st.selected == other
    w.view.resetTransform()  # 1:1 again: the items themselves
    assert not w.view.overview.isVisible() and w.view.items_by_key[key].isVisible()


def test_search_plots_and_time_travel_in_the_window(qtbot):
    from PySide6.QtCore import Qt
    from gradviz.ui.main_window import MainWindow
    w = MainWindow(AppState(launch=_launcher(demo="mlp", break_on_backward=True)))
    qtbot.addWidget(w)
    w.show()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)
    try:
        st = w.state
        qtbot.waitUntil(lambda: st.pause is not None and st.pause.reason == "step", timeout=20000)
        qtbot.keyClick(w, Qt.Key_F5)  # Continue: no breakpoint, so to the end
        qtbot.waitUntil(lambda: st.pause.reason == "exited", timeout=30000)
        assert "iteration 4: loss" in w.console.toPlainText()

        qtbot.keyClick(w, Qt.Key_F, Qt.ControlModifier)  # Ctrl+F: to the search box
        assert w.search_box.hasFocus()
        qtbot.keyClicks(w.search_box, "2.weight")  # an 'f' or 'F' typed here is text, not Fit
        qtbot.keyClick(w.search_box, Qt.Key_Return)
        assert w.search_box.text() == "2.weight"
        assert st.graph.nodes[st.selected].get("name") == "2.weight" and w.search_count.text().strip() == "1 of 1"
        assert "2.weight" in w.inspector.toPlainText()
        its, norms = w.plot.history_shown
        assert list(its) == [0, 1, 2, 3, 4]
        expected = [v.summary.norm for _, v in st.trace.grad_history(st.selected)]
        np.testing.assert_allclose(norms, expected)
        assert [r.name for r in w.plot.flow_shown] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
        assert w.plot.heatmap_shown.shape == (16, 16)

        # Time travel: back to the moment the first backward pass began, then live again.
        tl = st.timeline
        start = next(k for k, label in tl.marks() if label == "pass 0 starts")
        w.timeline_bar.set_position(start)
        assert st.time == start and st.trace.passes[-1].order == [] and len(st.trace.passes) == 1
        assert w.status.text().startswith(f"time travel: event {start} of {len(tl)}")
        assert not st.ran()
        w.timeline_bar.set_position(None)
        assert st.time is None and len(st.trace.passes) == 5 and w.status.text().startswith("program exited")
    finally:
        w.timer.stop()
        w.state.close()


def test_nothing_has_run_while_a_new_iteration_goes_forward():
    import gradviz
    from gradviz import demos
    with gradviz.record() as rec:
        demos.run("mlp")
    t = rec.trace
    second = next(i for i, e in enumerate(t.events) if type(e).__name__ == "IterationStarted" and e.index == 1)
    st = AppState(trace=t)
    st.poll()
    assert st.ran() == {f"n{n}" for n in t.passes[-1].order} and len(st.ran()) == 16
    st.set_time(second + 5)  # iteration 1, forward: its AccumulateGrad nodes ran in pass 0, not yet in 1
    assert st.trace.passes[-1].iteration == 0 and st.ran() == set() and st.timeline.ran_at(second + 5) == set()


# -- what a review of the window found ---------------------------------------------------------------
def test_the_console_shows_an_exception_once_and_grows_by_appending(tmp_path):
    """A script that raises at once: its traceback appears once (not also as stderr); the console
    is one list that grows, read incrementally."""
    script = tmp_path / "early.py"
    script.write_text("print('starting')\nraise ValueError('bad config')\n")
    st = AppState(launch=_launcher(script=str(script)))
    try:
        p = _next_pause(st, None)
        assert p.reason == "exception"
        st.resume()
        _wait(lambda: (st.poll(), st.pause.reason == "exited")[1])
        _wait(lambda: len(st.console()) >= 2)
        lines = st.console()
        assert lines is st.console()  # the same list, appended to
        text = "".join(t for _, t in lines)
        assert text.count("Traceback (most recent call last)") == 1
        assert text.count("ValueError: bad config") == 1
        # print() writes its text and its line break apart: one or two chunks, as the reads fall
        assert "".join(t for s, t in lines if s == "stdout") == "starting\n" and lines[0][0] == "stdout"
        assert lines[-1][0] == "exception"
        assert st._console.scanned == len(st.live_trace.events)
    finally:
        st.close()

    missing = AppState(launch=_launcher(script=str(tmp_path / "nope.py")))
    try:
        _wait(lambda: (missing.poll(), missing.pause is not None and missing.pause.reason == "exited")[1])
        _wait(lambda: bool(missing.console()))
        text = "".join(t for _, t in missing.console())
        assert text.count("no such script") == 1
    finally:
        missing.close()


def test_output_split_inside_a_character_is_decoded_whole(tmp_path):
    """UTF-8 characters across the 64 KiB reads of the child's stdout come out whole, not as U+FFFD."""
    script = tmp_path / "utf.py"
    script.write_text("import sys\nsys.stdout.write('a' + 'é' * 100000 + '€' * 50000 + '\\n')\n")
    with Debugger.launch(script=str(script)) as dbg:
        _wait(lambda: dbg.state == "exited")
        dbg._finish_output()
        out = "".join(t for s, t in dbg.output if s == "stdout")
    assert "\ufffd" not in out
    assert out == "a" + "é" * 100000 + "€" * 50000 + "\n"


def test_commands_to_a_program_that_died_are_refused_quietly():
    """The program dies while the window still thinks it is paused: no command raises."""
    with Debugger.launch(demo="seed", break_on_backward=True) as dbg:
        st = AppState(debugger=dbg)
        _next_pause(st, None)
        st.select(st.current)
        dbg.proc.kill()
        dbg.proc.wait()
        _wait(lambda: dbg.state == "exited")
        # The moment between the program's death and the reader thread noticing it, made to
        # last: the state still says paused, and every send fails.
        dbg.state = "paused"
        dbg._conn.close()
        for command in (st.step, st.resume, st.interrupt, lambda: st.set_break_on_backward(False),
                        lambda: st.set_break_on_forward(True), lambda: st.set_anomaly(True),
                        st.toggle_breakpoint):
            assert command() is False
        assert st.breakpoints == {}


def test_f9_on_a_module_box_sets_nothing_and_says_why():
    from gradviz import demos
    import gradviz
    with gradviz.record() as rec:
        demos.run("mlp")
    st = AppState(trace=rec.trace)
    st.poll()
    st.graph_model.collapse("2")
    st.select("m:2")
    assert st.selected == "m:2"  # a box can be selected (the inspector shows what it holds)
    assert st.toggle_breakpoint() is False
    assert st.breakpoints == {} and "module box" in st.message
    st.graph_model.expand("2")
    st.set_time(3)
    assert st.selected is None  # no longer a box on screen


def test_a_line_breakpoint_names_every_node_its_line_made():
    """The seed demo's Q = 3*a**3 - b**2 makes four backward nodes on one line: the breakpoint F9
    sets on any of them is that line's, labelled with all four, and F9 on another removes it and
    says so."""
    with Debugger.launch(demo="seed", break_on_backward=True) as dbg:
        st = AppState(debugger=dbg)
        _next_pause(st, None)
        sub = st.current
        assert st.toggle_breakpoint(sub, line=True) is True
        (bid, label), = st.breakpoint_rows()
        assert label == "line seed.py:9 · 4 backward nodes: PowBackward0, MulBackward0, SubBackward0"
        assert st.message == f"Breakpoint set: {label}"
        mul = next(k for k, d in st.graph.nodes(data=True) if d.get("op") == "MulBackward0")
        assert st.toggle_breakpoint(mul, line=True) is False
        assert st.breakpoint_rows() == [] and st.message == f"Breakpoint removed: {label}"
        assert st.toggle_breakpoint(mul) is True  # F9 alone: that node (in every iteration), not its line
        assert st.breakpoint_rows()[0][1] == "MulBackward0 · seed.py:9, every iteration"


def test_restart_keeps_the_switches_the_user_set(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    st = AppState(launch=_launcher(script=str(script), break_on_backward=True))
    try:
        p = _next_pause(st, None)
        assert p.reason == "step"
        assert st.set_break_on_backward(False)  # the user turns Every node off...
        assert st.set_break_on_forward(True)  # ...and forward stepping on
        assert st.restart()
        p = _next_pause(st, None)
        assert (p.reason, p.phase, p.op) == ("step", "forward", "MulBackward0")  # w * (it + 1)
        assert st.break_on_forward and not st.break_on_backward and not st.debugger.break_on_backward
        st.set_break_on_forward(False)
        st.resume()
        p = _next_pause(st, p)
        assert p.reason == "exited"  # Every node stayed off: no pause in backward
    finally:
        st.close()


def test_returning_to_a_moment_reuses_its_layout():
    """Time travel lays a moment's graph out once: coming back to it shows the same layout (nodes
    keep their places), and a moment in backward shares its forward's graph."""
    from gradviz import demos
    import gradviz
    with gradviz.record() as rec:
        demos.run("mlp")
    st = AppState(trace=rec.trace)
    st.poll()
    tl = st.timeline
    starts = [k for k, label in tl.marks() if label.endswith("starts")]
    assert "graph" in st.set_time(starts[1])
    first = st.layout
    assert "graph" not in st.set_time(starts[1] + 3)  # backward: no node made, nothing relaid
    st.set_time(starts[3])
    assert st.layout is not first
    assert st.iteration == 3
    st.set_time(starts[1])
    assert st.layout is first and st.iteration == 1
    assert set(st.layout.positions) == set(rec.trace.iteration_graph(1))


def test_the_window_stays_whole_while_a_long_run_streams_in(qtbot, tmp_path):
    """300 iterations run while the window polls, repaints and is dragged back in time: the reader
    thread writes the trace meanwhile (a slot that raised would fail this test under pytest-qt)."""
    from gradviz.ui.main_window import MainWindow
    script = tmp_path / "long.py"
    script.write_text("import gradviz.engine as torch\n"
                      "w = torch.randn(8, 8, requires_grad=True)\n"
                      "for it in range(300):\n"
                      "    ((w @ w).tanh() * (it + 1)).sum().backward()\n"
                      "    if it % 50 == 0: print('iteration', it)\n")
    w = MainWindow(AppState(launch=_launcher(script=str(script))))
    qtbot.addWidget(w)
    w.show()
    try:
        st = w.state
        moves, deadline = 0, time.monotonic() + 120
        while st.live_pause is None or st.live_pause.reason != "exited":
            assert time.monotonic() < deadline, "the program did not end"
            qtbot.wait(20)
            if moves < 40 and len(st.timeline) > 100:
                w.timeline_bar.set_position(len(st.timeline) // 2)
                w.go_live()
                moves += 1
        assert moves > 0
        qtbot.waitUntil(lambda: "iteration 250" in w.console.toPlainText(), timeout=10000)
        assert st.trace.iterations == 300 and len(st.trace.passes) == 300
    finally:
        w.timer.stop()
        w.state.close()


def test_f9_on_a_node_of_a_one_line_model_stops_at_that_node_in_every_iteration():
    """The mlp demo makes its whole forward on one line (loss = loss_fn(model(x), y)): F9 on the
    second ReLU stops at that ReLU, iteration after iteration, and nowhere else."""
    with Debugger.launch(demo="mlp", break_on_backward=True) as dbg:
        st = AppState(debugger=dbg)
        p = _next_pause(st, None)
        relus = [k for k in st.trace.iteration_graph(0) if st.trace.graph.nodes[k].get("op") == "ReluBackward0"]
        assert len(relus) == 2
        second = max(relus, key=lambda k: int(k[1:]))  # made later: the ReLU after layer 2
        assert st.toggle_breakpoint(second) is True
        label = st.breakpoint_rows()[0][1]
        assert label == "ReluBackward0 in 3 · mlp.py:17, every iteration"
        scope = st.trace.nodes[int(second[1:])].scope
        hits = []
        for _ in range(4):
            st.resume()
            p = _next_pause(st, p)
            node = st.trace.nodes[p.node]
            hits.append((p.reason, node.op, node.scope, node.iteration))
        assert hits == [("breakpoint", "ReluBackward0", scope, i) for i in range(4)]


def test_the_inspector_shows_what_a_node_that_raised_before_running_was_given(qtbot, tmp_path):
    """A hook on b raises as b's gradient arrives: the program pauses on the exception at
    MulBackward0 before its entry was recorded; the inspector shows the gradient sent to it."""
    from gradviz.ui.main_window import MainWindow
    script = tmp_path / "hook.py"
    script.write_text("import gradviz.engine as torch\n"
                      "a = torch.tensor([1., 2.], requires_grad=True)\n"
                      "b = a * 2\n"
                      "b.register_hook(lambda g: 1 / 0)\n"
                      "b.sum().backward()\n")
    w = MainWindow(AppState(launch=_launcher(script=str(script))))
    qtbot.addWidget(w)
    try:
        st = w.state
        qtbot.waitUntil(lambda: st.pause is not None and st.pause.reason == "exception", timeout=20000)
        w.poll()
        text = w.inspector.toPlainText()
        assert st.trace.last_run(st.pause.node) is None  # its entry was never recorded
        assert "not run yet; gradients arrived so far\nfrom SumBackward0" in text
        assert "(2,) float32\nmin 1, max 1" in text and "Not run in backward yet" not in text
    finally:
        w.timer.stop()
        w.state.close()
