"""The first view of a large graph: its modules as boxes, with the paused node's module opened
(GraphModel.update_focus, focus_scopes), and the window applying it."""
import os

import networkx as nx
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gradviz  # noqa: E402
from gradviz.app import graphmodel as gm  # noqa: E402
from gradviz.app.state import AppState  # noqa: E402

TOP = {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}


@pytest.fixture(scope="module")
def resnet():
    import gradviz.engine as torch
    from gradviz.engine.models import resnet18
    with gradviz.record(values="summaries") as rec:
        torch.manual_seed(0)
        model = resnet18(weights=None)
        (model(torch.rand(1, 3, 64, 64)) - torch.rand(1, 1000)).sum().backward()
    st = AppState(trace=rec.trace)
    st.poll()
    st.wait_layout()
    return st


def _node(st, scope):
    return next(k for k, d in st.graph.nodes(data=True) if d.get("scope") == scope and d.get("kind") == "grad_fn")


def test_resnet18_at_first_sight_is_its_top_level_modules(resnet):
    assert resnet.graph.number_of_nodes() > gm.MODULE_VIEW_NODES
    assert gm.focus_scopes(resnet.graph) == TOP
    loss = next(k for k in resnet.graph if resnet.graph.in_degree(k) == 0)
    assert gm.focus_scopes(resnet.graph, loss) == TOP  # the loss is at top level: nothing opens


def test_the_paused_node_s_module_opens_down_to_a_readable_size(resnet):
    g = resnet.graph
    k = _node(resnet, "layer4.1.conv2")
    assert gm.focus_scopes(g, k) == TOP - {"layer4"}  # layer4 (46 nodes) opens whole
    assert gm.focus_scopes(g, k, limit=40) == (TOP - {"layer4"}) | {"layer4.0"}  # opens one level deeper
    assert gm.focus_scopes(g, k, limit=5) == (TOP - {"layer4"}) | {"layer4.0", "layer4.1.conv1", "layer4.1.bn1",
                                                                    "layer4.1.bn2", "layer4.1.relu"}
    # the paused node is never inside a box
    g2, members = gm.collapse(g, gm.focus_scopes(g, k, limit=5))
    assert k in g2 and not any(k in m for m in members.values())


def test_focus_on_a_graph_without_modules_collapses_nothing():
    g = nx.DiGraph([("n1", "n2"), ("n2", "n3")])
    for k in g:
        g.nodes[k].update(kind="grad_fn", scope="")
    assert gm.focus_scopes(g, "n2") == frozenset()


class _Pause:
    def __init__(self, node):
        self.node = node


def test_update_focus_follows_the_pause_until_the_user_collapses(resnet, monkeypatch):
    model = gm.GraphModel(resnet)
    assert not model.update_focus()  # off unless the window turns it on
    model.auto_focus = True
    assert model.update_focus() and model.collapsed == TOP
    assert not model.update_focus()  # nothing changed
    k = _node(resnet, "layer4.1.conv2")
    monkeypatch.setattr(type(resnet), "current", property(lambda self: k))
    assert model.update_focus() and model.collapsed == TOP - {"layer4"}
    drawn = model.drawing()
    assert k in drawn.graph and "m:layer3" in drawn.graph and "m:layer4" not in drawn.graph
    model.expand("layer3")  # the user's own choice: the rule stops
    assert not model.auto_focus and model.collapsed == TOP - {"layer4", "layer3"}
    monkeypatch.setattr(type(resnet), "current", property(lambda self: None))
    assert not model.update_focus() and model.collapsed == TOP - {"layer4", "layer3"}


def test_a_small_graph_is_never_collapsed(qtbot):
    from gradviz import demos
    with gradviz.record() as rec:
        demos.run("mlp")
    st = AppState(trace=rec.trace)
    st.poll()
    model = gm.GraphModel(st)
    model.auto_focus = True
    assert st.graph.number_of_nodes() <= gm.MODULE_VIEW_NODES
    assert not model.update_focus() and model.collapsed == frozenset()


def test_the_window_opens_a_large_recording_as_modules(resnet, qtbot):
    from gradviz.ui.main_window import MainWindow
    w = MainWindow(resnet)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: "m:layer1" in w.view.items_by_key, timeout=10000)
    assert {k for k in w.view.items_by_key if isinstance(k, str) and k.startswith("m:")} == {f"m:{s}" for s in TOP}
    assert len(w.view.items_by_key) < 25  # readable at fit


def _visible(view, item):
    return view.mapToScene(view.viewport().rect()).boundingRect().contains(item.rect)


def test_a_long_chain_without_modules_opens_at_its_root_legibly(qtbot):
    import gradviz.engine as torch
    from gradviz.app.follow import legible_scale
    from gradviz.ui.main_window import MainWindow
    with gradviz.record(values="summaries") as rec:
        xs = [torch.rand(3, requires_grad=True) for _ in range(20)]
        acc = xs[0]
        for i in range(1, 300):
            acc = (acc * xs[i % 20]).tanh() + xs[(7 * i) % 20]
        acc.sum().backward()
    st = AppState(trace=rec.trace)
    w = MainWindow(st)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitUntil(lambda: not st.laying_out and bool(w.view.items_by_key), timeout=20000)
    w.follow_current()  # what `gradviz open` does once the window has its size
    root = w.view.model.roots()[0]
    assert w.view.transform().m11() >= legible_scale()
    assert _visible(w.view, w.view.items_by_key[root])


def test_a_small_recording_opens_whole(qtbot):
    from gradviz import demos
    from gradviz.ui.main_window import MainWindow
    with gradviz.record() as rec:
        demos.run("seed")
    st = AppState(trace=rec.trace)
    w = MainWindow(st)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: bool(w.view.items_by_key), timeout=10000)
    w.follow_current()
    assert all(_visible(w.view, it) for it in w.view.items_by_key.values())


def test_zoomed_out_the_opened_module_shows_its_nodes_framed_not_a_blank_box(resnet, monkeypatch):
    """With layer4 open at the paused node and the rest collapsed, layer4 holds most of what is
    drawn: the view weighs boxes by drawn nodes, so zoomed out layer4 is a frame over its nodes."""
    from gradviz.app import semantic
    k = _node(resnet, "layer4.1.conv2")
    monkeypatch.setattr(type(resnet), "current", property(lambda self: k))
    model = gm.GraphModel(resnet)
    model.auto_focus = True
    model.update_focus()
    d = model.drawing()
    boxes = semantic.boxes_by_depth(d.graph, d.layout.positions, d.layout.sizes, d.members)[1]
    x0, y0, x1, y1 = boxes["layer4"].rect
    scale = 300 / (y1 - y0)  # layer4 300 px tall on screen
    assert semantic.median_height(boxes) == y1 - y0
    assert semantic.framed(boxes, scale)
