"""``GradPlot``: the selected gradient: its values as bars when small, else its histogram."""
import numpy as np
import pyqtgraph as pg

SMALL = 64


class GradPlot(pg.PlotWidget):
    def __init__(self, parent=None):
        super().__init__(parent, background="w")
        self.setMinimumHeight(180)
        self.getPlotItem().showGrid(x=False, y=True, alpha=0.3)
        self.bars = None
        self.shown = None  # (kind, x, heights) as last drawn: what the tests read

    def show_value(self, value, title=""):
        self.clear()
        self.bars = None
        self.shown = None
        self.setTitle(title, color="#202020", size="9pt")
        if value is None:
            return
        s = value.summary
        if value.array is not None and value.array.size <= SMALL:
            heights = np.asarray(value.array, dtype=float).ravel()
            x = np.arange(heights.size)
            kind = "values"
        else:
            heights = np.asarray(s.hist, dtype=float)
            edges = s.hist_edges()
            x = (edges[:-1] + edges[1:]) / 2
            kind = "histogram"
        width = (x[1] - x[0]) * 0.85 if x.size > 1 else 0.8
        self.bars = pg.BarGraphItem(x=x, height=np.nan_to_num(heights), width=width, brush="#4a7bd0")
        self.addItem(self.bars)
        self.getPlotItem().setLabel("bottom", "element" if kind == "values" else "gradient value")
        self.shown = (kind, x, heights)
