"""``RankView``: the ranks of a data-parallel job side by side. A rank selector (which rank's graph
the window shows; a rank whose local gradients stand out is marked), the iteration compared, a
table of every parameter's local gradient norm on each rank beside the synchronised ``.grad``'s and
their spread, and the gradient flow of all ranks at once. It renders a ``RankState``
(``gradviz.app.ranks``) and says which rank was chosen through ``rankChanged``."""
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal

from gradviz.app.ranks import iteration_end_moment
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

MARKED = "#f6c7c0"
MARKED_TEXT = "#a0281b"
RANK_COLOURS = ["#2f62b8", "#d98200", "#2a9d4b", "#8e44ad", "#c0392b", "#16a0a0", "#7f6000", "#505050"]
TEXT = "#202020"


def _norm_text(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf"
    return f"{x:.4g}"


class RankView(QWidget):
    rankChanged = Signal(int)
    iterationChanged = Signal(int)

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.selector = QComboBox()
        self.selector.setToolTip("Which rank's graph the window shows; ⚠ marks a rank whose local gradients "
                                 "stand out (NaN/Inf, or a norm far from the other ranks')")
        self.iteration = QComboBox()
        self.iteration.setToolTip("The iteration whose gradients are compared")
        top = QHBoxLayout()
        top.addWidget(QLabel("Graph of"))
        top.addWidget(self.selector, 1)
        top.addWidget(QLabel("Iteration"))
        top.addWidget(self.iteration)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.buckets = QLabel()
        self.buckets.setWordWrap(True)
        self.buckets.setToolTip("DistributedDataParallel's gradient buckets in the shown rank's backward pass: "
                                "when each one's all-reduce was launched, and the parameters it held")
        self.table = QTableWidget()
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.NoSelection)
        self.flow = pg.PlotWidget(background="w")
        self.flow.setMinimumHeight(160)
        for side in ("left", "bottom"):
            axis = self.flow.getPlotItem().getAxis(side)
            axis.setTextPen(TEXT)
            axis.enableAutoSIPrefix(False)
        self.flow.addLegend(offset=(10, 2), labelTextColor=TEXT, colCount=8)
        self.setMinimumWidth(440)  # the table's columns readable
        column = QVBoxLayout(self)
        column.setContentsMargins(4, 4, 4, 4)
        column.addLayout(top)
        column.addWidget(self.summary)
        column.addWidget(self.buckets)
        column.addWidget(self.table, 2)
        column.addWidget(self.flow, 3)
        self.selector.currentIndexChanged.connect(self._rank_chosen)
        self.iteration.currentIndexChanged.connect(self._iteration_chosen)
        self.refresh()

    # -- from the state ----------------------------------------------------------------------------
    def refresh(self):
        st = self.state
        for box in (self.selector, self.iteration):
            box.blockSignals(True)
        try:
            self.iteration.clear()
            for it in st.iterations:
                self.iteration.addItem(str(it), it)
            if st.iteration is not None:
                self.iteration.setCurrentIndex(st.iterations.index(st.iteration))
            self.selector.clear()
            marked = st.marked
            for r in st.rankset.ranks:
                self.selector.addItem(st.rank_label(r), r)
                if r in marked:
                    self.selector.setItemData(self.selector.count() - 1, QBrush(QColor(MARKED_TEXT)), Qt.ForegroundRole)
                    self.selector.setItemData(self.selector.count() - 1, "\n".join(marked[r]), Qt.ToolTipRole)
            self.selector.setCurrentIndex(st.rankset.ranks.index(st.selected))
        finally:
            for box in (self.selector, self.iteration):
                box.blockSignals(False)
        self.summary.setText(st.summary())
        self.buckets.setText("\n".join(st.bucket_lines()) or "No DDP bucket all-reduce in this pass.")
        self._fill_table()
        self._fill_flow()

    def _fill_table(self):
        st = self.state
        ranks = st.rankset.ranks
        rows = st.rows
        headers = ["parameter"] + [f"rank {r} local" for r in ranks] + ["synchronised", "spread"]
        t = self.table
        t.clear()
        t.setColumnCount(len(headers))
        t.setRowCount(len(rows))
        t.setHorizontalHeaderLabels(headers)
        t.horizontalHeader().setToolTip("‖grad‖ (L2 norm): each rank's local gradient before DDP's all-reduce, "
                                        "the synchronised .grad after it, and (max - min) / median of the local norms")
        for i, row in enumerate(rows):
            t.setItem(i, 0, QTableWidgetItem(row.name))
            for j, r in enumerate(ranks, 1):
                item = QTableWidgetItem(_norm_text(row.local_norm(r)) if r in row.local else "—")
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                if r in row.marked:
                    item.setBackground(QColor(MARKED))
                    item.setForeground(QColor(MARKED_TEXT))
                    item.setToolTip(f"rank {r}: {row.marked[r]}")
                t.setItem(i, j, item)
            synced = QTableWidgetItem(_norm_text(row.synced_norm()) if row.synced else "—")
            synced.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            t.setItem(i, len(ranks) + 1, synced)
            spread = QTableWidgetItem(f"{row.spread:.0%}" if math.isfinite(row.spread) else "—")
            spread.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            t.setItem(i, len(ranks) + 2, spread)
        header = t.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for j in range(1, len(headers)):
            header.setSectionResizeMode(j, QHeaderView.ResizeToContents)

    def _fill_flow(self):
        """Every rank's local gradient norm per parameter (a row each, in layer order), log scale,
        a marker a rank; a rank's NaN or Inf drawn as a cross at the right edge."""
        pw = self.flow
        pw.clear()
        names, norms = self.state.flow()
        if not names:
            return
        y = np.arange(len(names))[::-1].astype(float)  # the first layer on top, as the table
        values = np.array([v for vs in norms.values() for v in vs if v is not None], dtype=float)
        finite = values[np.isfinite(values) & (values > 0)]
        lo = math.log10(finite.min()) - 0.3 if finite.size else -1.0
        hi = math.log10(finite.max()) + 0.3 if finite.size else 1.0
        for k, (r, vs) in enumerate(norms.items()):
            v = np.array([np.inf if x is None else x for x in vs], dtype=float)
            missing = np.array([x is None for x in vs], dtype=bool)  # no gradient from this rank: no marker
            ok = np.isfinite(v) & (v > 0)
            colour = RANK_COLOURS[k % len(RANK_COLOURS)]
            shift = (k - (len(norms) - 1) / 2) * 0.12  # ranks side by side in a row
            pw.plot(np.log10(v[ok]), y[ok] + shift, pen=None, symbol="o", symbolSize=9, symbolBrush=colour,
                    symbolPen=None, name=f"rank {r}" if ok.any() else None)
            bad = ~np.isfinite(v) & ~missing
            if bad.any():
                pw.plot(np.full(bad.sum(), hi), y[bad] + shift, pen=None, symbol="x", symbolSize=13,
                        symbolBrush=colour, symbolPen=pg.mkPen(colour, width=2),
                        name=None if ok.any() else f"rank {r} (NaN/Inf)")
        pi = pw.getPlotItem()
        pi.getAxis("left").setTicks([[(float(i), n) for i, n in zip(y, names)]])
        pi.setLabel("bottom", "log10 ‖local grad‖ (NaN/Inf: × at the right)")
        pw.setXRange(lo, hi + 0.1, padding=0.02)
        pw.setYRange(-0.6, len(names) + 0.2, padding=0)  # (room above for the legend)

    # -- from the user -----------------------------------------------------------------------------
    def _rank_chosen(self, index):
        rank = self.selector.itemData(index)
        if rank is None or rank == self.state.selected:
            return
        self.state.select(rank)
        self.rankChanged.emit(rank)

    def _iteration_chosen(self, index):
        it = self.iteration.itemData(index)
        if it is None or it == self.state.iteration:
            return
        self.state.set_iteration(it)
        self.refresh()
        self.iterationChanged.emit(it)


def add_rank_view(window, state):
    """A "Ranks" dock in ``window`` (a MainWindow showing a trace) for the job ``state`` holds:
    choosing a rank shows that rank's graph in the window."""
    view = RankView(state)
    dock = window._dock("Ranks", view, Qt.LeftDockWidgetArea)
    window.resizeDocks([dock], [460], Qt.Horizontal)

    def show_rank(rank):
        window.state.open_trace(state.trace)
        window.setWindowTitle(f"{window.windowTitle().split(' · rank')[0]} · rank {rank}")
        window.poll()

    def show_iteration(iteration):  # the graph shows the iteration the dock compares
        window.state.set_time(iteration_end_moment(window.state.live_trace, iteration))
        window.poll()

    view.rankChanged.connect(show_rank)
    view.iterationChanged.connect(show_iteration)
    window.setWindowTitle(f"{window.windowTitle()} · rank {state.selected}")
    window.rank_view = view
    return view
