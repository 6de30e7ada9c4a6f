"""``DiffWindow``: what changed between two iterations (or two recordings), drawn as one graph: the
nodes and edges only in A or only in B coloured, the others by the ratio of their gradient norms,
with a legend. Its state is a ``gradviz.app.diffview.DiffState``; the graph is an ordinary
``GraphView`` of it."""
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout,
                               QWidget)

from gradviz.app.diffview import DiffGraphModel, DiffState
from gradviz.ui.graph_view import GraphView


def legend_html(legend):
    return "&nbsp;&nbsp;".join(
        f"<span style='background:{c}; color:{c}; border:1px solid #808080'>&nbsp;■&nbsp;</span>&nbsp;{t}"
        for c, t in legend)


class DiffWindow(QWidget):
    def __init__(self, trace, iteration_a=None, iteration_b=None, trace_b=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("gradviz: what changed")
        self.resize(1000, 700)
        self.trace = trace
        self.state = DiffState(trace, iteration_a, trace_b, iteration_b)
        self.spin_a, self.spin_b = QSpinBox(), QSpinBox()
        row = QHBoxLayout()
        for text, spin in (("A: iteration", self.spin_a), ("B: iteration", self.spin_b)):
            row.addWidget(QLabel(text))
            row.addWidget(spin)
        self.compare = QPushButton("Compare with a recording…")
        self.compare.clicked.connect(self._ask_recording)
        row.addWidget(self.compare)
        row.addStretch(1)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.RichText)
        self.legend.setWordWrap(True)
        self.view = GraphView(self.state, model=DiffGraphModel(self.state))
        box = QVBoxLayout(self)
        box.addLayout(row)
        box.addWidget(self.summary)
        box.addWidget(self.legend)
        box.addWidget(self.view, 1)
        self._sync_spins()
        self.spin_a.valueChanged.connect(self._iterations_changed)
        self.spin_b.valueChanged.connect(self._iterations_changed)
        self._draw()

    def _sync_spins(self):
        st = self.state
        for spin, trace, value in ((self.spin_a, st.trace_a, st.iteration_a),
                                   (self.spin_b, st.trace_b, st.iteration_b)):
            spin.blockSignals(True)
            its = sorted(trace.iteration_nodes)
            spin.setRange(its[0] if its else 0, its[-1] if its else 0)
            spin.setValue(value)
            spin.blockSignals(False)

    def _iterations_changed(self):
        self.set_iterations(self.spin_a.value(), self.spin_b.value())

    def set_iterations(self, a, b):
        try:
            self.state.set_iterations(a, b)
        except ValueError as exc:
            self.summary.setText(str(exc))
            return False
        self._sync_spins()
        self._draw()
        return True

    def compare_with(self, trace_b):
        """B becomes the last iteration of another recording."""
        self.state = DiffState(self.trace, self.state.iteration_a, trace_b, None)
        self.view.state = self.state
        self.view.model.state = self.state
        self._sync_spins()
        self._draw()

    def _ask_recording(self):
        import gradviz
        path, _ = QFileDialog.getOpenFileName(self, "A recording to compare with", "", "gradviz traces (*.gvz)")
        if not path:
            return
        try:
            self.compare_with(gradviz.load(path))
        except (OSError, ValueError) as exc:
            self.summary.setText(f"Cannot compare with {path}: {exc}")

    def _draw(self):
        self.summary.setText(self.state.summary())
        self.legend.setText(legend_html(self.state.overlay().legend))
        self.view.rebuild()
        self.view.fit()
