"""The window's Check runs without blocking it: asked of the child, answered through the poll."""
import os
import textwrap

import pytest

from gradviz import Debugger

SLOW = textwrap.dedent('''
    import time
    import torch


    class SlowSquare(torch.autograd.Function):  # each forward run of the check takes a while
        @staticmethod
        def forward(ctx, x):
            time.sleep(0.05)
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g


    x = torch.tensor([1.5, -2.0], requires_grad=True)
    (SlowSquare.apply(torch.tanh(x)) * 3.0).sum().backward()
''')


def test_check_from_the_context_menu_runs_while_the_window_stays_live(qtbot, tmp_path):
    pytest.importorskip("torch")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer

    from gradviz.app.state import AppState
    from gradviz.ui.main_window import MainWindow
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    dbg = Debugger.launch(script=str(script), breakpoints=["SlowSquareBackward"])
    w = MainWindow(AppState(debugger=dbg))
    qtbot.addWidget(w)
    try:
        st = w.state
        qtbot.waitUntil(lambda: st.live_pause is not None and bool(w.view.items_by_key), timeout=60000)
        paused = st.current
        assert st.live_pause.op == "SlowSquareBackward"
        other = next(k for k, d in st.trace.graph.nodes(data=True)
                     if d.get("kind") == "grad_fn" and k != paused and k in w.view.items_by_key)
        assert dict(w.view.context_actions(other))["Check this node"] is None  # shown disabled: not paused there
        w.select(other)
        assert "Check this node's backward: when paused before it" in w.inspector.toPlainText()
        w.select(paused)
        dict(w.view.context_actions(paused))["Check this node"]()  # emits checkAsked: the window's check_node
        # returned at once: the answer is still to come, and the status line says so
        assert st.checks.node_request is not None and st.checks.result(paused) is None
        assert "checking SlowSquareBackward" in w.status.text()
        assert "gradient check: checking…" in w.inspector.toPlainText()
        assert not w.actions_by_name["Check"].isEnabled()
        ran = []  # the event loop runs while the child checks (its forward runs take 0.05 s each)
        QTimer.singleShot(0, lambda: ran.append(st.checks.node_request is not None))
        qtbot.waitUntil(lambda: bool(ran), timeout=5000)
        assert ran == [True]
        qtbot.waitUntil(lambda: st.checks.node_request is None, timeout=60000)
        assert st.checks.verdict(paused) == "ok" and w.view.items_by_key[paused].check == "ok"
        assert "Check SlowSquareBackward: ok" in w.status.text()
        assert "gradient check: ok ✓" in w.inspector.toPlainText()
    finally:
        w.timer.stop()
        dbg.terminate()


def test_a_recording_opened_in_the_window_offers_no_gradient_check(qtbot):
    """A recording has no program to run a node again in: its inspector has no check section (a
    'not run' there, with nothing that could run it, would only puzzle)."""
    import gradviz
    from gradviz.app.state import AppState
    from gradviz.demos import run
    from gradviz.ui.main_window import MainWindow
    with gradviz.record() as rec:
        run("seed")
    w = MainWindow(AppState(trace=rec.trace))
    qtbot.addWidget(w)
    try:
        key = next(k for k, d in rec.trace.graph.nodes(data=True) if d.get("op") == "MulBackward0")
        w.select(key)
        text = w.inspector.toPlainText()
        assert "MulBackward0" in text and "gradient check" not in text
    finally:
        w.timer.stop()
        w.state.close()
