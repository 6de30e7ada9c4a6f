"""``MainWindow``: the graph, the debugger's controls, the inspector and the gradient plot. It
renders an ``AppState`` (core) and forwards the user's commands to it; events from the program
are taken in batches by a 30 ms timer, so the window never waits on the program."""
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QSplitter, QToolBar

from .grad_plot import GradPlot
from .graph_view import GraphView
from .inspector import Inspector

POLL_MS = 30


class MainWindow(QMainWindow):
    def __init__(self, state, title="gradviz"):
        super().__init__()
        self.state = state
        self.setWindowTitle(title)
        self.resize(1280, 760)
        self.view = GraphView(state)
        self.setCentralWidget(self.view)
        self.inspector = Inspector(state)
        self.plot = GradPlot()
        side = QSplitter(Qt.Vertical)
        side.addWidget(self.inspector)
        side.addWidget(self.plot)
        side.setSizes([380, 260])
        dock = QDockWidget("Inspector", self)
        dock.setWidget(side)
        dock.setFeatures(QDockWidget.DockWidgetMovable)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self.status = QLabel()
        self.statusBar().addWidget(self.status, 1)
        self._actions()
        self.view.nodeClicked.connect(self.select)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.poll)
        self.timer.start(POLL_MS)
        self.poll()

    def _actions(self):
        bar = QToolBar("Debug", self)
        bar.setMovable(False)
        self.addToolBar(bar)
        self.actions_by_name = {}
        for name, key, slot in (("Continue", "F5", self.state.resume), ("Step", "F10", self.state.step),
                                ("Stop", "Shift+F5", self.state.stop), ("Fit", "F", self.view.fit)):
            act = QAction(f"{name} ({key})", self)
            act.setShortcut(QKeySequence(key))
            act.setShortcutContext(Qt.ApplicationShortcut)
            act.triggered.connect(lambda checked=False, slot=slot: (slot(), self.poll()))
            bar.addAction(act)
            self.actions_by_name[name] = act

    def poll(self):
        changed = self.state.poll()
        if "graph" in changed:
            self.view.rebuild()
            if len(self.view.items_by_key) < 60:
                self.view.fit()
        if changed:
            self.view.refresh()
            if "pause" in changed and self.state.current:
                self.view.center_on(self.state.current)
            self._show_selection()
        self.status.setText(self.state.status_text())

    def select(self, key):
        self.state.select(key)
        self.view.refresh()
        self._show_selection()

    def _show_selection(self):
        key = self.state.selected or self.state.current
        self.inspector.show_key(key)
        label = self.state.labels.get(key, "").replace("\n", " ") if key else ""
        self.plot.show_value(self.state.selected_value(), f"gradient at {label}" if label else "")

    def closeEvent(self, event):
        self.timer.stop()
        self.state.stop()
        super().closeEvent(event)
