"""``GraphView``: the autograd graph, laid out by the core, drawn with QGraphicsScene.

Node styles tell the kinds apart (grad_fn, AccumulateGrad, parameter, frozen parameter, input, the
root, a collapsed module); the node about to run is highlighted, the nodes already run are marked
with the step they ran at, an edge that carried a gradient shows its shape and norm, a leaf shows
its ``.grad``. What is collapsed and what a search found live in a ``GraphModel`` (core); the
scene is built by ``build_scene`` / ``paint_state``, which the windowless export uses too.

Big graphs (a 60-layer transformer: 5,279 nodes) stay smooth: one item per node and one per edge
(its arrow head included), nodes cached as device pixmaps, text skipped when zoomed out."""

from contextlib import nullcontext

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen,
                           QPolygonF, QTransform)
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene, QGraphicsView, QMenu

from gradviz.app.follow import Follow, contains, focus_rect, neighbour_boxes, target_scale
from gradviz.app.follow import legible_scale as _legible_scale
from gradviz.app.graphmodel import GraphModel, enclosing_scopes, node_scope
from gradviz.app.labels import LEAF_KINDS, standin_name
from gradviz.app.semantic import NODE_LABEL_SCALE
from gradviz.ui.module_overlay import make_overlay



FILL = {
    "grad_fn": QColor("#dbe8f7"),
    "accumulate_grad": QColor("#ececec"),
    "parameter": QColor("#cde8c4"),
    "leaf": QColor("#cde8c4"),
    "frozen": QColor("#f6f6f6"),
    "input": QColor("#fdf1c7"),
    "module": QColor("#eadcf5"),
}
BORDER = {"frozen": QColor("#a8a8a8"), "module": QColor("#7d5a9e"), "input": QColor("#b8962e")}
CURRENT = QColor("#ffb347")
CHECK_FAIL, CHECK_FAIL_BORDER, CHECK_OK = QColor("#f6b3ab"), QColor("#c0392b"), QColor("#2a8a3a")  # gradient checks
RAN = QColor("#2f6fb8")  # the border of a node that ran (its fill keeps its kind, a bit darker)
SELECTED_PEN = QPen(QColor("#1f4e9c"), 2.5)
MATCH_PEN = QPen(QColor("#f0b400"), 4.0)
EDGE, EDGE_CARRIED, EDGE_NO_GRAD = QColor("#9a9a9a"), QColor("#3d78c2"), QColor("#c8c8c8")
BACKWARD = ("grad_fn", "accumulate_grad")
LEAVES = ("parameter", "leaf", "frozen", "input")
FAR_LOD = 0.15   # below this zoom, boxes are plain blocks and edges hairlines
# Semantic zoom: below NODE_LABEL_SCALE (0.7: node labels no longer legible), a graph with module
# scopes is drawn as its modules' boxes (ui/module_overlay.py; the depth follows the zoom).
OVERVIEW_NODES = 300  # above this many items, far zoom draws one overview item instead
TEXT_LOD = 0.4   # below this zoom, boxes are drawn without their text
EDGE_TEXT_LOD = 0.7
FONT = QFont("DejaVu Sans", 9)
SMALL = QFont("DejaVu Sans", 7)


class NodeItem(QGraphicsItem):
    def __init__(self, key, label, kind, rect):
        super().__init__()
        self.key, self.label, self.kind, self.rect = key, label, kind, rect
        self.fill = FILL.get(kind, QColor("#ffffff"))
        self.selected = self.match = self.root = self.ran = False
        self.step = None     # the step of the pass this node ran at
        self.check = None    # its gradient check: "fail" (drawn red), "ok" (a tick), else None
        self.caption = None  # a leaf's .grad, drawn under the box
        self._caption_rect = QRectF()
        self.border = None  # a diagnosis's or a diff's border colour (gradviz.app.diagnosis.Overlay)
        self.badge = None   # (text, QColor) drawn over the box's top right corner
        self.setZValue(1)

    def set_caption(self, text):
        if text == self.caption:
            return
        self.prepareGeometryChange()
        self.caption = text
        if text:
            w = QFontMetricsF(SMALL).horizontalAdvance(text) + 6
            r = self.rect
            self._caption_rect = QRectF(r.center().x() - w / 2, r.bottom() + 1, w, 12)
        else:
            self._caption_rect = QRectF()

    def boundingRect(self):
        r = self.rect.adjusted(-9, -9, 12, 6)
        if self.badge:
            r = r.united(self._badge_rect())
        return r.united(self._caption_rect) if self.caption else r

    def _badge_rect(self):
        w = QFontMetricsF(SMALL).horizontalAdvance(self.badge[0]) + 8
        return QRectF(self.rect.right() - w + 10, self.rect.top() - 9, w, 14)

    def set_overlay(self, fill, border, badge):
        """A diagnosis's or a diff's marks: fill and border colours (or None), a badge (text, colour)."""
        if fill is not None:
            self.fill = fill
        if badge != self.badge:
            self.prepareGeometryChange()
        self.border, self.badge = border, badge

    def paint(self, painter, option, widget=None):
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        r, kind = self.rect, self.kind
        if lod < FAR_LOD:  # a few pixels: a plain block (a match or the selection stands out)
            painter.fillRect(r, MATCH_PEN.color() if self.match or self.selected else self.fill)
            return
        if self.match:
            painter.setPen(MATCH_PEN)
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(r.adjusted(-4, -4, 4, 4), 8, 8)
        if kind == "module":  # a stack of boxes: this stands for many nodes
            painter.setPen(QPen(BORDER["module"], 1.0))
            painter.setBrush(QBrush(self.fill.darker(108)))
            painter.drawRoundedRect(r.translated(4, 4), 6, 6)
        painter.setBrush(QBrush(CHECK_FAIL if self.check == "fail" and self.fill != CURRENT else self.fill))
        if self.selected:
            pen = SELECTED_PEN
        elif self.check == "fail":
            pen = QPen(CHECK_FAIL_BORDER, 2.6)
        elif self.border is not None:
            pen = QPen(self.border, 3.0)
        elif self.root:
            pen = QPen(QColor("#202020"), 2.6)
        elif self.ran:
            pen = QPen(RAN, 1.6)
        else:
            pen = QPen(BORDER.get(kind, QColor("#7a7a7a")), 1.5 if kind == "module" else 1.0,
                       Qt.DashLine if kind == "frozen" else Qt.DotLine if kind == "input" else Qt.SolidLine)
        painter.setPen(pen)
        if kind in ("parameter", "leaf", "frozen", "input"):
            painter.drawRect(r)  # tensors square, backward nodes rounded (as torchviz)
        else:
            painter.drawRoundedRect(r, 6, 6)
        if lod < TEXT_LOD:
            return
        painter.setFont(FONT)
        painter.setPen(QColor("#9a9a9a") if kind == "frozen" else QColor("#202020"))
        painter.drawText(r, Qt.AlignCenter, self.label)
        if self.step is not None:
            text = str(self.step)
            w = max(16.0, 7.0 * len(text) + 4)
            badge = QRectF(r.left() - 8, r.top() - 8, w, 16)
            painter.setPen(Qt.NoPen)
            painter.setBrush(RAN)
            painter.drawRoundedRect(badge, 8, 8)
            painter.setFont(SMALL)
            painter.setPen(QColor("#ffffff"))
            painter.drawText(badge, Qt.AlignCenter, text)
        if self.check in ("ok", "fail"):  # a tick or a cross at the top right corner
            badge = QRectF(r.right() - 8, r.top() - 8, 16, 16)
            painter.setPen(Qt.NoPen)
            painter.setBrush(CHECK_OK if self.check == "ok" else CHECK_FAIL_BORDER)
            painter.drawEllipse(badge)
            painter.setFont(SMALL)
            painter.setPen(QColor("#ffffff"))
            painter.drawText(badge, Qt.AlignCenter, "✓" if self.check == "ok" else "✗")
        if self.badge:
            mark = self._badge_rect()
            if self.check in ("ok", "fail"):  # beside the check's mark, not over it
                mark.translate(-20, 0)
            painter.setPen(QPen(self.badge[1], 1.0))
            painter.setBrush(QColor(255, 255, 255, 235))
            painter.drawRoundedRect(mark, 4, 4)
            painter.setFont(SMALL)
            painter.drawText(mark, Qt.AlignCenter, self.badge[0])
        if self.caption:
            painter.setPen(Qt.NoPen)
            painter.setBrush(QColor(255, 255, 255, 225))
            painter.drawRect(self._caption_rect)
            painter.setFont(SMALL)
            bad = "nan" in self.caption or "inf" in self.caption
            painter.setPen(QColor("#c0392b") if bad else QColor("#2a6f2a") if "(pass" not in self.caption
                           else QColor("#888888"))
            painter.drawText(self._caption_rect, Qt.AlignCenter, self.caption)


class StandinItem(NodeItem):
    """A small copy of a shared leaf (its AccumulateGrad) drawn next to one of its uses, so that a
    weight reused far apart in the graph needs no long edge. Its ``key`` is the shared node's:
    clicking it selects that node, and selecting either lights up every stand-in of it. The
    edge into it carries that use's share of the leaf's gradient."""

    def __init__(self, shared, use, name, kind, rect):
        super().__init__(shared, name, kind, rect)
        self.use = use

    def paint(self, painter, option, widget=None):
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        r = self.rect
        if lod < FAR_LOD:
            painter.fillRect(r, MATCH_PEN.color() if self.match or self.selected else self.fill)
            return
        painter.setBrush(QBrush(self.fill))
        painter.setPen(SELECTED_PEN if self.selected else QPen(RAN, 1.4) if self.ran
                       else QPen(QColor("#6f8f66"), 1.0, Qt.DashLine))
        painter.drawRect(r)
        if lod >= TEXT_LOD:
            painter.setFont(SMALL)
            painter.setPen(QColor("#202020"))
            painter.drawText(r, Qt.AlignCenter, self.label)


def _clip_to_box(a, c, w, h):
    """Where the segment from ``a`` to the centre ``c`` of a w x h box enters the box."""
    dx, dy = a[0] - c[0], a[1] - c[1]
    s = min(w / 2 / abs(dx) if dx else float("inf"), h / 2 / abs(dy) if dy else float("inf"), 1.0)
    return QPointF(c[0] + s * dx, c[1] + s * dy)


class EdgeItem(QGraphicsItem):
    """An edge: its polyline and arrow head in one item, and the gradient it carried, if any."""

    def __init__(self, key, points, target_size, carries_grad):
        super().__init__()
        self.key = key
        self.carries_grad = carries_grad
        self.carried = False
        self.label = None
        self.label_rect = QRectF()
        self.colour = None  # a diagnosis's or a diff's colour (gradviz.app.diagnosis.Overlay)
        tip = _clip_to_box(points[-2], points[-1], *target_size)
        self.line = QPainterPath(QPointF(*points[0]))
        for p in points[1:-1]:
            self.line.lineTo(QPointF(*p))
        self.line.lineTo(tip)
        (x0, y0), x1, y1 = points[-2], tip.x(), tip.y()
        n = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-6)
        ux, uy = (x1 - x0) / n, (y1 - y0) / n
        self.arrow = QPolygonF([tip, QPointF(x1 - 8 * ux + 4 * uy, y1 - 8 * uy - 4 * ux),
                                QPointF(x1 - 8 * ux - 4 * uy, y1 - 8 * uy + 4 * ux)])
        # A label sits on the edge's last stretch, where the edges leaving one node have spread
        # out, 20 px above the arrow; the labels into one layer share a row (``row``).
        dy = y1 - y0
        t = min(20.0, abs(dy) / 2) / abs(dy) if abs(dy) > 1 else 0.5
        self.anchor = QPointF(x1 - t * (x1 - x0), y1 - t * dy)
        self.row = round(points[-1][1])
        self._bounds = self.line.boundingRect().united(self.arrow.boundingRect()).adjusted(-2, -2, 2, 2)

    def set_gradient(self, carried, label=None, rect=None):
        """Mark the edge as having carried a gradient; ``label`` is drawn in ``rect``."""
        rect = QRectF() if rect is None or not label else rect
        if carried == self.carried and label == self.label and rect == self.label_rect:
            return
        self.prepareGeometryChange()
        self.carried, self.label, self.label_rect = carried, label, rect
        self.setZValue(0.5 if label else 0)  # a label stays above the plain edges it crosses
        self.update()

    def boundingRect(self):
        return self._bounds.united(self.label_rect) if self.label else self._bounds

    def paint(self, painter, option, widget=None):
        carried = self.carried
        colour = self.colour or (EDGE_CARRIED if carried else EDGE if self.carries_grad else EDGE_NO_GRAD)
        lod = option.levelOfDetailFromTransform(painter.worldTransform())
        if lod < FAR_LOD:  # a hairline, no arrow head
            painter.setPen(QPen(colour, 0))
            painter.drawPath(self.line)
            return
        width = 3.0 if self.colour is not None else 1.6 if carried else 1.1
        painter.setPen(QPen(colour, width, Qt.SolidLine if self.carries_grad else Qt.DashLine))
        painter.setBrush(Qt.NoBrush)
        painter.drawPath(self.line)
        painter.setPen(Qt.NoPen)
        painter.setBrush(colour)
        painter.drawPolygon(self.arrow)
        if self.label and lod >= EDGE_TEXT_LOD:
            painter.setBrush(QColor(255, 255, 255, 225))
            painter.drawRoundedRect(self.label_rect, 3, 3)
            bad = "nan" in self.label or "inf" in self.label
            painter.setFont(SMALL)
            painter.setPen(QColor("#c0392b") if bad else QColor("#24548f"))
            painter.drawText(self.label_rect, Qt.AlignCenter, self.label)


class OverviewItem(QGraphicsItem):
    """The whole graph in a few paint calls, drawn in place of its items when zoomed out below
    ``FAR_LOD`` (boxes a few pixels wide): one hairline path for the edges, one ``drawRects`` per
    colour for the boxes. Painting 10,000 items one by one is what made a zoomed-out 5,000-node
    graph slow; this is one item."""

    def __init__(self, nodes, edges):
        super().__init__()
        self.nodes = nodes
        path = QPainterPath()
        for e in edges.values():
            path.addPath(e.line)
        self.edge_path = path
        self._bounds = path.boundingRect().united(
            QRectF() if not nodes else _united(n.rect for n in nodes.values())).adjusted(-4, -4, 4, 4)
        self._groups = None
        self.setZValue(3)

    def invalidate(self):
        """The nodes' colours changed (a step, a selection): regroup at the next paint."""
        self._groups = None
        self.update()

    def boundingRect(self):
        return self._bounds

    def paint(self, painter, option, widget=None):
        if self._groups is None:
            groups = {}
            for n in self.nodes.values():
                colour = MATCH_PEN.color() if n.match or n.selected else n.fill
                groups.setdefault(colour.rgba(), (colour, []))[1].append(n.rect)
            self._groups = list(groups.values())
        painter.setRenderHint(QPainter.Antialiasing, False)
        painter.setPen(QPen(EDGE, 0))
        painter.setBrush(Qt.NoBrush)
        painter.drawPath(self.edge_path)
        painter.setPen(Qt.NoPen)
        for colour, rects in self._groups:
            painter.setBrush(colour)
            painter.drawRects(rects)


def _united(rects):
    it = iter(rects)
    r = QRectF(next(it))
    for x in it:
        r = r.united(x)
    return r


def _label_rects(items_texts):
    """A rect for each edge label, centred on its edge's anchor; labels in one row (the same
    gap between layers) are pushed apart so that none covers another."""
    fm = QFontMetricsF(SMALL)
    rows = {}
    for item, text in items_texts:
        w = fm.horizontalAdvance(text) + 6
        rows.setdefault(item.row, []).append([item.anchor.x() - w / 2, w, item])
    out = {}
    for row in rows.values():
        y = min(r[2].anchor.y() for r in row)
        row.sort(key=lambda r: r[0])
        lefts = [r[0] for r in row]
        for i in range(1, len(row)):  # push right, then centre each run of pushed labels
            row[i][0] = max(row[i][0], row[i - 1][0] + row[i - 1][1] + 4)
        start = 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i][0] > row[i - 1][0] + row[i - 1][1] + 4:
                shift = sum(row[j][0] - lefts[j] for j in range(start, i)) / (i - start)
                for j in range(start, i):
                    row[j][0] -= shift
                start = i
        for left, w, item in row:
            out[item] = QRectF(left, y - 6, w, 12)
    return out


def build_scene(scene, model, cache=True):
    """Fill ``scene`` with the model's drawing; returns (items by node key, edge items by edge)."""
    scene.clear()
    drawing = model.drawing()
    lay, g = drawing.layout, drawing.graph
    nodes, edges = {}, {}
    if lay is None:
        return nodes, edges
    standin_of = lay.standin_of
    for (u, v), points in lay.edges.items():
        target = lay.standin_size if standin_of.get((u, v), (None,))[0] == v else lay.sizes[v]
        item = EdgeItem((u, v), points, target, g.edges[u, v].get("grad", True))
        scene.addItem(item)
        edges[u, v] = item
    sw, sh = lay.standin_size
    for (shared, use), (x, y) in lay.standins.items():
        leaf_kind = next((g.nodes[n].get("kind") for n in (*g.successors(shared), *g.predecessors(shared))
                          if g.nodes[n].get("kind") in LEAF_KINDS), "parameter")
        item = StandinItem(shared, use, standin_name(g, drawing.labels, shared), leaf_kind,
                           QRectF(x - sw / 2, y - sh / 2, sw, sh))
        if cache:
            item.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        scene.addItem(item)
        nodes[shared, use] = item  # a tuple key: a stand-in, never a graph node's own key
    for key, (x, y) in lay.positions.items():
        w, h = lay.sizes[key]
        item = NodeItem(key, drawing.labels.get(key, key), g.nodes[key].get("kind", ""),
                        QRectF(x - w / 2, y - h / 2, w, h))
        if cache:
            item.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        scene.addItem(item)
        nodes[key] = item
    scene.setSceneRect(scene.itemsBoundingRect().adjusted(-40, -40, 40, 40))
    return nodes, edges


def paint_state(nodes, edges, model):
    """Colour the items for where the debugger stands, the selection, the search and the
    gradients the last pass carried (no relayout)."""
    st = model.state
    drawing = model.drawing()
    current, ran, selected = st.current, st.ran(), st.selected
    checks = getattr(st, "checks", None)
    steps = {}
    if ran and st.trace.passes:
        for i, nid in enumerate(st.trace.passes[-1].order, 1):
            steps[f"n{nid}"] = i
    roots = {drawing.drawn_key(k) for k in model.roots()}
    matches = {drawing.drawn_key(k) for k in model.matches}
    grads = model.leaf_grads()
    # A selected leaf lights up the stand-ins of its AccumulateGrad too.
    lit = set()
    g = drawing.graph
    if selected:
        lit.add(drawing.drawn_key(selected))
        if selected in g and g.nodes[selected].get("kind") in LEAVES:
            lit.update(n for n in (*g.predecessors(selected), *g.successors(selected))
                       if g.nodes[n].get("kind") == "accumulate_grad")
    for key, item in nodes.items():
        if isinstance(item, StandinItem):  # lit up with the shared node it stands for
            shared = item.key
            item.fill = CURRENT if shared == current else FILL.get(item.kind, QColor("#ffffff"))
            item.ran = shared in ran
            item.selected = shared in lit
            item.match = shared in matches
            item.update()
            continue
        members = drawing.members.get(key)
        if members is not None:
            is_current = current in members
            backward = [k for k in members if k in st.graph and st.graph.nodes[k].get("kind") in BACKWARD]
            has_run = bool(backward) and all(k in ran for k in backward)
            item.step = None
        else:
            is_current, has_run = key == current, key in ran
            item.step = steps.get(key) if has_run else None
        base = FILL.get(item.kind, QColor("#ffffff"))
        item.fill = CURRENT if is_current else base.darker(106) if has_run else base
        item.check = checks.verdict(key) if checks is not None and members is None else None
        item.ran = has_run
        item.selected = drawing.drawn_key(selected) == key if selected else False
        item.root, item.match = key in roots, key in matches
        item.set_caption(grads.get(key))
        item.update()
    labels = model.edge_labels()
    texts, state = [], {}
    for (u, v), item in edges.items():
        orig = drawing.graph.edges[u, v].get("orig", [(u, v)])
        carried = any(e in labels for e in orig)
        # one gradient per label; the edge into a leaf repeats what its .grad caption says
        text = labels.get(orig[0]) if len(orig) == 1 and drawing.graph.nodes[v].get("kind") not in LEAVES else None
        state[item] = carried, text
        if text:
            texts.append((item, text))
    rects = _label_rects(texts)
    for item, (carried, text) in state.items():
        item.set_gradient(carried, text, rects.get(item))
    _paint_overlay(nodes, edges, drawing, model.overlay())


def _paint_overlay(nodes, edges, drawing, overlay):
    """A diagnosis's or a diff's marks over the colours above (gradviz.app.diagnosis.Overlay); items
    without marks, before or now, are left alone (a large graph's refresh stays cheap)."""
    ov = overlay
    empty = ov is None or not (ov.fills or ov.borders or ov.badges or ov.edges)
    for key, item in nodes.items():
        if isinstance(item, StandinItem) or drawing.members.get(key) is not None:
            continue
        if empty and item.border is None and item.badge is None:
            continue
        fill = ov.fills.get(key) if ov is not None else None
        border = ov.borders.get(key) if ov is not None else None
        badge = ov.badges.get(key) if ov is not None else None
        item.set_overlay(QColor(fill) if fill and item.fill != CURRENT else None,
                         QColor(border) if border else None,
                         (badge[0], QColor(badge[1])) if badge else None)
        item.update()
    for (u, v), item in edges.items():
        colour = ov.edges.get((u, v)) if ov is not None else None
        colour = QColor(colour) if colour else None
        if colour != item.colour:
            item.colour = colour
            item.update()


class GraphView(QGraphicsView):
    nodeClicked = Signal(str)
    collapsedChanged = Signal()
    lineBreakpointAsked = Signal(str)  # "Breakpoint on its line" in a node's context menu
    diagnosed = Signal(str)  # a NaN or an explosion traced to its origin: what it found
    checkAsked = Signal(str)  # "Check this node" in a node's context menu (gradviz.app.checks)
    viewMoved = Signal()  # zoomed, fitted or brought to a node (the scroll bars say when it pans)

    def __init__(self, state, parent=None, model=None):
        super().__init__(parent)
        self.state = state
        self.model = model or getattr(state, "graph_model", None) or GraphModel(state)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.Antialiasing)
        self.setViewportUpdateMode(QGraphicsView.MinimalViewportUpdate)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setBackgroundBrush(QColor("#fcfcfc"))
        self.setCacheMode(QGraphicsView.CacheBackground)
        self.items_by_key = {}
        self.edges_by_key = {}
        self.overview = None  # drawn instead of the items when zoomed out far
        self.modules = None  # the module boxes drawn instead of the items when zoomed out (semantic zoom)
        self._far = False
        self._modules_shown = False  # module boxes drawn in place of the nodes
        self._frames = False  # module frames drawn over the nodes
        self.user_moved = False  # the user zoomed or panned: the window stops fitting the graph for them
        # ... and stops following the paused node (state.follow; the Follow switch brings it back)
        self.follow = getattr(state, "follow", None) or Follow()
        for bar in (self.horizontalScrollBar(), self.verticalScrollBar()):
            bar.actionTriggered.connect(lambda _action: self._user_move())  # the user's scroll bar or keys

    # -- drawing --
    def _lock(self):
        """The trace's lock (a live program's reader thread writes the passes painted here)."""
        return getattr(self.state, "lock", None) or nullcontext()

    def rebuild(self):
        """Draw the model's graph anew (called when the graph or what is collapsed changed)."""
        with self._lock():
            self.items_by_key, self.edges_by_key = build_scene(self.scene(), self.model)
        self.overview = None
        if len(self.items_by_key) > OVERVIEW_NODES:
            self.overview = OverviewItem(self.items_by_key, self.edges_by_key)
            self.scene().addItem(self.overview)
        self.modules = make_overlay(self.model.drawing(), self.items_by_key, self.edges_by_key)
        if self.modules is not None:
            self.scene().addItem(self.modules)
        self._far = self._modules_shown = self._frames = None
        self._update_far()
        self.refresh()

    def refresh(self):
        """Recolour for the debugger's position, the selection and the search (no relayout)."""
        with self._lock():
            paint_state(self.items_by_key, self.edges_by_key, self.model)
            if self.modules is not None:
                self.modules.set_state(self.model, self.items_by_key)
        if self.overview is not None:
            self.overview.invalidate()

    def _update_far(self):
        """Zoomed out below NODE_LABEL_SCALE, a graph with modules is drawn by its module boxes
        (at the depth the zoom allows); a large graph without them, below FAR_LOD, by its overview
        item alone."""
        scale = self.transform().m11()
        depth = self.modules.depth_for(scale) if self.modules is not None else 0
        frames = bool(depth) and self.modules.set_depth(depth, scale)
        modules = bool(depth) and not frames
        far = not depth and self.overview is not None and scale < FAR_LOD
        if (far, modules, frames) == (self._far, self._modules_shown, self._frames):
            return
        self._far, self._modules_shown, self._frames = far, modules, frames
        if self.overview is not None:
            self.overview.setVisible(far)
        if self.modules is not None:
            self.modules.setVisible(bool(depth))
        for group in (self.items_by_key.values(), self.edges_by_key.values()):
            for item in group:
                item.setVisible(not far and not modules)

    def setTransform(self, *args, **kwargs):
        super().setTransform(*args, **kwargs)
        self._update_far()

    def scale(self, sx, sy):
        super().scale(sx, sy)
        self._update_far()

    def resetTransform(self):
        super().resetTransform()
        self._update_far()

    def item_for(self, key):
        """The item drawing ``key``: its own, or the box of the collapsed module holding it."""
        return self.items_by_key.get(self.model.drawing().drawn_key(key))

    def fit(self):
        """The whole graph in sight (the window does this for a small graph; ``user_fit`` is F)."""
        self.user_moved = False
        rect = self.scene().itemsBoundingRect()
        if not rect.isEmpty():
            self.fitInView(rect.adjusted(-20, -20, 20, 20), Qt.KeepAspectRatio)
            self._update_far()
        self.viewMoved.emit()

    def user_fit(self):
        """F: fit, asked by the user, who then looks at the whole graph: the view stops following."""
        self.fit()
        self.follow.on_user_moved()

    def center_on(self, key):
        item = self.item_for(key)
        if item is not None:
            self.ensureVisible(item.rect, 60, 60)

    def zoom(self, factor):
        """The user's zoom (the wheel): the view stops following the paused node."""
        self._user_move()
        scale = self.transform().m11()
        factor = max(0.01 / scale, min(factor, 8.0 / scale))
        self.scale(factor, factor)
        self.viewMoved.emit()

    def _user_move(self):
        self.user_moved = True
        self.follow.on_user_moved()

    def pan_to(self, point):
        """Centre on scene ``point``, for the user (the minimap): the view stops following."""
        self._user_move()
        self.centerOn(point)
        self.viewMoved.emit()

    def legible_scale(self):
        """The least scale at which a node's label is legible (``follow.legible_scale``)."""
        return _legible_scale(FONT.pointSizeF())

    def show_node(self, key):
        """Bring ``key`` (the paused node) into view with its label legible, and as many of its
        neighbours as fit (``follow.focus_rect``): zoomed in to the legible scale if the view is
        below it, never out; a programmatic move (``user_moved`` is left as it is). The view does
        not move while the node and its neighbourhood are already in sight. Returns whether the
        node is drawn."""
        drawing = self.model.drawing()
        drawn = drawing.drawn_key(key)
        lay = drawing.layout
        if lay is None or drawn not in self.items_by_key:
            return False
        boxes = neighbour_boxes(drawing.graph, lay.positions, lay.sizes, drawn)
        if not boxes:
            r = self.items_by_key[drawn].rect
            boxes = [(r.x(), r.y(), r.width(), r.height())]
        old = self.transform().m11()
        scale = target_scale(old, FONT.pointSizeF())
        port = self.viewport().rect()
        # What covers the viewport's right side (the minimap) is left out of the room.
        port.setWidth(max(port.width() // 2, port.width() - getattr(self, "covered_right", 0)))
        x, y, w, h = focus_rect(boxes, port.width(), port.height(), scale)
        if scale != old:
            self.setTransform(QTransform.fromScale(scale, scale))
        else:
            seen = self.mapToScene(port).boundingRect()
            if contains((seen.x(), seen.y(), seen.width(), seen.height()), (x, y, w, h)):
                return True
        self.centerOn(QPointF(x + w / 2 + (self.viewport().width() - port.width()) / 2 / scale, y + h / 2))
        self.viewMoved.emit()
        return True

    # -- collapsing modules --
    def set_collapsed(self, scopes):
        """Show each of ``scopes`` (module paths such as 'layer1.0') as one box."""
        if self.model.set_collapsed(scopes):
            self.redraw()
            self.collapsedChanged.emit()

    def collapse(self, scope):
        self.set_collapsed(self.model.collapsed | {scope})

    def expand(self, scope):
        if self.model.expand(scope):
            self.redraw()
            self.collapsedChanged.emit()

    def redraw(self):
        """Draw what is collapsed now; a large graph's new layout comes from a worker thread, and
        the window draws it when ready (MainWindow.poll: model.take_ready())."""
        self.model.drawing()
        if not self.model.laying_out:
            self.rebuild()

    def context_actions(self, key):
        """What the context menu offers on node ``key``: [(text, callable)]; None: shown disabled."""
        drawing = self.model.drawing()
        if key in drawing.members:
            scope = drawing.graph.nodes[key]["scope"]
            acts = [(f"Expand {scope}", lambda: self.expand(scope))]
        else:
            d = drawing.graph.nodes[key] if key in drawing.graph else {}
            collapsible = set(self.model.scopes())
            acts = [(f"Collapse {s}", lambda s=s: self.collapse(s))
                    for s in enclosing_scopes(node_scope(d)) if s in collapsible]
            if d.get("kind") == "grad_fn" and d.get("source"):
                line = d["source"].split(" in ")[0].rsplit("/", 1)[-1]
                acts.insert(0, (f"Breakpoint on every node of line {line}",
                                lambda: self.lineBreakpointAsked.emit(key)))
            checks = getattr(self.state, "checks", None)
            if d.get("kind") == "grad_fn" and checks is not None and getattr(self.state, "debugger", None):
                # offered on every node, runnable on the paused one (before it runs, its inputs are there)
                acts.append(("Check this node", (lambda: self.checkAsked.emit(key))
                             if checks.can_check_node(key) else None))
            diagnosis = getattr(self.state, "diagnosis", None)
            if diagnosis is not None and key in drawing.graph:
                acts += [(text, lambda fn=fn: self._diagnose(fn)) for text, fn in diagnosis.actions(key)]
        if self.model.collapsed:
            acts.append(("Expand all", lambda: self.set_collapsed(())))
        return acts

    def _diagnose(self, action):
        """Run a diagnosis's action (trace a NaN to its origin...), draw its path, say what it found."""
        action()
        self.refresh()
        self.diagnosed.emit(self.state.diagnosis.message)

    # -- search --
    def find(self, text):
        """Highlight the nodes matching ``text`` (label, op, parameter name, scope), select the
        first and center on it. Returns the matching keys."""
        matches = self.model.search(text)
        self._show_match(self.model.current_match)
        return matches

    def next_match(self, step=1):
        """Select and center on the next match (``step=-1``: the previous one)."""
        key = self.model.next_match(step)
        self._show_match(key)
        return key

    def _show_match(self, key):
        if key is not None:
            self.state.select(key)
            self.nodeClicked.emit(key)
        self.refresh()
        item = self.item_for(key) if key is not None else None
        if item is not None:
            if self.transform().m11() < 0.8:  # zoom in far enough to read it
                self.resetTransform()
            self.centerOn(item)

    # -- input --
    def _node_at(self, pos):
        if self._modules_shown:  # module boxes: no node to pick (a double-click zooms into a box)
            return None
        if self._far:  # the items are hidden behind the overview: the box nearest the point
            at = self.mapToScene(pos)
            slack = 4 / max(self.transform().m11(), 1e-9)  # 4 pixels, in scene units
            best, best_d = None, slack
            for n in self.items_by_key.values():
                r = n.rect
                d = max(r.left() - at.x(), at.x() - r.right(), r.top() - at.y(), at.y() - r.bottom(), 0.0)
                if d < best_d or d == 0.0 and best_d > 0.0:
                    best, best_d = n, d
                    if d == 0.0:
                        break
            return best
        item = self.itemAt(pos)
        while item is not None and not isinstance(item, NodeItem):
            item = item.parentItem()
        return item

    def wheelEvent(self, event):
        self.zoom(1.15 if event.angleDelta().y() > 0 else 1 / 1.15)

    def keyPressEvent(self, event):
        if event.key() == Qt.Key_F and not event.modifiers():
            self.user_fit()
        else:
            super().keyPressEvent(event)

    def mousePressEvent(self, event):
        item = self._node_at(event.position().toPoint())
        if item is not None and event.button() == Qt.LeftButton:
            self.nodeClicked.emit(item.key)
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event):
        bars = self.horizontalScrollBar(), self.verticalScrollBar()
        before = [b.value() for b in bars]
        super().mouseMoveEvent(event)
        if event.buttons() & Qt.LeftButton and [b.value() for b in bars] != before:
            self._user_move()  # a drag panned the view

    def zoom_into_module(self, scope):
        """Zoom the view onto module ``scope``'s box, far enough in to draw its nodes."""
        box = self.modules.boxes().get(scope) if self.modules is not None else None
        if box is None:
            return
        self.user_moved = True
        rect = QRectF(QPointF(box.rect[0], box.rect[1]), QPointF(box.rect[2], box.rect[3]))
        self.fitInView(rect.adjusted(-20, -20, 20, 20), Qt.KeepAspectRatio)
        scale = self.transform().m11()
        if scale < NODE_LABEL_SCALE:  # a big module: its top, nodes legible
            self.resetTransform()
            self.scale(NODE_LABEL_SCALE, NODE_LABEL_SCALE)
            self.centerOn(rect.center().x(), rect.top() + self.viewport().height() / 2 / NODE_LABEL_SCALE - 20)
        elif scale > 1.0:  # a small one: at 1:1, with its neighbours
            self.resetTransform()
            self.centerOn(rect.center())
        self._update_far()

    def mouseDoubleClickEvent(self, event):
        if self._modules_shown:
            box = self.modules.box_at(self.mapToScene(event.position().toPoint()))
            if box is not None:
                self.zoom_into_module(box.scope)
                return
        item = self._node_at(event.position().toPoint())
        if item is not None and item.kind == "module":
            self.expand(item.key)
        else:
            super().mouseDoubleClickEvent(event)

    def contextMenuEvent(self, event):
        item = self._node_at(event.pos())
        acts = self.context_actions(item.key) if item is not None else (
            [("Expand all", lambda: self.set_collapsed(()))] if self.model.collapsed else [])
        if not acts:
            return
        menu = QMenu(self)
        for text, slot in acts:
            act = menu.addAction(text)
            if slot is None:
                act.setEnabled(False)
            else:
                act.triggered.connect(lambda checked=False, slot=slot: slot())
        menu.exec(event.globalPos())
