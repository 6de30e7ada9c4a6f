"""The graph as the app draws it: modules collapsed into boxes, search, the gradients that edges and
leaves carried (core, no Qt), the view that renders them, and the windowless export."""
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gradviz  # noqa: E402
from gradviz import cli, demos
from gradviz.app import graphmodel as gm  # noqa: E402
from gradviz.app.state import AppState  # noqa: E402
from gradviz.trace.model import Trace  # noqa: E402


def _record(fn):
    with gradviz.record() as rec:
        fn()
    return rec.trace


@pytest.fixture(scope="module")
def seed():
    state = AppState(trace=_record(lambda: demos.run("seed")))
    state.poll()
    return state


@pytest.fixture(scope="module")
def resnet():
    """resnet18 training end to end, except layer1.1, frozen (the tutorial's greyed parameters)."""
    import gradviz.engine as torch
    from gradviz.engine import nn
    from gradviz.engine.models import resnet18

    def run():
        torch.manual_seed(0)
        model = resnet18(weights=None)
        for name, p in model.named_parameters():
            if name.startswith("layer1.1"):
                p.requires_grad = False
        loss = nn.functional.cross_entropy(model(torch.rand(2, 3, 32, 32)), torch.tensor([3, 1]))
        loss.backward()

    state = AppState(trace=_record(run))
    state.poll()
    return state


def _key(graph, **attrs):
    hits = [k for k, d in graph.nodes(data=True) if all(d.get(a) == v for a, v in attrs.items())]
    assert len(hits) == 1, (attrs, hits)
    return hits[0]


def _seed_keys(g):
    a, b = _key(g, name="a"), _key(g, name="b")
    acc_a, acc_b = next(iter(g.predecessors(a))), next(iter(g.predecessors(b)))
    pow_a, pow_b = next(iter(g.predecessors(acc_a))), next(iter(g.predecessors(acc_b)))
    return dict(a=a, b=b, acc_a=acc_a, acc_b=acc_b, pow_a=pow_a, pow_b=pow_b,
                mul=_key(g, op="MulBackward0"), sub=_key(g, op="SubBackward0"))


# -- core: collapsing modules -----------------------------------------------------------------------
def test_collapsing_layer1_0_makes_one_box_with_the_blocks_edges(resnet):
    g = resnet.graph
    inside = {k for k, d in g.nodes(data=True) if gm.node_scope(d).startswith("layer1.0")}
    assert len(inside) == 19  # add + relu x2 + 2 x (conv + weight) + 2 x (bn + weight + bias)
    g2, members = gm.collapse(g, ["layer1.0"])
    box = "m:layer1.0"
    assert set(members) == {box} and set(members[box]) == inside
    assert g2.nodes[box]["kind"] == "module" and g2.nodes[box]["label"] == "layer1.0\n19 nodes"
    assert set(g2) == (set(g) - inside) | {box}
    assert not any(u == v for u, v in g2.edges)
    # in: layer1.1's first conv and its residual add both send their gradient into layer1.0's relu
    preds = {(g2.nodes[u]["op"], g2.nodes[u]["scope"]) for u in g2.predecessors(box)}
    assert preds == {("ConvolutionBackward0", "layer1.1.conv1"), ("AddBackward0", "layer1.1")}
    # out: the block's conv path and its identity shortcut, merged into one edge to the maxpool
    (succ,) = g2.successors(box)
    assert g2.nodes[succ]["op"] == "MaxPool2DWithIndicesBackward0"
    orig = g2.edges[box, succ]["orig"]
    assert len(orig) == 2 and all(u in inside and v == succ for u, v in orig)
    expected_in = {(u, v) for u, v in g.edges if v in inside and u not in inside}
    assert {e for u in g2.predecessors(box) for e in g2.edges[u, box]["orig"]} == expected_in


def test_outer_scope_wins_and_scopes_are_every_level_with_two_nodes(resnet):
    g = resnet.graph
    g2, members = gm.collapse(g, ["layer1.0", "layer1"])
    layer1 = {k for k, d in g.nodes(data=True) if gm.node_scope(d).split(".")[0] == "layer1"}
    assert set(members) == {"m:layer1"} and set(members["m:layer1"]) == layer1
    assert g2.nodes["m:layer1"]["label"] == "layer1\n32 nodes"  # layer1.0's 19, frozen layer1.1's 13
    scopes = gm.module_scopes(g)
    assert scopes == sorted(scopes)
    assert {"layer1", "layer1.0", "layer1.0.conv1", "layer2.0.downsample", "fc"} <= set(scopes)
    assert "avgpool" not in scopes  # one node: nothing to collapse
    # frozen parameters take their scope from their name
    frozen = _key(g, name="layer1.1.conv1.weight")
    assert g.nodes[frozen]["kind"] == "frozen" and frozen in gm.collapse(g, ["layer1.1"])[1]["m:layer1.1"]


# -- core: search --------------------------------------------------------------------------------------
def test_search_finds_parameters_ops_and_scopes_in_reading_order(resnet, seed):
    g, pos = resnet.graph, resnet.layout.positions
    hits = gm.search(g, resnet.labels, "conv1", pos)
    assert _key(g, name="layer1.0.conv1.weight") in hits
    assert gm.search(g, resnet.labels, "CONV1", pos) == hits
    assert [pos[k][1] for k in hits] == sorted(pos[k][1] for k in hits)
    assert {g.nodes[k]["op"] for k in hits} == {"ConvolutionBackward0", "AccumulateGrad", ""}
    assert gm.search(g, resnet.labels, "layer1.0.bn2.bias", pos) == [_key(g, name="layer1.0.bn2.bias")]
    assert gm.search(g, resnet.labels, "no such thing") == [] and gm.search(g, resnet.labels, " ") == []
    k = _seed_keys(seed.graph)
    assert gm.search(seed.graph, seed.labels, "powbackward", seed.layout.positions) == [k["pow_b"], k["pow_a"]]


# -- core: gradients on the graph --------------------------------------------------------------------
def test_edge_labels_of_the_seed_demo_show_shapes_and_norms(seed):
    k = _seed_keys(seed.graph)
    labels = gm.edge_labels(seed.trace, seed.graph)
    s2 = 2 ** 0.5
    assert labels == {
        (k["sub"], k["mul"]): f"[2] · ‖g‖={s2:.3g}",            # dQ/d(3a^3) = [1, 1]
        (k["sub"], k["pow_b"]): f"[2] · ‖g‖={s2:.3g}",          # -[1, 1]
        (k["mul"], k["pow_a"]): f"[2] · ‖g‖={3 * s2:.3g}",      # [3, 3] into PowBackward0 of a
        (k["pow_a"], k["acc_a"]): f"[2] · ‖g‖={np.hypot(36, 81):.3g}",
        (k["pow_b"], k["acc_b"]): f"[2] · ‖g‖={np.hypot(12, 8):.3g}",
        (k["acc_a"], k["a"]): f"[2] · ‖g‖={np.hypot(36, 81):.3g}",
        (k["acc_b"], k["b"]): f"[2] · ‖g‖={np.hypot(12, 8):.3g}",
    }
    assert labels[k["mul"], k["pow_a"]] == "[2] · ‖g‖=4.24"


def test_edge_labels_follow_a_pass_as_it_runs(seed):
    """Mid-pass (the first three nodes ran) only the edges out of those carry a gradient."""
    events, exited, part = seed.trace.events, 0, Trace()
    for e in events:
        part.apply(e)
        exited += type(e).__name__ == "NodeExited"
        if exited == 3:
            break
    k = _seed_keys(seed.graph)
    assert part.passes[-1].order[:3] == [int(k[x][1:]) for x in ("sub", "pow_b", "acc_b")]
    assert set(gm.edge_labels(part, part.graph)) == {(k["sub"], k["mul"]), (k["sub"], k["pow_b"]),
                                                      (k["pow_b"], k["acc_b"]), (k["acc_b"], k["b"])}
    assert gm.edge_labels(Trace(), seed.graph) == {}


def test_an_input_used_twice_shows_the_sum_of_its_two_gradients():
    import gradviz.engine as torch

    def run():
        x = torch.tensor([1., 2.], requires_grad=True)
        (x * x).sum().backward()

    t = _record(run)
    mul = _key(t.graph, op="MulBackward0")
    (acc,) = t.graph.successors(mul)
    # d(x*x)/dx = 2x = [2, 4]: two gradients of [1, 2] took the same edge
    assert gm.edge_labels(t, t.graph)[mul, acc] == f"[2] · ‖g‖={np.hypot(2, 4):.3g}"


def test_leaf_grads_and_the_root(seed, resnet):
    k = _seed_keys(seed.graph)
    assert gm.leaf_grad_label(seed.trace, k["a"]) == ".grad = [36, 81]"
    assert gm.leaf_grad_label(seed.trace, k["b"]) == ".grad = [-12, -8]"
    assert gm.leaf_grad_label(seed.trace, k["mul"]) is None
    assert gm.root_keys(seed.trace) == [k["sub"]]
    w = _key(resnet.graph, name="fc.weight")
    norm = resnet.trace.grad(w).summary.norm
    assert gm.leaf_grad_label(resnet.trace, w) == f".grad ‖g‖={norm:.3g}"
    assert gm.leaf_grad_label(resnet.trace, _key(resnet.graph, name="layer1.1.conv1.weight")) is None
    assert [resnet.graph.nodes[r]["op"] for r in gm.root_keys(resnet.trace, resnet.graph)] == ["NllLossBackward0"]


def test_before_any_backward_the_root_is_the_output_so_far():
    import gradviz.engine as torch

    def run():
        a = torch.tensor([2., 3.], requires_grad=True)
        (3 * a ** 3).sum()

    t = _record(run)
    assert [t.graph.nodes[r]["op"] for r in gm.root_keys(t, t.graph)] == ["SumBackward0"]
    assert gm.root_keys(t) == [] and gm.edge_labels(t, t.graph) == {}


def test_graph_model_collapses_searches_and_caches(resnet):
    model = gm.GraphModel(resnet)
    plain = model.drawing()
    assert plain.graph is resnet.graph and plain.layout is resnet.layout
    assert model.set_collapsed(["layer1.0"]) and not model.set_collapsed({"layer1.0"})
    d = model.drawing()
    assert d is model.drawing()  # cached
    assert "m:layer1.0" in d.layout.positions and len(d.members["m:layer1.0"]) == 19
    conv = _key(resnet.graph, name="layer1.0.conv1.weight")
    assert d.drawn_key(conv) == "m:layer1.0"
    assert model.expand("m:layer1.0") and model.collapsed == frozenset()
    model.set_collapsed(["layer1", "layer1.0", "layer2"])
    model.expand("layer1")
    assert model.collapsed == {"layer2"}
    hits = model.search("layer1.0.conv")
    assert len(hits) == 6 and model.current_match == hits[0]
    assert [model.next_match() for _ in range(6)] == hits[1:] + hits[:1]
    assert model.next_match(-1) == hits[-1]


# -- the view ----------------------------------------------------------------------------------------
@pytest.fixture
def view(qtbot, resnet):
    from gradviz.ui.graph_view import GraphView
    resnet.selected = None
    v = GraphView(resnet)
    qtbot.addWidget(v)
    v.resize(900, 700)
    v.show()
    v.rebuild()
    return v


def test_view_styles_kinds_root_steps_and_gradients(qtbot, seed):
    from gradviz.ui.graph_view import CURRENT, EdgeItem, GraphView
    v = GraphView(seed)
    qtbot.addWidget(v)
    v.rebuild()
    k = _seed_keys(seed.graph)
    items = v.items_by_key
    assert {items[x].kind for x in k.values()} == {"grad_fn", "accumulate_grad", "leaf"}
    assert items[k["sub"]].root and not items[k["mul"]].root
    assert [items[k[x]].step for x in ("sub", "pow_b", "acc_b", "mul", "pow_a", "acc_a")] == [1, 2, 3, 4, 5, 6]
    assert items[k["a"]].caption == ".grad = [36, 81]" and items[k["a"]].step is None
    edges = v.edges_by_key
    assert edges[k["mul"], k["pow_a"]].label == "[2] · ‖g‖=4.24" and edges[k["mul"], k["pow_a"]].carried
    # the edge into a leaf is marked, its text left to the leaf's .grad caption
    assert edges[k["acc_a"], k["a"]].carried and edges[k["acc_a"], k["a"]].label is None
    # one item per node and per edge: arrow heads are part of their edge's item
    assert len(v.scene().items()) == len(items) + len(edges) == 8 + 7
    assert all(isinstance(e, EdgeItem) for e in edges.values())
    labelled = [e.label_rect for e in edges.values() if e.label]
    assert len(labelled) == 5
    assert not any(a.intersects(b) for i, a in enumerate(labelled) for b in labelled[i + 1:])
    seed.live_pause = type("P", (), {"node": int(k["mul"][1:]), "phase": "backward"})()
    try:
        v.refresh()
        assert items[k["mul"]].fill == CURRENT
    finally:
        seed.live_pause = None


def test_frozen_parameters_and_cached_nodes(view, resnet):
    from PySide6.QtWidgets import QGraphicsItem, QGraphicsView
    frozen = view.items_by_key[_key(resnet.graph, name="layer1.1.conv1.weight")]
    assert frozen.kind == "frozen" and frozen.caption is None
    conv = _key(resnet.graph, name="layer1.1.conv1.weight")
    (into,) = resnet.graph.predecessors(conv)
    assert not view.edges_by_key[into, conv].carries_grad and not view.edges_by_key[into, conv].carried
    assert view.viewportUpdateMode() == QGraphicsView.MinimalViewportUpdate
    assert all(i.cacheMode() == QGraphicsItem.DeviceCoordinateCache for i in view.items_by_key.values())


def test_find_selects_highlights_and_centres(view, resnet, qtbot):
    with qtbot.waitSignal(view.nodeClicked) as sig:
        hits = view.find("layer4.1.bn2")
    assert len(hits) == 5 and sig.args == [hits[0]] and resnet.selected == hits[0]
    marked = {k for k, i in view.items_by_key.items() if i.match}
    assert marked == set(hits)
    assert [k for k, i in view.items_by_key.items() if i.selected] == [hits[0]]
    item = view.items_by_key[hits[0]]
    centre = view.mapFromScene(item.rect.center())
    assert view.viewport().rect().contains(centre)
    assert abs(centre.x() - view.viewport().width() / 2) < 40
    assert view.next_match() == hits[1] and resnet.selected == hits[1]
    view.find("")
    assert not any(i.match for i in view.items_by_key.values())


def test_collapse_expand_by_api_double_click_and_context_menu(view, resnet, qtbot):
    from PySide6.QtCore import Qt
    conv = _key(resnet.graph, name="layer1.0.conv1.weight")
    texts = [t for t, _ in view.context_actions(conv)]
    assert texts == ["Collapse layer1.0.conv1", "Collapse layer1.0", "Collapse layer1"]
    with qtbot.waitSignal(view.collapsedChanged):
        dict(view.context_actions(conv))["Collapse layer1.0"]()
    assert "m:layer1.0" in view.items_by_key and conv not in view.items_by_key
    assert view.item_for(conv) is view.items_by_key["m:layer1.0"]
    assert [t for t, _ in view.context_actions("m:layer1.0")] == ["Expand layer1.0", "Expand all"]
    # the search still finds what is inside a box, and highlights the box
    view.find("layer1.0.conv1.weight")
    assert view.items_by_key["m:layer1.0"].match and view.items_by_key["m:layer1.0"].selected
    box = view.items_by_key["m:layer1.0"]
    view.centerOn(box)
    pos = view.mapFromScene(box.rect.center())
    qtbot.mouseDClick(view.viewport(), Qt.LeftButton, pos=pos)
    assert view.model.collapsed == frozenset() and conv in view.items_by_key
    view.set_collapsed(["layer2", "layer3"])
    assert {"m:layer2", "m:layer3"} <= set(view.items_by_key)
    assert len(view.items_by_key) == resnet.graph.number_of_nodes() - 46 - 46 + 2


def test_text_is_left_out_when_zoomed_out(qapp):
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtWidgets import QGraphicsScene
    from gradviz.ui.graph_view import NodeItem

    def dark_pixels(scale):
        scene = QGraphicsScene()
        scene.addItem(NodeItem("n1", "PowBackward0", "grad_fn", QRectF(0, 0, 120, 40)))
        img = QImage(int(140 * scale), int(60 * scale), QImage.Format_ARGB32)
        img.fill(QColor("#ffffff"))
        p = QPainter(img)
        scene.render(p, QRectF(0, 0, img.width(), img.height()), QRectF(-10, -10, 140, 60), Qt.IgnoreAspectRatio)
        p.end()
        # inside the box, away from its border: only the fill (lightness ~230) or text
        x0, y0, x1, y1 = (int(round(c * scale)) for c in (10 + 4, 10 + 4, 130 - 4, 50 - 4))
        a = np.array([[QColor(img.pixel(x, y)).lightness() for x in range(x0, x1)] for y in range(y0, y1)])
        return int((a < 200).sum())

    assert dark_pixels(1.0) > 40 and dark_pixels(0.45) > 5 and dark_pixels(0.3) == 0


# -- export without a window ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "seed.gvz"
    assert cli.main(["record", "--demo", "seed", "-o", str(path)]) == 0
    return path


def test_export_svg_is_xml_with_the_ops_and_grads(seed_file, tmp_path):
    out = tmp_path / "seed.svg"
    assert cli.main(["export", str(seed_file), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")
    assert text.count("PowBackward0") == 2 and "SubBackward0" in text
    assert ".grad = [36, 81]" in text and "‖g‖=4.24" in text


def test_export_png_is_a_picture(seed_file, tmp_path):
    from PySide6.QtGui import QImage
    out = tmp_path / "seed.png"
    assert cli.main(["export", str(seed_file), "-o", str(out)]) == 0
    img = QImage(str(out))
    assert not img.isNull() and img.width() > 200 and img.height() > 300
    colours = {img.pixel(x, y) for x in range(0, img.width(), 3) for y in range(0, img.height(), 3)}
    assert len(colours) > 20  # background, fills, borders, text, edges (and their antialiasing)


def test_export_refuses_other_suffixes(seed_file, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "seed.pdf"
    assert cli.main(["export", str(seed_file), "-o", str(out)]) == 2
    assert "cannot write .pdf; use OUT.dot, OUT.svg or OUT.png" in capsys.readouterr().err
    assert not out.exists()


def test_render_graph_collapses_modules(resnet, tmp_path):
    from gradviz.ui.export import render_graph
    out = tmp_path / "resnet.svg"
    n = render_graph(resnet.trace, out, collapsed=["layer1.0"])
    assert n == resnet.graph.number_of_nodes() - 19 + 1
    text = out.read_text()
    assert "19 nodes" in text and "layer1.0.conv1.weight" not in text and "layer1.1.conv1.weight" in text


def test_the_qt_binding_keeps_its_references_to_none():
    """PySide6-Essentials 6.12.0 drops a reference to None on every void call, so on Python < 3.12
    one repaint of a big graph aborts the process ("none_dealloc"); pyproject.toml keeps it below
    6.12. This guards the installed binding. In a child process, since the failure is an abort."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from PySide6.QtCore import QPointF\n"
            "p = QPointF()\n"
            "before = sys.getrefcount(None)\n"
            "for _ in range(2_000): p.setX(1.0)\n"
            "print(before - sys.getrefcount(None))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]
    assert abs(int(r.stdout)) < 100, f"{r.stdout.strip()} references to None lost in 2,000 calls"


def test_collapsing_a_large_graph_lays_it_out_off_the_gui_thread():
    """Over INLINE_LAYOUT_NODES nodes, drawing() answers at once with the last drawing while a
    worker lays the collapsed graph out; take_ready() then hands the boxes over."""
    import gradviz
    import gradviz.engine as torch
    from gradviz.app.layouts import INLINE_LAYOUT_NODES
    from gradviz.app.state import AppState
    from gradviz.engine import nn
    blocks = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(60)])
    with gradviz.record(values="summaries") as rec:
        blocks(torch.randn(2, 4)).sum().backward()
    st = AppState(trace=rec.trace)
    st.poll()
    st.wait_layout()
    assert st.graph.number_of_nodes() > INLINE_LAYOUT_NODES
    model = st.graph_model
    whole = model.drawing()
    assert model.set_collapsed({"3", "7"})
    assert model.drawing() is whole and model.laying_out  # the last drawing meanwhile
    assert model.take_ready(wait=120) is True and not model.laying_out
    d = model.drawing()
    assert set(d.members) == {"m:3", "m:7"} and d.graph.number_of_nodes() < whole.graph.number_of_nodes()
    assert set(d.layout.positions) == set(d.graph)
    assert model.take_ready() is False


def test_an_edge_label_sums_complex_gradients_as_complex():
    import warnings
    from gradviz import events as ev
    from gradviz.summary import summarize
    a = np.array([1j, 1j], np.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning: the imaginary parts dropped
        label = gm.grad_label([ev.Value(summarize(a), a), ev.Value(summarize(a), a)])
    assert label == "[2] · ‖g‖=2.83"
