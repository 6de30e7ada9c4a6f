"""``ModuleOverlayItem``: a graph's module structure, drawn by the graph view in place of its nodes
and edges when zoomed out too far to read node labels (semantic zoom; the boxes, depths and
gradient norms come from the core, ``gradviz.app.semantic``).

One rounded box per module at the depth chosen for the zoom ('layer1', or 'layer1.0', ...), in the
colour of a collapsed module's box, captioned with its name, its node count and, once backward has
reached its parameters, the norm of their ``.grad``. The captions are drawn at a constant size on
screen (``CAPTION_PX``), whatever the zoom. The graph's edges are hairlines under the boxes, so the
flow between modules stays visible; the nodes in no module (the loss) are drawn as small nodes with
their label. The box holding the node about to run is in the current-node colour.

Zoomed in so far that the boxes would be mostly empty (``semantic.framed``), it is drawn ``framed``:
the view shows the nodes, and the boxes are outlines over them, captioned on one line at their top."""
from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainterPath, QPen, QTransform
from PySide6.QtWidgets import QGraphicsItem

from gradviz.app.semantic import (CAPTION_PX, MIN_BOX_PX, NODE_LABEL_SCALE, box_grad_norms,
                                  boxes_by_depth, choose_depth, format_norm, framed, loose_nodes,
                                  readable_depths, shown_pass)

# The colours of graph_view (not imported: graph_view imports this module).
MODULE_FILL, MODULE_BORDER = QColor("#eadcf5"), QColor("#7d5a9e")  # graph_view FILL/BORDER["module"]
CURRENT = QColor("#ffb347")  # graph_view.CURRENT
SELECTED = QColor("#1f4e9c")  # graph_view.SELECTED_PEN
HAIRLINE = QColor("#c4c4c4")
TEXT = QColor("#202020")
GRAD_TEXT = QColor("#2a6f2a")


def _font(bold=False):
    f = QFont("DejaVu Sans")
    f.setPixelSize(int(CAPTION_PX))
    f.setBold(bold)
    return f


class ModuleOverlayItem(QGraphicsItem):
    """``depths``: {depth: {scope: ModuleBox}}, the depths it may draw (``semantic.readable_depths``
    of ``boxes_by_depth``); ``loose``: [(key,
    label, QRectF)] the nodes in no module; ``edge_path``: the edges, one QPainterPath."""

    def __init__(self, depths, loose, edge_path):
        super().__init__()
        self.depths = depths
        self.depth = min(depths) if depths else 0
        self.loose = loose
        self.edge_path = edge_path
        self.norms = {}  # (depth, scope) -> gradient norm, or None
        self.current = None  # the original key of the node about to run
        self.selected = None
        self.loose_fills = {}  # key -> QColor of a loose node (its node's colour)
        self.framed = False  # outlines over the nodes, instead of boxes in their place
        self._owner = {}  # depth -> {original key: scope}
        rects = [QRectF(QPointF(b.rect[0], b.rect[1]), QPointF(b.rect[2], b.rect[3]))
                 for boxes in depths.values() for b in boxes.values()]
        rects += [r for _, _, r in loose]
        bounds = edge_path.boundingRect()
        for r in rects:
            bounds = bounds.united(r)
        self._bounds = bounds.adjusted(-4, -4, 4, 4)
        self._name_font, self._font = _font(bold=True), _font()
        self.setZValue(3)
        self.setFlag(QGraphicsItem.ItemUsesExtendedStyleOption)  # exposedRect: paint what is seen

    # -- what to draw --
    def depth_for(self, scale):
        """The depth to draw at view ``scale``; 0: the nodes themselves."""
        return choose_depth(self.depths, scale, MIN_BOX_PX, NODE_LABEL_SCALE)

    def set_depth(self, depth, scale=None):
        """Draw the boxes of ``depth``; at view ``scale``, framed if they are large on screen.
        Returns whether they are framed."""
        if depth and depth in self.depths:
            frames = scale is not None and framed(self.depths[depth], scale)
            if depth != self.depth or frames != self.framed:
                self.depth, self.framed = depth, frames
                self.update()
        return self.framed

    def shape(self):
        """Nothing: clicks go to the nodes under the frames (the view finds boxes by box_at)."""
        return QPainterPath()

    def boxes(self):
        return self.depths.get(self.depth, {})

    def owner(self, key, depth=None):
        """The scope of the box holding original node ``key`` at ``depth`` (the one drawn), or None."""
        depth = self.depth if depth is None else depth
        owners = self._owner.get(depth)
        if owners is None:
            owners = self._owner[depth] = {k: s for s, b in self.depths.get(depth, {}).items() for k in b.keys}
        return owners.get(key)

    def box_at(self, point):
        """The box drawn at scene ``point`` (the smallest, where boxes overlap), or None."""
        hits = [b for b in self.boxes().values() if b.contains(point.x(), point.y())]
        return min(hits, key=lambda b: (b.rect[2] - b.rect[0]) * (b.rect[3] - b.rect[1]), default=None)

    def set_state(self, model, items_by_key):
        """Take the debugger's position, the selection and the gradient norms of the pass shown
        from ``model`` (a GraphModel; call with the trace's lock held), the loose nodes' colours
        from the view's node items."""
        st = model.state
        norms = {}
        i = shown_pass(st.trace, st.iteration) if st.trace is not None else None
        if i is not None:
            for d, boxes in self.depths.items():
                for scope, n in box_grad_norms(st.trace, boxes, i).items():
                    norms[d, scope] = n
        self.norms = norms
        self.current, self.selected = st.current, st.selected
        self.loose_fills = {k: items_by_key[k].fill for k, _, _ in self.loose if k in items_by_key}
        self.update()

    def caption(self, box):
        """The lines of a box's caption: name, node count, gradient norm (when known)."""
        lines = [box.scope, f"{box.count} node" + ("" if box.count == 1 else "s")]
        norm = self.norms.get((self.depth, box.scope))
        if norm is not None:
            lines.append(format_norm(norm))
        return lines

    def _by_area(self):
        return sorted(self.boxes().values(), key=lambda b: -(b.rect[2] - b.rect[0]) * (b.rect[3] - b.rect[1]))

    # -- painting --
    def boundingRect(self):
        return self._bounds

    def paint(self, painter, option, widget=None):
        if self.framed:
            self._paint_frames(painter, option)
            return
        painter.setPen(QPen(HAIRLINE, 0))
        painter.setBrush(Qt.NoBrush)
        painter.drawPath(self.edge_path)
        exposed = option.exposedRect
        current_scope = self.owner(self.current) if self.current is not None else None
        selected_scope = self.owner(self.selected) if self.selected is not None else None
        shown = []
        for box in self._by_area():  # the largest first: a small box on top stays seen
            r = QRectF(QPointF(box.rect[0], box.rect[1]), QPointF(box.rect[2], box.rect[3])).adjusted(-6, -6, 6, 6)
            if not r.intersects(exposed):
                continue
            painter.setBrush(CURRENT if box.scope == current_scope else MODULE_FILL)
            painter.setPen(_cosmetic(SELECTED, 2.5) if box.scope == selected_scope else _cosmetic(MODULE_BORDER, 1.2))
            painter.drawRoundedRect(r, 8, 8)
            shown.append((box, r))
        for key, _, r in self.loose:
            if r.intersects(exposed):
                painter.setBrush(CURRENT if key == self.current else self.loose_fills.get(key, QColor("#dbe8f7")))
                painter.setPen(_cosmetic(QColor("#7a7a7a"), 1.0))
                painter.drawRoundedRect(r, 4, 4)
        # The captions, in device pixels: the same size at every zoom.
        t = painter.worldTransform()
        painter.save()
        painter.setWorldTransform(QTransform())
        # Captions inside their boxes first, then the labels beside small boxes: the loose nodes'
        # (the loss first) before the modules'; a label beside that would cover one drawn is left out.
        taken, beside = [], []
        for box, r in shown:
            self._draw_caption(painter, t.mapRect(r), self.caption(box), taken, beside)
        loose = []
        for _, label, r in self.loose:
            if r.intersects(exposed):
                self._draw_caption(painter, t.mapRect(r), [label.split("\n")[0]], taken, loose)
        loose.sort(key=lambda rt: rt[0].top())  # the topmost first: the loss, where backward starts
        for rect, text in loose + beside:
            if not any(rect.intersects(o) for o in taken):
                taken.append(rect)
                painter.fillRect(rect, QColor(252, 252, 252, 210))
                painter.drawText(rect, Qt.AlignLeft | Qt.AlignVCenter, text)
        painter.restore()

    def _paint_frames(self, painter, option):
        exposed = option.exposedRect
        current_scope = self.owner(self.current) if self.current is not None else None
        selected_scope = self.owner(self.selected) if self.selected is not None else None
        shown = []
        painter.setBrush(Qt.NoBrush)
        for box in self._by_area():
            r = QRectF(QPointF(box.rect[0], box.rect[1]), QPointF(box.rect[2], box.rect[3])).adjusted(-14, -14, 14, 14)
            if not r.intersects(exposed):
                continue
            colour = (SELECTED if box.scope == selected_scope else CURRENT if box.scope == current_scope
                      else MODULE_BORDER)
            painter.setPen(_cosmetic(colour, 2.0 if colour is not MODULE_BORDER else 1.2))
            painter.drawRoundedRect(r, 10, 10)
            shown.append((box, r))
        t = painter.worldTransform()
        painter.save()
        painter.setWorldTransform(QTransform())
        painter.setFont(self._name_font)
        fm = QFontMetricsF(self._name_font)
        for box, r in shown:
            text = "  ·  ".join(self.caption(box))
            at = t.mapRect(r)
            tag = QRectF(at.left() + 8, at.top() - CAPTION_PX / 2 - 3, fm.horizontalAdvance(text) + 10, CAPTION_PX + 6)
            painter.setPen(_cosmetic(MODULE_BORDER, 1.0))
            painter.setBrush(MODULE_FILL if box.scope != current_scope else CURRENT)
            painter.drawRoundedRect(tag, 4, 4)
            painter.setPen(TEXT)
            painter.drawText(tag, Qt.AlignCenter, text)
        painter.restore()

    def _draw_caption(self, painter, rect, lines, taken, beside):
        """``lines`` in ``rect`` (device pixels): as many as fit, centred (their rects added to
        ``taken``); for a box too short for one line, (rect, first line) to draw beside it, on
        the right, is added to ``beside`` (the bold font set for it)."""
        line_h = CAPTION_PX + 3
        fit = int((rect.height() - 4) // line_h)
        fm = QFontMetricsF(self._name_font)
        if fit <= 0:
            w = fm.horizontalAdvance(lines[0]) + 4
            beside.append((QRectF(rect.right() + 4, rect.center().y() - line_h / 2, w, line_h), lines[0]))
            return
        lines = lines[:fit]
        top = rect.center().y() - len(lines) * line_h / 2
        for i, text in enumerate(lines):
            painter.setFont(self._name_font if i == 0 else self._font)
            painter.setPen(GRAD_TEXT if text.startswith("|grad|") else TEXT)
            painter.drawText(QRectF(rect.left() - 200, top + i * line_h, rect.width() + 400, line_h),
                             Qt.AlignHCenter | Qt.AlignVCenter, text)
            w = fm.horizontalAdvance(text)
            taken.append(QRectF(rect.center().x() - w / 2, top + i * line_h, w, line_h))
        painter.setFont(self._name_font)
        painter.setPen(TEXT)


def _cosmetic(colour, width):
    """A pen ``width`` pixels wide on screen, whatever the zoom."""
    pen = QPen(colour, width)
    pen.setCosmetic(True)
    return pen


def make_overlay(drawing, items_by_key, edges_by_key):
    """The overlay of a model's drawing (``GraphModel.drawing()``), over the view's items; None
    when the graph has no module scopes (the view keeps its plain zoomed-out drawing)."""
    lay = drawing.layout
    if lay is None:
        return None
    depths = boxes_by_depth(drawing.graph, lay.positions, lay.sizes, drawing.members)
    if not any(depths.values()):
        return None
    depths = readable_depths(depths)
    loose = [(k, drawing.labels.get(k, k), items_by_key[k].rect)
             for k in loose_nodes(drawing.graph, lay.positions) if k in items_by_key]
    path = QPainterPath()
    for e in edges_by_key.values():
        path.addPath(e.line)
    return ModuleOverlayItem(depths, loose, path)
