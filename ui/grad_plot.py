"""``GradPlot``: the gradient plots, one tab each: the selected gradient's values (bars when small,
else its histogram), its heatmap, its norm across iterations, and the gradient flow through the
model's parameters. What each tab shows comes from ``gradviz.app.plots``; a tab with nothing to show
says so in grey."""
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QScrollArea, QStackedWidget, QTabWidget, QVBoxLayout, QWidget

from gradviz.app import plots
from gradviz.summary import as_real

SMALL = 64
BAR = "#4a7bd0"
TEXT = "#202020"
# Flow bars: (mean, max) colours for a healthy, a vanishing and an exploding gradient.
FLOW_COLOURS = {"": ("#2f62b8", "#b9cdee"), "vanishing": ("#d98200", "#f7d9a6"),
                "exploding": ("#c0392b", "#f0b3ab")}
FLOW_ROW_PX = 22


def _plot():
    w = pg.PlotWidget(background="w")
    for side in ("left", "bottom", "top"):
        axis = w.getPlotItem().getAxis(side)
        axis.setTextPen(TEXT)
        axis.enableAutoSIPrefix(False)  # "value (x0.001)" reads worse than the numbers themselves
    return w


def _decade(x):
    return f"1e{round(math.log10(x))}"


class _Page(QStackedWidget):
    """A tab's content, or a short grey message in its place."""

    def __init__(self, content):
        super().__init__()
        self.message = QLabel()
        self.message.setAlignment(Qt.AlignCenter)
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #808080;")
        self.addWidget(self.message)
        self.addWidget(content)

    def say(self, text):
        self.message.setText(text)
        self.setCurrentIndex(0)

    def show_content(self):
        self.setCurrentIndex(1)


class GradPlot(QTabWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(180)
        self.values_plot = _plot()
        self.values_plot.getPlotItem().showGrid(x=False, y=True, alpha=0.3)
        self.heatmap_plot = _plot()
        self.image = pg.ImageItem(axisOrder="row-major")
        self.heatmap_plot.addItem(self.image)
        self.heatmap_plot.getViewBox().invertY(True)
        self.colorbar = pg.ColorBarItem(colorMap=pg.colormap.get("CET-D1"), interactive=False, width=12)
        self.colorbar.setImageItem(self.image, insert_in=self.heatmap_plot.getPlotItem())
        self.history_plot = _plot()
        self.history_plot.getPlotItem().showGrid(x=True, y=True, alpha=0.3)
        self.flow_plot = _plot()
        self.flow_plot.getPlotItem().showGrid(x=True, y=False, alpha=0.3)
        self.flow_plot.getViewBox().invertY(True)
        # The log axis goes on top: with many parameters the chart scrolls, and the top stays in view.
        self.flow_plot.getPlotItem().showAxis("top")
        self.flow_plot.getPlotItem().hideAxis("bottom")
        self.flow_legend = QLabel()
        self.flow_legend.setTextFormat(Qt.RichText)
        self.flow_legend.setWordWrap(True)
        self.flow_note = QLabel()
        self.flow_note.setStyleSheet(f"color: {TEXT};")
        self.flow_note.setWordWrap(True)
        self.flow_legend.setText("&nbsp; ".join(
            f"<span style='color:{c}'>■</span>&nbsp;{t}" for c, t in (
                (FLOW_COLOURS[""][0], "mean |grad|"), (FLOW_COLOURS[""][1], "max |grad|"),
                (FLOW_COLOURS["vanishing"][0], f"vanishing (mean &lt; {_decade(plots.VANISHING_MEAN)})"),
                (FLOW_COLOURS["exploding"][0], f"exploding (max &gt; {_decade(plots.EXPLODING_MAX)}, NaN or Inf)"))))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(self.flow_plot)
        flow = QWidget()
        box = QVBoxLayout(flow)
        box.setContentsMargins(4, 2, 0, 0)
        box.addWidget(self.flow_note)
        box.addWidget(self.flow_legend)
        box.addWidget(scroll, 1)
        self.pages = {}
        for name, content in (("Values", self.values_plot), ("Heatmap", self.heatmap_plot),
                              ("Norm over iterations", self.history_plot), ("Gradient flow", flow)):
            self.pages[name] = _Page(content)
            self.addTab(self.pages[name], name)
        self.bars = None
        self.shown = None  # (kind, x, heights) as last drawn: what the tests read
        self.heatmap_shown = None  # the image drawn
        self.history_shown = None  # (iterations, norms)
        self.flow_shown = None  # the FlowRows drawn
        self.show_value(None)
        self.show_tensor(None, None)
        self.show_flow(None)

    # -- the selected gradient ----------------------------------------------------------------------
    def show_value(self, value, title=""):
        """The Values/Histogram and Heatmap tabs for a gradient (a ``Value``, or None)."""
        pw = self.values_plot
        pw.clear()
        self.bars = self.shown = None
        pw.setTitle(title, color=TEXT, size="9pt")
        self._show_heatmap(value)
        if value is None:
            self.setTabText(0, "Values")
            return self.pages["Values"].say("Select a node or a tensor to see its gradient.")
        s = value.summary
        if value.array is not None and value.array.size <= SMALL:
            heights = as_real(value.array).ravel()
            x = np.arange(heights.size)
            kind = "values"
        else:
            heights = np.asarray(s.hist, dtype=float)
            edges = s.hist_edges()
            x = (edges[:-1] + edges[1:]) / 2
            kind = "histogram"
        width = (x[1] - x[0]) * 0.85 if x.size > 1 else 0.8
        self.bars = pg.BarGraphItem(x=x, height=np.nan_to_num(heights), width=width, brush=BAR)
        pw.addItem(self.bars)
        pw.getPlotItem().setLabel("bottom", "element" if kind == "values" else "gradient value")
        # Elements are whole numbers: a tick on each when they are few (not 0.5 between 0 and 1).
        few = kind == "values" and x.size <= 16
        pw.getPlotItem().getAxis("bottom").setTicks([[(int(i), str(int(i))) for i in x]] if few else None)
        pw.getPlotItem().setLabel("left", "value" if kind == "values" else
                                  "count" + (" (sampled)" if s.sampled else ""))
        self.setTabText(0, "Values" if kind == "values" else "Histogram")
        self.pages["Values"].show_content()
        self.shown = (kind, x, heights)

    def _show_heatmap(self, value):
        page = self.pages["Heatmap"]
        self.heatmap_shown = None
        if value is None:
            return page.say("No gradient selected.")
        img = plots.heatmap_image(value.array)
        if img is None:
            return page.say("Gradient array not kept (memory budget): only its summary is."
                            if value.array is None and value.summary.numel else
                            f"No 2-D gradient (shape {tuple(value.shape)}).")
        shape = tuple(value.shape)
        finite = img[np.isfinite(img)]
        m = float(np.abs(finite).max()) if finite.size else 1.0
        m = m if m > 0 else 1.0
        self.image.setImage(img, levels=(-m, m))
        self.image.setRect(-0.5, -0.5, img.shape[1], img.shape[0])  # integer ticks at pixel centres
        self.colorbar.setLevels((-m, m))
        pi = self.heatmap_plot.getPlotItem()
        note = ""
        if len(shape) == 4:
            kh, kw = shape[2:]
            shown = plots.tile_grid(shape)
            cut = [f"{n} of {total} {what}" for n, total, what in zip(shown, shape, ("out", "in")) if n < total]
            note = f": first {', '.join(cut)} channels" if cut else ""
            self._channel_ticks(pi.getAxis("left"), shown[0], kh + 1)
            self._channel_ticks(pi.getAxis("bottom"), shown[1], kw + 1)
            pi.setLabel("left", "output channel")
            pi.setLabel("bottom", f"input channel ({kh}×{kw} kernels)")
        else:
            for side, n in (("left", img.shape[0]), ("bottom", img.shape[1])):
                self._channel_ticks(pi.getAxis(side), n, 1) if n <= 16 else pi.getAxis(side).setTicks(None)
            pi.setLabel("left", "row")
            pi.setLabel("bottom", "column")
        h, w = img.shape
        self.heatmap_plot.getViewBox().setAspectLocked(len(shape) == 4 or max(h, w) <= 4 * min(h, w))
        pi.setTitle(f"shape {shape}{note}", color=TEXT, size="9pt")
        self.heatmap_plot.getViewBox().autoRange(padding=0.02)
        self.heatmap_shown = img
        page.show_content()

    @staticmethod
    def _channel_ticks(axis, n, pitch):
        step = max(1, math.ceil(n / 8))
        axis.setTicks([[(i * pitch + max(pitch - 2, 0) / 2, str(i)) for i in range(0, n, step)], []])

    def show_tensor(self, trace, key):
        """The Heatmap and Norm-over-iterations tabs for a graph key ('n5', 't3') of ``trace``."""
        try:
            value = plots.latest_grad(trace, key) if trace is not None and key is not None else None
        except (KeyError, TypeError):  # a key not in this trace
            value = None
        self._show_heatmap(value)
        page, pw = self.pages["Norm over iterations"], self.history_plot
        pw.clear()
        self.history_shown = None
        try:
            its, norms = plots.grad_norm_history(trace, key) if trace is not None and key is not None else ((), ())
        except KeyError:
            its, norms = (), ()
        if len(its) == 0:
            return page.say("No gradient reached this node in any backward pass."
                            if key is not None else "Select a node or a tensor to see its gradient's norm.")
        self.history_shown = (its, norms)
        ok = np.isfinite(norms)
        bad = ", ".join(f"{'NaN' if np.isnan(n) else 'Inf'} at iteration {i}" for i, n in zip(its[~ok], norms[~ok]))
        if not ok.any():
            return page.say(f"The gradient's norm is not finite: {bad}.")
        log = bool(ok.any() and (norms[ok] > 0).all() and norms[ok].max() > 1e3 * norms[ok].min())
        pi = pw.getPlotItem()
        pi.setLogMode(y=log)
        pw.plot(its[ok], norms[ok], pen=pg.mkPen(BAR, width=2), symbol="o", symbolSize=7, symbolBrush=BAR,
                symbolPen=None)
        pi.setTitle("‖grad‖₂ per iteration" + (f" · {bad}" if bad else ""),
                    color="#b00020" if bad else TEXT, size="9pt")
        pi.setLabel("bottom", "iteration")
        pi.setLabel("left", "L2 norm" + (" (log)" if log else ""))
        pi.getAxis("bottom").setTicks([[(int(i), str(int(i))) for i in its]] if len(its) <= 12 else None)
        page.show_content()

    # -- the whole model ------------------------------------------------------------------------------
    def show_flow(self, trace, pass_index=-1):
        """The Gradient flow tab: mean and max |grad| of every parameter in layer order, log scale."""
        page, pw = self.pages["Gradient flow"], self.flow_plot
        rows = plots.gradient_flow(trace, pass_index) if trace is not None else []
        if rows and rows == self.flow_shown and page.currentIndex() == 1:
            # The same bars (a training loop's next pass, a poll with nothing new): only the note.
            self.flow_shown = rows
            self._flow_note(trace, pass_index)
            return
        pw.clear()
        self.flow_shown = rows
        if not rows:
            return page.say("No backward pass yet." if trace is None or not trace.passes else
                            "No tensor received a gradient in this backward pass.")
        values = np.array([[r.mean_abs, r.max_abs] for r in rows])
        finite = values[np.isfinite(values) & (values > 0)]
        lo = math.floor(np.log10(finite.min())) - 1 if finite.size else -1
        hi = math.ceil(np.log10(finite.max())) if finite.size else 1
        hi = max(hi, lo + 2)
        with np.errstate(invalid="ignore"):
            logs = np.log10(np.where(values > 0, values, 10.0 ** lo))
        logs = np.where(np.isfinite(values), logs, hi)  # NaN and Inf reach the right edge
        y = np.arange(len(rows))
        for col, height in ((1, 0.8), (0, 0.45)):  # max behind, mean in front
            brushes = [FLOW_COLOURS[r.flag][col] for r in rows]
            pw.addItem(pg.BarGraphItem(x0=lo, x1=logs[:, col], y=y, height=height, brushes=brushes, pen=None))
        lines = getattr(self, "_flow_lines", None)
        if lines is None:  # made once and re-added: a label made anew each time raced pyqtgraph's paint
            lines = self._flow_lines = {
                label: pg.InfiniteLine(at, angle=90, pen=pg.mkPen("#808080", style=Qt.DashLine), label=label,
                                       labelOpts={"color": "#808080", "position": 0.06, "anchors": [(0, 0), (0, 0)]})
                for at, label in ((math.log10(plots.VANISHING_MEAN), "vanishing"),
                                  (math.log10(plots.EXPLODING_MAX), "exploding"))}
        for line in lines.values():
            if lo <= line.value() <= hi:
                pw.addItem(line)
        pi = pw.getPlotItem()
        pi.getAxis("left").setTicks([[(i, r.name + (" (NaN/Inf)" if r.nonfinite else "") +
                                       (f" · 0 for {r.zero_for} it." if r.zero_for else ""))
                                      for i, r in enumerate(rows)]])
        step = max(1, math.ceil((hi - lo) / 8))
        pi.getAxis("top").setTicks([[(k, f"1e{k}") for k in range(lo, hi + 1, step)], []])
        pi.setLabel("top", "|grad| (log scale)")
        self._flow_note(trace, pass_index)
        pw.setXRange(lo, hi, padding=0.02)
        pw.setYRange(-0.6, len(rows) - 0.4, padding=0)
        pw.setMinimumHeight(FLOW_ROW_PX * len(rows) + 90)
        page.show_content()

    def _flow_note(self, trace, pass_index):
        p = trace.passes[pass_index] if pass_index < 0 else trace._pass(pass_index)
        text = f"Backward pass {p.index} (iteration {p.iteration}), parameters in layer order" + \
            self._frozen_note(trace) + "."
        dead = plots.dead_note(trace, pass_index)
        if dead:
            text += "\n" + dead + "."
        if text != self.flow_note.text():
            self.flow_note.setText(text)

    @staticmethod
    def _frozen_note(trace):
        frozen = sum(1 for t in list(trace.tensors.values()) if t.kind == "frozen")
        return f"; {frozen} frozen parameters (no gradient) not shown" if frozen else ""
