"""The graph as a picture, without a window (``gradviz export TRACE -o OUT.svg|OUT.png``): the
latest iteration's graph, laid out and drawn exactly as ``GraphView`` draws it, rendered from a
QGraphicsScene into an SVG (QSvgGenerator) or a PNG (QImage)."""
import os
import sys

# A PNG side is capped here, and its area at MAX_PIXELS: a 5,000-node graph is ~200,000 px
# tall at 1:1, so it is scaled down (text is then left out, as in the zoomed-out view).
MAX_SIDE = 16000
MAX_PIXELS = 80_000_000


def _application():
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    if app is None:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication(sys.argv[:1])
    return app


def render_graph(trace, path, collapsed=(), scale=None):
    """Write the graph of ``trace``'s latest iteration to ``path`` (.svg or .png), with the
    module scopes in ``collapsed`` drawn as one box each; ``scale``: PNG pixels per layout unit
    (default 2, less for big graphs). Returns the number of nodes drawn."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".svg", ".png"):
        raise ValueError(f"cannot render {ext or 'a file without a suffix'}: use .svg or .png")
    _application()
    from PySide6.QtCore import QRectF, QSize, Qt
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtWidgets import QGraphicsScene

    from gradviz.app.state import AppState
    from gradviz.app.graphmodel import GraphModel
    from .graph_view import build_scene, paint_state

    folder = os.path.dirname(os.path.abspath(str(path)))
    if not os.path.isdir(folder):
        raise OSError(f"could not write {path}: no such directory {folder}")
    state = AppState(trace=trace)
    state.poll()
    state.wait_layout(timeout=None)  # a large graph is laid out in a worker thread
    model = GraphModel(state)
    unknown = sorted(set(collapsed) - set(model.scopes()))
    if unknown:
        raise ValueError(f"no module scope {', '.join(map(repr, unknown))} in this graph; its scopes: "
                         f"{', '.join(model.scopes()[:12]) or 'none'}")
    model.set_collapsed(collapsed)
    model.drawing()
    model.take_ready(wait=600)  # a large graph's collapsed layout runs in a worker thread
    scene = QGraphicsScene()
    nodes, edges = build_scene(scene, model, cache=False)  # a cached item would land as a bitmap
    paint_state(nodes, edges, model)
    source = scene.itemsBoundingRect().adjusted(-20, -20, 20, 20) if nodes else QRectF(0, 0, 200, 100)
    w, h = source.width(), source.height()
    if ext == ".svg":
        from PySide6.QtSvg import QSvgGenerator
        gen = QSvgGenerator()
        gen.setFileName(str(path))
        gen.setSize(QSize(int(w), int(h)))
        gen.setViewBox(QRectF(0, 0, w, h))
        gen.setTitle("gradviz graph")
        painter = QPainter(gen)
        if not painter.isActive():
            raise OSError(f"could not write {path}")
        painter.fillRect(QRectF(0, 0, w, h), QColor("#ffffff"))
        scene.render(painter, QRectF(0, 0, w, h), source)
        painter.end()
    else:
        if scale is None:
            scale = min(2.0, MAX_SIDE / max(w, h), (MAX_PIXELS / (w * h)) ** 0.5)
        image = QImage(max(1, int(w * scale)), max(1, int(h * scale)), QImage.Format_ARGB32)
        image.fill(QColor("#ffffff"))
        painter = QPainter(image)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setRenderHint(QPainter.TextAntialiasing)
        scene.render(painter, QRectF(0, 0, image.width(), image.height()), source, Qt.KeepAspectRatio)
        painter.end()
        if not image.save(str(path)):
            raise OSError(f"could not write {path}")
    return len(nodes)
