"""Semantic zoom: module boxes, their gradient norms and the depth drawn at a zoom (core, no Qt), and
the graph view drawing them in place of the nodes when zoomed out."""
import math
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gradviz  # noqa: E402
from gradviz import demos  # noqa: E402
from gradviz.app import semantic as sm  # noqa: E402
from gradviz.app.graphmodel import collapse, node_scope  # noqa: E402
from gradviz.app.state import AppState  # noqa: E402
from gradviz.layout.layered import layout  # noqa: E402
from gradviz.trace.model import Trace  # noqa: E402

DEPTH1 = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]


@pytest.fixture(scope="module")
def resnet():
    """resnet18, one forward and backward, layer1.1 frozen: (trace, model, graph, layout)."""
    import gradviz.engine as torch
    from gradviz.engine import nn
    from gradviz.engine.models import resnet18

    with gradviz.record() as rec:
        torch.manual_seed(0)
        model = resnet18(weights=None)
        for p in model.layer1[1].parameters():
            p.requires_grad = False
        loss = nn.functional.cross_entropy(model(torch.rand(2, 3, 32, 32)), torch.tensor([3, 1]))
        loss.backward()
    g = rec.trace.iteration_graph(0)
    return rec.trace, model, g, layout(g)


def _grad_norm(model, scope):
    """The L2 norm of the .grad of every parameter of module ``scope``, from the model itself."""
    sq = [float(np.sum(p.grad.numpy().astype(np.float64) ** 2)) for name, p in model.named_parameters()
          if name.startswith(scope + ".") and p.grad is not None]
    return math.sqrt(sum(sq)) if sq else None


def test_depth_1_boxes_are_the_top_modules_with_their_node_counts(resnet):
    _, _, g, lay = resnet
    boxes = sm.module_boxes(g, lay.positions, lay.sizes, 1)
    assert list(boxes) == DEPTH1
    for scope, box in boxes.items():
        inside = [k for k, d in g.nodes(data=True) if node_scope(d) == scope or node_scope(d).startswith(scope + ".")]
        assert sorted(box.members) == sorted(inside) and box.count == len(inside), scope
    # a basic block: add + relu x2 + 2 x (conv + weight + AccumulateGrad) + 2 x (bn + 2 x (param + acc));
    # layer1.1 is frozen: its 6 parameters are drawn, without AccumulateGrad nodes
    assert boxes["layer1"].count == 19 + 13
    assert [boxes[s].count for s in ("layer2", "layer3", "layer4")] == [19 + 27] * 3  # + the downsample
    assert boxes["fc"].count == 6  # addmm, t, 2 x (param + AccumulateGrad)
    # the nodes at the top level (the view before fc, the loss) are in no box: drawn as nodes
    loose = sm.loose_nodes(g, lay.positions)
    assert {g.nodes[k]["op"] for k in loose} == {"ViewBackward0", "LogSoftmaxBackward0", "NllLossBackward0"}
    assert sum(b.count for b in boxes.values()) + len(loose) == g.number_of_nodes()


def test_box_rects_bound_their_members(resnet):
    _, _, g, lay = resnet
    for depth in (1, 2, 3):
        for box in sm.module_boxes(g, lay.positions, lay.sizes, depth).values():
            x0, y0, x1, y1 = box.rect
            for k in box.members:
                (x, y), (w, h) = lay.positions[k], lay.sizes[k]
                assert x0 <= x - w / 2 and x + w / 2 <= x1 and y0 <= y - h / 2 and y + h / 2 <= y1
            # tight: some member touches each side
            lefts = [lay.positions[k][0] - lay.sizes[k][0] / 2 for k in box.members]
            tops = [lay.positions[k][1] - lay.sizes[k][1] / 2 for k in box.members]
            assert min(lefts) == x0 and min(tops) == y0


def test_deeper_boxes_split_blocks_and_keep_shallow_modules(resnet):
    _, _, g, lay = resnet
    two = sm.module_boxes(g, lay.positions, lay.sizes, 2)
    assert list(two) == ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer1.1", "layer2.0", "layer2.1",
                         "layer3.0", "layer3.1", "layer4.0", "layer4.1", "avgpool", "fc"]
    assert two["layer1.0"].count == 19 and two["layer2.0"].count == 27
    assert two["fc"] == sm.module_boxes(g, lay.positions, lay.sizes, 1)["fc"]  # shallower: its own box
    assert sm.max_depth(g) == 4  # layer2.0.downsample.0
    assert sm.box_scope("layer2.0.downsample.0", 3) == "layer2.0.downsample" and sm.box_scope("", 2) == ""
    with pytest.raises(ValueError):
        sm.module_boxes(g, lay.positions, lay.sizes, 0)


def test_a_collapsed_module_counts_its_nodes(resnet):
    _, _, g, _ = resnet
    g2, members = collapse(g, ["layer1.0"])
    lay2 = layout(g2)
    boxes = sm.module_boxes(g2, lay2.positions, lay2.sizes, 1, members)
    assert boxes["layer1"].count == 32 and "m:layer1.0" in boxes["layer1"].members
    assert len(boxes["layer1"].members) == 14  # the box and layer1.1's 13 nodes


def test_grad_norms_are_the_parameters_grad_norms_after_backward(resnet):
    trace, model, g, lay = resnet
    boxes = sm.module_boxes(g, lay.positions, lay.sizes, 1)
    norms = sm.box_grad_norms(trace, boxes)
    assert set(norms) == set(DEPTH1)
    for scope in DEPTH1:
        want = _grad_norm(model, scope)
        if want is None:
            assert norms[scope] is None, scope
        else:
            assert norms[scope] == pytest.approx(want, rel=1e-4), scope
    assert norms["relu"] is None and norms["avgpool"] is None  # no parameters
    two = sm.module_boxes(g, lay.positions, lay.sizes, 2)
    norms2 = sm.box_grad_norms(trace, two, pass_index=0)
    assert norms2["layer1.1"] is None  # frozen: no .grad
    assert norms2["layer2.0"] == pytest.approx(_grad_norm(model, "layer2.0"), rel=1e-4)
    assert norms["layer2"] == pytest.approx(math.hypot(norms2["layer2.0"], norms2["layer2.1"]), rel=1e-9)


def test_grad_norms_are_none_before_backward_reaches_the_module(resnet):
    trace, model, g, lay = resnet
    boxes = sm.module_boxes(g, lay.positions, lay.sizes, 1)
    started = next(i for i, e in enumerate(trace.events) if type(e).__name__ == "BackwardStarted")
    before = Trace()
    before.extend(trace.events[:started])
    assert set(sm.box_grad_norms(before, boxes).values()) == {None}
    # mid-backward: fc's parameters have their .grad, the stem's not yet
    fc = {trace.tensor_by_name(n).id for n in ("fc.weight", "fc.bias")}
    at = max(i for i, e in enumerate(trace.events) if type(e).__name__ == "GradAccumulated" and e.tensor in fc)
    mid = Trace()
    mid.extend(trace.events[:at + 1])
    norms = sm.box_grad_norms(mid, boxes)
    assert norms["fc"] == pytest.approx(_grad_norm(model, "fc"), rel=1e-4)
    assert norms["conv1"] is None and norms["layer1"] is None
    assert sm.shown_pass(trace, 0) == -1 and sm.shown_pass(trace, 1) is None and sm.shown_pass(before, 0) is None


def test_choose_depth_follows_the_zoom(resnet):
    _, _, g, lay = resnet
    all_depths = sm.boxes_by_depth(g, lay.positions, lay.sizes)
    assert sorted(all_depths) == [1, 2, 3, 4]
    # depth 3 and 4 pile up (a block's relu spans the block; a bn's parameters sit beside others)
    assert sm.overlap(all_depths[1]) < 0.1 and sm.overlap(all_depths[3]) > sm.MAX_OVERLAP
    depths = sm.readable_depths(all_depths)
    assert sorted(depths) == [1, 2]
    h1, h2 = sm.median_height(depths[1]), sm.median_height(depths[2])
    assert h1 > h2 > 0
    # far: the top modules; from where depth 2's boxes are MIN_BOX_PX tall: the blocks; from
    # NODE_LABEL_SCALE on: the nodes (0)
    assert sm.choose_depth(depths, 0.001) == 1
    s2 = sm.MIN_BOX_PX / h2
    assert sm.choose_depth(depths, s2 * 0.99) == 1 and sm.choose_depth(depths, s2 * 1.01) == 2
    assert sm.choose_depth(depths, sm.NODE_LABEL_SCALE * 0.99) == 2
    assert sm.choose_depth(depths, sm.NODE_LABEL_SCALE) == 0 and sm.choose_depth(depths, 2.0) == 0
    assert sm.choose_depth({}, 0.01) == 0  # no modules: always the nodes
    # boxes taller than MAX_BOX_PX on screen are drawn framed over their nodes
    assert not sm.framed(depths[2], sm.MAX_BOX_PX / h2 * 0.99) and sm.framed(depths[2], sm.MAX_BOX_PX / h2 * 1.01)
    assert sm.format_norm(None) == "" and sm.format_norm(12.3) == "|grad| 12" and sm.format_norm(1.23e-3) == \
        "|grad| 1.2e-03"


def test_a_graph_without_modules_has_no_boxes():
    with gradviz.record() as rec:
        demos.run("seed")
    g = rec.trace.iteration_graph(0)
    lay = layout(g)
    assert sm.max_depth(g) == 0 and sm.boxes_by_depth(g, lay.positions, lay.sizes) == {}
    assert sorted(sm.loose_nodes(g, lay.positions)) == sorted(g.nodes)


# -- the view ---------------------------------------------------------------------------------------
@pytest.fixture
def view(qtbot, resnet):
    from gradviz.ui.graph_view import GraphView
    state = AppState(trace=resnet[0])
    state.poll()
    state.wait_layout()
    state.poll()
    v = GraphView(state)
    qtbot.addWidget(v)
    v.resize(800, 600)
    v.show()
    v.rebuild()
    return v


def test_far_zoom_draws_module_boxes_and_scale_1_the_nodes(view, qtbot):
    from PySide6.QtCore import Qt
    v = view
    clicked = []
    v.nodeClicked.connect(clicked.append)
    assert v.modules is not None
    v.fit()
    assert v.transform().m11() < sm.NODE_LABEL_SCALE
    assert v.modules.isVisible() and not v.modules.framed
    assert not any(i.isVisible() for i in v.items_by_key.values())
    assert not any(e.isVisible() for e in v.edges_by_key.values())
    assert set(v.modules.boxes()) >= {"conv1", "fc"}
    # the norms of the pass shown, captioned
    box = v.modules.boxes()["fc"]
    caption = v.modules.caption(box)
    assert caption[:2] == ["fc", "6 nodes"] and caption[2].startswith("|grad| ")
    assert v.modules.caption(v.modules.boxes()["relu"]) == ["relu", "1 node"]
    # a click picks no node
    centre = v.mapFromScene((box.rect[0] + box.rect[2]) / 2, (box.rect[1] + box.rect[3]) / 2)
    qtbot.mouseClick(v.viewport(), Qt.LeftButton, pos=centre)
    assert clicked == []
    v.resetTransform()  # 1:1: the nodes
    assert not v.modules.isVisible()
    assert all(i.isVisible() for i in v.items_by_key.values())
    # zoomed in so far that the boxes would be mostly empty: the nodes, with the boxes framed over them
    depths = v.modules.depths
    s = (sm.MAX_BOX_PX / sm.median_height(depths[max(depths)]) + sm.NODE_LABEL_SCALE) / 2
    v.resetTransform()
    v.scale(s, s)
    assert v.modules.isVisible() and v.modules.framed
    assert all(i.isVisible() for i in v.items_by_key.values())
    # and a click on a node under a frame picks it
    key = next(iter(depths[max(depths)]["layer2.0"].members))
    v.centerOn(v.items_by_key[key].rect.center())
    qtbot.mouseClick(v.viewport(), Qt.LeftButton, pos=v.mapFromScene(v.items_by_key[key].rect.center()))
    assert clicked == [key]


def test_double_click_on_a_box_zooms_into_its_nodes(view, qtbot):
    from PySide6.QtCore import QPointF, Qt
    v = view
    v.fit()
    depth = v.modules.depth
    box = v.modules.boxes()["layer2" if depth == 1 else "layer2.0"]
    at = QPointF((box.rect[0] + box.rect[2]) / 2, (box.rect[1] + box.rect[3]) / 2)
    assert v.modules.box_at(at) is box
    qtbot.mouseDClick(v.viewport(), Qt.LeftButton, pos=v.mapFromScene(at))
    assert v.transform().m11() >= sm.NODE_LABEL_SCALE
    assert not v.modules.isVisible() and v.user_moved
    seen = v.mapToScene(v.viewport().rect()).boundingRect()
    inside = [k for k in box.members if seen.contains(v.items_by_key[k].rect.center())]
    assert inside and all(v.items_by_key[k].isVisible() for k in inside)


def test_the_box_of_the_paused_node_is_highlighted(view, resnet):
    v = view
    trace = resnet[0]
    layer3 = set(v.modules.depths[1]["layer3"].keys)
    # back in time to a moment the backward pass was at a node of layer3
    at = next(i for i, e in enumerate(trace.events)
              if type(e).__name__ == "NodeEntered" and f"n{e.node}" in layer3)
    v.state.set_time(at + 1)
    v.refresh()
    assert v.state.current in layer3 and v.modules.current == v.state.current
    assert v.modules.owner(v.state.current, 1) == "layer3"
    # backward has not reached layer1 yet: no norm; fc's is known
    assert v.modules.norms[1, "layer1"] is None and v.modules.norms[1, "fc"] is not None


def test_a_graph_without_modules_keeps_its_drawing(qtbot):
    from gradviz.ui.graph_view import GraphView
    with gradviz.record() as rec:
        demos.run("seed")
    state = AppState(trace=rec.trace)
    state.poll()
    v = GraphView(state)
    qtbot.addWidget(v)
    v.rebuild()
    assert v.modules is None
    v.resetTransform()
    v.scale(0.2, 0.2)
    assert all(i.isVisible() for i in v.items_by_key.values())
