"""Following the debugger: the rule (no Qt), and the window bringing the paused node into view,
readable, until the user moves the view; the Follow switch; the minimap."""
import os

import networkx as nx
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from gradviz import Debugger  # noqa: E402
from gradviz.app.follow import (Follow, focus_rect, legible_scale, neighbour_boxes,  # noqa: E402
                                target_scale)
from gradviz.app.state import AppState  # noqa: E402


# -- the rule, without a window ----------------------------------------------------------------------
def test_follow_goes_to_each_pause_until_the_user_moves_then_the_switch_brings_it_back():
    f = Follow()
    assert f.following and f.on_pause("n1") == "n1" and f.on_pause("n2") == "n2"
    f.on_user_moved()
    assert not f.following
    assert f.on_pause("n3") is None and f.current == "n3"  # the view stays where the user put it
    assert f.set_following(True) == "n3"  # back on: go to the paused node now
    assert f.on_pause("n4") == "n4"
    assert f.set_following(False) is None and f.on_pause("n5") is None
    assert f.on_pause(None) is None  # not paused at a node (the program ended)
    assert f.set_following(True) is None


def test_the_legible_scale_and_the_scale_a_pause_is_shown_at():
    assert legible_scale() == 1.0  # the node font is 9 pt at scale 1.0; 9 pt on screen is legible
    assert legible_scale(font_pt=9.0, min_pt=12.0) == pytest.approx(4 / 3)
    assert legible_scale(font_pt=12.0, min_pt=9.0) == 0.75
    assert target_scale(0.38) == 1.0   # the fitted resnet18: zoomed in until labels read
    assert target_scale(1.0) == 1.0
    assert target_scale(1.7) == 1.7    # the user's closer zoom is kept, never zoomed out
    assert target_scale(0.5, font_pt=9.0, min_pt=4.5) == 0.5


def _laid_out_chain():
    """a -> b -> {c, d}, e -> b: boxes 60 x 20 centred on a grid, 100 apart."""
    g = nx.DiGraph([("a", "b"), ("b", "c"), ("b", "d"), ("e", "b")])
    positions = {"a": (0, 0), "e": (200, 0), "b": (100, 100), "c": (0, 200), "d": (200, 200)}
    return g, positions, {k: (60.0, 20.0) for k in g}


def test_a_node_and_its_neighbours_boxes():
    g, pos, sizes = _laid_out_chain()
    boxes = neighbour_boxes(g, pos, sizes, "b")
    assert boxes[0] == (70.0, 90.0, 60.0, 20.0)  # the node first
    assert sorted(boxes[1:]) == [(-30.0, -10.0, 60.0, 20.0), (-30.0, 190.0, 60.0, 20.0),
                                 (170.0, -10.0, 60.0, 20.0), (170.0, 190.0, 60.0, 20.0)]
    assert neighbour_boxes(g, pos, sizes, "c") == [(-30.0, 190.0, 60.0, 20.0), (70.0, 90.0, 60.0, 20.0)]
    assert neighbour_boxes(g, pos, sizes, "zz") == []
    del pos["d"]  # a node the layout lacks is left out
    assert len(neighbour_boxes(g, pos, sizes, "b")) == 4


def test_the_focus_rect_is_the_neighbourhood_clipped_to_the_viewport_around_the_node():
    g, pos, sizes = _laid_out_chain()
    boxes = neighbour_boxes(g, pos, sizes, "b")
    # It fits a 600 x 400 viewport at scale 1: all of it.
    assert focus_rect(boxes, 600, 400, 1.0) == (-30.0, -10.0, 260.0, 220.0)
    # A 148 x 148 viewport at scale 1 (less a 24-pixel margin each side): 100 x 100 around b's centre.
    assert focus_rect(boxes, 148, 148, 1.0) == (50.0, 50.0, 100.0, 100.0)
    # At scale 2 the same viewport shows half as much.
    assert focus_rect(boxes, 148, 148, 2.0) == (75.0, 75.0, 50.0, 50.0)
    # A leaf at the bottom: its one neighbour above, nothing below it.
    x, y, w, h = focus_rect(neighbour_boxes(g, pos, sizes, "c"), 600, 400, 1.0)
    assert (x, y, w, h) == (-30.0, 90.0, 160.0, 120.0)


# -- in the window -----------------------------------------------------------------------------------
# The program: the tutorial's resnet18, under `gradviz run`.
RESNET18 = """
import gradviz.engine as torch
from gradviz.engine.models import resnet18
model = resnet18(weights=None)
prediction = model(torch.rand(1, 3, 64, 64))
loss = (prediction - torch.rand(1, 1000)).sum()
loss.backward()
"""


@pytest.fixture
def resnet_window(qtbot, tmp_path):
    """The issue's resnet18 paused before its first backward node: a graph far taller than the view."""
    from gradviz.ui.main_window import MainWindow
    script = tmp_path / "resnet18.py"
    script.write_text(RESNET18)
    st = AppState(launch=lambda breakpoints=(), **switches: Debugger.launch(
        script=str(script), breakpoints=breakpoints, **{"break_on_backward": True, **switches}))
    w = MainWindow(st)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    w.view.fit()  # as the app does once the window has its size
    qtbot.waitUntil(lambda: st.current is not None and not st.laying_out and st.current in w.view.items_by_key,
                    timeout=60000)
    qtbot.wait(50)
    yield w
    w.timer.stop()
    st.close()


def _seen(view):
    return view.mapToScene(view.viewport().rect()).boundingRect()


def _step(w, qtbot):
    st = w.state
    before = st.pause
    assert st.step()
    qtbot.waitUntil(lambda: st.pause is not before and st.current is not None, timeout=20000)
    qtbot.wait(40)  # a poll or two: the window has shown the pause


def _shows_the_paused_node_readably(w):
    view, st = w.view, w.state
    item = view.item_for(st.current)
    assert view.transform().m11() >= view.legible_scale() == 1.0
    assert _seen(view).contains(item.rect), (st.current, _seen(view), item.rect)


def test_each_pause_brings_the_paused_node_into_view_readably(resnet_window, qtbot):
    w = resnet_window
    view = w.view
    whole = view.scene().itemsBoundingRect()
    assert not _seen(view).contains(whole)  # the graph does not fit in the view at a readable scale
    _shows_the_paused_node_readably(w)
    assert w.actions_by_name["Follow"].isChecked()
    for _ in range(10):
        _step(w, qtbot)
        _shows_the_paused_node_readably(w)
        # and the neighbours that fit: the drawn graph's predecessors and successors of the node
        g = view.model.drawing().graph
        near = list(g.predecessors(w.state.current)) + list(g.successors(w.state.current))
        assert any(_seen(view).contains(view.items_by_key[k].rect) for k in near)
    assert not view.user_moved


def _view_place(view):
    return view.transform().m11(), view.horizontalScrollBar().value(), view.verticalScrollBar().value()


def test_a_users_zoom_stops_following_and_the_switch_brings_it_back(resnet_window, qtbot):
    w = resnet_window
    view = w.view
    view.zoom(1 / 1.15)  # the wheel
    qtbot.wait(40)
    assert not w.state.follow.following and not w.actions_by_name["Follow"].isChecked()
    place = _view_place(view)
    for _ in range(3):
        _step(w, qtbot)
        assert _view_place(view) == place  # the view stays where the user put it
    w.actions_by_name["Follow"].trigger()  # the switch, back on: to the paused node now
    assert w.state.follow.following
    _shows_the_paused_node_readably(w)
    _step(w, qtbot)
    _shows_the_paused_node_readably(w)


def test_a_drag_or_f_stops_following(resnet_window, qtbot):
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication
    w = resnet_window
    view = w.view
    port = view.viewport()
    empty = QPointF(8, port.height() - 8)  # an empty corner: a press there starts a hand drag

    def send(kind, pos, buttons):
        QApplication.sendEvent(port, QMouseEvent(kind, pos, port.mapToGlobal(pos), Qt.LeftButton, buttons,
                                                 Qt.NoModifier))
    send(QEvent.MouseButtonPress, empty, Qt.LeftButton)
    send(QEvent.MouseMove, empty + QPointF(0, -80), Qt.LeftButton)
    send(QEvent.MouseButtonRelease, empty + QPointF(0, -80), Qt.NoButton)
    assert view.user_moved and not w.state.follow.following
    place = _view_place(view)
    _step(w, qtbot)
    assert _view_place(view) == place
    w.set_following(True)
    _shows_the_paused_node_readably(w)
    assert w.state.follow.following
    w.actions_by_name["Fit"].trigger()  # F: the whole graph, the user's choice
    qtbot.wait(50)  # the scroll bars go
    assert not w.state.follow.following and _seen(view).contains(view.scene().itemsBoundingRect())


def test_the_minimap_shows_the_main_viewport_and_a_click_moves_the_view(resnet_window, qtbot):
    from PySide6.QtCore import Qt
    w = resnet_window
    view, mini = w.view, w.minimap
    assert mini.isVisible()
    assert view.viewport().geometry().contains(mini.geometry())  # over the graph, in its corner

    def drawn_rect():  # the viewport rectangle as the minimap draws it, back in scene coordinates
        r = mini.viewportTransform().mapRect(mini.visible_scene_rect())
        return mini.viewportTransform().inverted()[0].mapRect(r)

    def close(a, b, tol=1.0):
        return all(abs(x - y) <= tol for x, y in zip(a.getRect(), b.getRect()))
    assert close(drawn_rect(), _seen(view))
    # the whole graph is in the minimap's view
    assert mini.mapToScene(mini.viewport().rect()).boundingRect().contains(view.scene().itemsBoundingRect())
    for _ in range(3):
        _step(w, qtbot)
        assert close(drawn_rect(), _seen(view))
    # A click on the minimap's middle centres the main view there (a user's move).
    target = mini.mapFromScene(view.scene().itemsBoundingRect().center())
    qtbot.mouseClick(mini.viewport(), Qt.LeftButton, pos=target)
    assert not w.state.follow.following
    seen = _seen(view)
    assert seen.contains(mini.mapToScene(target)) and close(drawn_rect(), seen)
    assert abs(seen.center().y() - mini.mapToScene(target).y()) < 2 / mini.transform().m22()
    # and a drag on it follows the pointer
    before = seen
    qtbot.mousePress(mini.viewport(), Qt.LeftButton, pos=target)
    qtbot.mouseMove(mini.viewport(), pos=target + type(target)(0, 20))
    qtbot.mouseRelease(mini.viewport(), Qt.LeftButton, pos=target + type(target)(0, 20))
    assert _seen(view).center().y() > before.center().y() and close(drawn_rect(), _seen(view))


def test_the_minimap_draws_a_5000_node_graph_quickly(qtbot):
    """The minimap repaints a cached pixmap and a rectangle when the view pans; its pixmap is made
    again only when the graph is recoloured or drawn anew."""
    import time

    import gradviz
    import gradviz.engine as torch
    from gradviz.ui.main_window import MainWindow
    with gradviz.record(values="summaries") as rec:
        y = torch.ones(3, requires_grad=True)
        for i in range(5000):
            y = y * 1.0001 if i % 2 else y + 0.5
        y.sum().backward()
    st = AppState(trace=rec.trace)
    w = MainWindow(st)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: not st.laying_out and len(w.view.items_by_key) == st.graph.number_of_nodes(),
                    timeout=120000)
    w.view.resetTransform()
    qtbot.wait(40)
    mini = w.minimap
    assert mini.isVisible()

    def timed(fn, n=5):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[n // 2]

    def remake():
        mini.invalidate()
        mini.viewport().repaint()
    pan = timed(lambda: (w.view.verticalScrollBar().setValue(w.view.verticalScrollBar().value() + 40),
                         mini.viewport().repaint()))
    made = timed(remake)
    print(f"minimap on 5,000 nodes: a pan repaints it in {pan * 1e3:.2f} ms, a recolour in {made * 1e3:.1f} ms")
    assert pan < 0.016
    assert made < 0.25
    w.timer.stop()
