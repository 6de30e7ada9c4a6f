"""The desktop app (offscreen) and the plain state behind it."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from gradviz import Debugger  # noqa: E402
from gradviz.appstate import AppState  # noqa: E402

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
        qtbot.keyClick(window, Qt.Key_F10)
    qtbot.waitUntil(lambda: st.pause is not None and st.pause.reason == "exited", timeout=20000)
    assert seen == SEED_ORDER
    a_key = next(k for k, d in st.trace.graph.nodes(data=True) if d.get("name") == "a")
    window.select(a_key)
    kind, _, heights = window.plot.shown
    assert kind == "values" and heights.tolist() == [36.0, 81.0]
    assert "[36., 81.]" in window.inspector.toPlainText()
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
