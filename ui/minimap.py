"""``Minimap``: the whole graph in a small corner view over the graph view, the main viewport's
rectangle on it, and which nodes have run (blue) and the paused node (orange). A click or a drag
on it moves the main view there (a user's move: the view stops following the paused node).

It draws from the graph view's items (their rects and the colours ``paint_state`` gave them) into
a pixmap, made again only when the graph is redrawn or recoloured (``invalidate``): a scroll of
the main view repaints that pixmap and a rectangle, whatever the graph's size (a 5,000-node graph
included). Its own scene is empty and has the main scene's rect, so that the view's transform
maps the main scene's coordinates onto the minimap."""
from PySide6.QtCore import QEvent, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QFrame, QGraphicsScene, QGraphicsView

from .graph_view import CURRENT, EDGE_NO_GRAD, RAN

MAX_W, MAX_H = 200, 240   # the largest minimap, in pixels (a tall graph gets a tall, narrow one)
MIN_W, MIN_H = 90, 70
MARGIN = 10               # from the graph view's corner
FRAME = QColor("#1f4e9c")


class Minimap(QGraphicsView):
    def __init__(self, view):
        super().__init__(view)  # a child of the graph view, over its bottom-right corner
        self.view = view
        self.setScene(QGraphicsScene(self))
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setInteractive(False)
        self.setFrameShape(QFrame.Box)
        self.setStyleSheet("Minimap { border: 1px solid #9a9a9a; background: rgba(252, 252, 252, 240); }")
        self.setViewportUpdateMode(QGraphicsView.FullViewportUpdate)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip("The whole graph: click or drag to move the view (blue: nodes that ran)")
        self._pixmap = None  # the graph drawn at the minimap's size (None: to draw again)
        self._edges_of = None  # (the edge items it was made from, their path)
        for bar in (view.horizontalScrollBar(), view.verticalScrollBar()):
            bar.valueChanged.connect(self.viewport_moved)
            bar.rangeChanged.connect(self.viewport_moved)
        view.viewMoved.connect(self.viewport_moved)
        self._port = view.viewport()
        self._port.installEventFilter(self)  # its size (the scroll bars come and go)
        self.hide()

    # -- what it shows --
    def invalidate(self):
        """The graph was drawn anew or recoloured: draw the minimap again (at its next paint)."""
        self._pixmap = None
        self._place()
        self.viewport().update()

    def viewport_moved(self, *args):
        """The main view scrolled or zoomed: move the rectangle (and show or hide the minimap)."""
        self._place()
        self.viewport().update()

    def visible_scene_rect(self):
        """The part of the main scene the main view shows (the rectangle drawn here)."""
        view = self.view
        return view.mapToScene(view.viewport().rect()).boundingRect()

    def _graph_rect(self):
        # (items_by_key, not scene.items(): that would list every item of a large graph per move)
        return self.view.scene().sceneRect() if self.view.items_by_key else QRectF()

    def _place(self):
        """Sized to the graph's shape, in the graph view's bottom-right corner; shown only when
        the graph does not fit in the view."""
        rect, view = self._graph_rect(), self.view
        if rect.isEmpty() or self.visible_scene_rect().contains(rect.adjusted(30, 30, -30, -30)):
            self.hide()
            view.covered_right = 0
            return
        max_h = min(MAX_H, max(MIN_H, view.viewport().height() // 2))
        s = min(MAX_W / rect.width(), max_h / rect.height())
        w, h = max(MIN_W, round(rect.width() * s)) + 2, max(MIN_H, round(rect.height() * s)) + 2
        port = view.viewport().geometry()  # in the graph view's coordinates (inside its scroll bars)
        geometry = (port.right() - MARGIN - w + 1, port.bottom() - MARGIN - h + 1, w, h)
        if self.geometry().getRect() != geometry:
            self.setGeometry(*geometry)
            self._pixmap = None
        if self.sceneRect() != rect:
            self.scene().setSceneRect(rect)
            self._pixmap = None
        self.fitInView(rect, Qt.KeepAspectRatio)
        if self.isHidden():
            self.show()
            self.raise_()
        view.covered_right = w + 2 * MARGIN  # the graph view brings nodes into sight left of it

    def eventFilter(self, obj, event):
        if obj is getattr(self, "_port", None) and event.type() == QEvent.Resize:
            self._place()
            return False
        return super().eventFilter(obj, event)

    # -- drawing --
    def _edge_path(self):
        edges = self.view.edges_by_key
        if self._edges_of is None or self._edges_of[0] is not edges:
            path = QPainterPath()
            for e in edges.values():
                path.addPath(e.line)
            self._edges_of = (edges, path)
        return self._edges_of[1]

    def _render(self):
        """The graph at the minimap's scale: hairline edges, one drawRects per colour."""
        port = self.viewport()
        dpr = port.devicePixelRatioF()
        pix = QPixmap(max(1, round(port.width() * dpr)), max(1, round(port.height() * dpr)))
        pix.setDevicePixelRatio(dpr)
        pix.fill(Qt.transparent)
        p = QPainter(pix)
        p.setTransform(self.viewportTransform())
        p.setPen(QPen(EDGE_NO_GRAD, 0))
        p.drawPath(self._edge_path())
        # Each box at least 2 pixels high, the nodes that ran in the ran nodes' blue.
        grow = max(0.0, 2.0 / max(self.transform().m22(), 1e-9) - 26.0) / 2
        groups = {}
        for item in self.view.items_by_key.values():
            colour = RAN if item.ran else item.fill.darker(125)
            groups.setdefault(colour.rgba(), (colour, []))[1].append(item.rect.adjusted(0, -grow, 0, grow))
        p.setPen(Qt.NoPen)
        for colour, rects in groups.values():
            p.setBrush(colour)
            p.drawRects(rects)
        p.end()
        return pix

    def drawBackground(self, painter, rect):
        if self._pixmap is None:
            self._pixmap = self._render()
        painter.save()
        painter.resetTransform()
        painter.drawPixmap(0, 0, self._pixmap)
        painter.restore()

    def drawForeground(self, painter, rect):
        """The main view's viewport, and the paused node (a dot too big to miss)."""
        painter.save()
        t = self.viewportTransform()
        painter.resetTransform()
        key = getattr(self.view.state, "current", None)
        current = self.view.item_for(key) if key is not None else None
        if current is not None:
            c = t.map(current.rect.center())
            painter.setRenderHint(QPainter.Antialiasing)
            painter.setPen(QPen(QColor("#8a4b00"), 1))
            painter.setBrush(CURRENT)
            painter.drawEllipse(c, 4.0, 4.0)
        r = t.mapRect(self.visible_scene_rect()).intersected(QRectF(self.viewport().rect()).adjusted(0, 0, -1, -1))
        painter.setRenderHint(QPainter.Antialiasing, False)
        painter.setPen(QPen(FRAME, 1.5))
        painter.setBrush(QColor(31, 78, 156, 30))
        painter.drawRect(r)
        painter.restore()

    # -- input: a click or a drag moves the main view --
    def _pan(self, event):
        self.view.pan_to(self.mapToScene(event.position().toPoint()))

    def mousePressEvent(self, event):
        if event.button() == Qt.LeftButton:
            self._pan(event)

    def mouseMoveEvent(self, event):
        if event.buttons() & Qt.LeftButton:
            self._pan(event)

    def mouseReleaseEvent(self, event):
        pass

    def mouseDoubleClickEvent(self, event):
        pass

    def wheelEvent(self, event):
        event.accept()  # not the graph view's zoom

