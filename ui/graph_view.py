"""``GraphView``: the autograd graph, laid out by the core, drawn with QGraphicsScene. Nodes are
coloured by kind; the node about to run is highlighted and the nodes already run are marked."""
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsScene, QGraphicsView

FILL = {
    "grad_fn": QColor("#dbe8f7"),
    "accumulate_grad": QColor("#e6e6e6"),
    "parameter": QColor("#cde8c4"),
    "leaf": QColor("#cde8c4"),
    "frozen": QColor("#f4f4f4"),
}
CURRENT = QColor("#ffb347")
RAN = QColor("#9fc5e8")
SELECTED_PEN = QPen(QColor("#1f4e9c"), 2.5)


class NodeItem(QGraphicsItem):
    def __init__(self, key, label, kind, rect):
        super().__init__()
        self.key, self.label, self.kind, self.rect = key, label, kind, rect
        self.fill = FILL.get(kind, QColor("#ffffff"))
        self.selected = False
        self.setZValue(1)

    def boundingRect(self):
        return self.rect.adjusted(-2, -2, 2, 2)

    def paint(self, painter, option, widget=None):
        painter.setBrush(QBrush(self.fill))
        pen = SELECTED_PEN if self.selected else QPen(QColor("#7a7a7a"), 1.0,
                                                      Qt.DashLine if self.kind == "frozen" else Qt.SolidLine)
        painter.setPen(pen)
        painter.drawRoundedRect(self.rect, 6, 6)
        painter.setPen(QColor("#999999") if self.kind == "frozen" else QColor("#202020"))
        painter.drawText(self.rect, Qt.AlignCenter, self.label)


class GraphView(QGraphicsView):
    nodeClicked = Signal(str)

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.Antialiasing)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setBackgroundBrush(QColor("#fcfcfc"))
        self.items_by_key = {}
        self._font = QFont("DejaVu Sans", 9)

    def rebuild(self):
        """Draw the state's layout anew (called when the graph changed)."""
        scene = self.scene()
        scene.clear()
        self.items_by_key = {}
        lay = self.state.layout
        if lay is None:
            return
        g = self.state.graph
        for (u, v), points in lay.edges.items():
            path = QPainterPath(QPointF(*points[0]))
            for p in points[1:]:
                path.lineTo(QPointF(*p))
            item = QGraphicsPathItem(path)
            carries = g.edges[u, v].get("grad", True) if g.has_edge(u, v) else True
            item.setPen(QPen(QColor("#8c8c8c" if carries else "#c8c8c8"), 1.2, Qt.SolidLine if carries else Qt.DashLine))
            scene.addItem(item)
            self._arrow(points[-2], points[-1], v)
        for key, (x, y) in lay.positions.items():
            label = self.state.labels.get(key, key)
            from gradviz.appstate import node_size
            w, h = node_size(label)
            item = NodeItem(key, label, g.nodes[key].get("kind") if key in g else "", QRectF(x - w / 2, y - h / 2, w, h))
            scene.addItem(item)
            self.items_by_key[key] = item
        scene.setSceneRect(scene.itemsBoundingRect().adjusted(-40, -40, 40, 40))
        self.refresh()

    def _arrow(self, a, b, target):
        # An arrowhead where the edge meets the target box's top edge.
        from gradviz.appstate import node_size
        w, h = node_size(self.state.labels.get(target, target))
        (x0, y0), (x1, y1) = a, b
        tip = QPointF(x1 - (x1 - x0) * (h / 2) / max(abs(y1 - y0), 1e-6), y1 - h / 2) if y1 != y0 else QPointF(x1, y1)
        dx, dy = x1 - x0, y1 - y0
        n = max((dx * dx + dy * dy) ** 0.5, 1e-6)
        ux, uy = dx / n, dy / n
        left = QPointF(tip.x() - 8 * ux + 4 * uy, tip.y() - 8 * uy - 4 * ux)
        right = QPointF(tip.x() - 8 * ux - 4 * uy, tip.y() - 8 * uy + 4 * ux)
        self.scene().addPolygon(QPolygonF([tip, left, right]), QPen(QColor("#8c8c8c")), QBrush(QColor("#8c8c8c")))

    def refresh(self):
        """Recolour for the debugger's position and the selection (no relayout)."""
        current, ran, selected = self.state.current, self.state.ran(), self.state.selected
        for key, item in self.items_by_key.items():
            base = FILL.get(item.kind, QColor("#ffffff"))
            item.fill = CURRENT if key == current else RAN if key in ran else base
            item.selected = key == selected
            item.update()

    def fit(self):
        rect = self.scene().itemsBoundingRect()
        if not rect.isEmpty():
            self.fitInView(rect.adjusted(-20, -20, 20, 20), Qt.KeepAspectRatio)

    def center_on(self, key):
        item = self.items_by_key.get(key)
        if item is not None:
            self.ensureVisible(item.rect, 60, 60)

    def wheelEvent(self, event):
        factor = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
        self.scale(factor, factor)

    def keyPressEvent(self, event):
        if event.key() == Qt.Key_F and not event.modifiers():
            self.fit()
        else:
            super().keyPressEvent(event)

    def mousePressEvent(self, event):
        item = self.itemAt(event.position().toPoint())
        while item is not None and not isinstance(item, NodeItem):
            item = item.parentItem()
        if isinstance(item, NodeItem):
            self.nodeClicked.emit(item.key)
        super().mousePressEvent(event)
