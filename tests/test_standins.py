"""Shared leaves drawn by stand-ins in the app: a weight reused by every step of an unrolled RNN
is drawn as a small copy next to each use, and each copy's edge carries that use's share of the
gradient (core: the graph model and the layout; Qt: the view's stand-in items)."""
import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gradviz  # noqa: E402
import gradviz.engine as torch  # noqa: E402
from gradviz.app import graphmodel as gm  # noqa: E402
from gradviz.app.labels import standin_name  # noqa: E402
from gradviz.app.state import AppState  # noqa: E402

STEPS = 12


def _gru(steps=STEPS, hidden=4):
    torch.manual_seed(0)
    wz, wh = (torch.randn(2 * hidden, hidden, requires_grad=True) for _ in range(2))
    gradviz.name(wz, "cell.Wz")
    gradviz.name(wh, "cell.Wh")
    h = torch.zeros(1, hidden)
    for _ in range(steps):
        xh = torch.cat([torch.randn(1, hidden), h], dim=1)
        z = (xh @ wz).sigmoid()
        h = (1 - z) * h + z * (xh @ wh).tanh()
    h.sum().backward()
    return wz, wh


@pytest.fixture(scope="module")
def gru():
    with gradviz.record() as rec:
        weights = _gru()
    st = AppState(trace=rec.trace)
    st.poll()
    st.wait_layout()
    return st, weights


def _acc_of(st, name):
    g = st.graph
    leaf = next(k for k, d in g.nodes(data=True) if d.get("name") == name)
    return next(iter(g.predecessors(leaf))), leaf


def test_a_weight_used_at_every_step_is_drawn_by_stand_ins_next_to_its_uses(gru):
    st, _ = gru
    lay = st.layout
    for name in ("cell.Wz", "cell.Wh"):
        acc, _ = _acc_of(st, name)
        uses = list(st.graph.predecessors(acc))
        assert len(uses) == STEPS
        mine = {k: xy for k, xy in lay.standins.items() if k[0] == acc}
        assert len(mine) == STEPS - 1  # every use but the anchor's
        anchors = [u for u in uses if (u, acc) not in lay.standin_of]
        assert len(anchors) == 1
        for (_, u), (x, y) in mine.items():
            assert lay.standin_of[u, acc] == (acc, u)
            assert abs(lay.standin_layers[acc, u] - lay.layers[u]) == 1  # right next to its use
            assert lay.edges[u, acc][-1] == pytest.approx((x, y))  # the edge ends at the stand-in
        assert standin_name(st.graph, st.labels, acc) == name


def test_stand_in_edges_carry_each_use_s_share_and_the_shares_sum_to_the_grad(gru):
    st, (wz, wh) = gru
    grads = gm.edge_gradients(st.trace, st.graph)
    labels = gm.edge_labels(st.trace, st.graph)
    for name, w in (("cell.Wz", wz), ("cell.Wh", wh)):
        acc, leaf = _acc_of(st, name)
        shares = [grads[u, acc] for u in st.graph.predecessors(acc)]
        assert all(len(s) == 1 and s[0].array is not None for s in shares)
        total = np.sum([s[0].array for s in shares], axis=0)
        np.testing.assert_allclose(total, w.grad.numpy(), rtol=1e-5, atol=1e-7)
        # no two uses carry the same share (each step's contribution is its own)
        norms = [s[0].summary.l2 for s in shares]
        assert len(set(np.round(norms, 12))) == len(norms)
        for u in st.graph.predecessors(acc):
            assert labels[u, acc].startswith("[8,4] · ‖g‖=")
        # the leaf's own edge carries the whole of .grad
        np.testing.assert_allclose(grads[acc, leaf][0].array, w.grad.numpy(), rtol=1e-6)


def test_uses_close_together_keep_their_real_edges():
    with gradviz.record() as rec:
        x = torch.ones(3, requires_grad=True)
        ((x * 2) + x).sum().backward()
    st = AppState(trace=rec.trace)
    st.poll()
    assert st.layout.standins == {} and st.layout.standin_of == {}


def test_the_view_draws_stand_ins_and_lights_them_up_with_their_leaf(gru, qtbot):
    from PySide6.QtCore import Qt

    from gradviz.ui.graph_view import GraphView, StandinItem
    st, _ = gru
    view = GraphView(st)
    qtbot.addWidget(view)
    view.rebuild()
    acc, leaf = _acc_of(st, "cell.Wh")
    items = [it for it in view.items_by_key.values() if isinstance(it, StandinItem) and it.key == acc]
    assert len(items) == STEPS - 1
    assert {it.label for it in items} == {"cell.Wh"}
    assert not any(it.selected for it in items)
    for selected in (acc, leaf):  # the AccumulateGrad or the parameter itself
        st.select(selected)
        view.refresh()
        assert all(it.selected for it in items)
        others = [it for it in view.items_by_key.values() if isinstance(it, StandinItem) and it.key != acc]
        assert others and not any(it.selected for it in others)
    # a stand-in's edge carries the use's share, labelled on the edge into the stand-in
    it = items[0]
    edge = view.edges_by_key[it.use, acc]
    assert edge.carried and edge.label == gm.edge_labels(st.trace, st.graph)[it.use, acc]
    # clicking a stand-in selects the node it stands for
    clicked = []
    view.nodeClicked.connect(clicked.append)
    view.resetTransform()
    view.centerOn(it.rect.center())
    qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=view.mapFromScene(it.rect.center()))
    assert clicked == [acc]
