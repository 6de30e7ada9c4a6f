"""``TimelineBar``: a slider over the recorded events, for time travel. Dragging it (or Left/Right
on it) shows the moment after that many events; "Live" snaps back to the end and follows new events.
It renders a ``gradviz.app.timeline.Timeline`` and says where the user is with ``positionChanged``:
None for live, else the position k. While the slider moves, ``positionChanged`` comes at most every
``THROTTLE_MS`` with the latest position (the label follows every step), so a fast drag over a long
run shows a moment per frame instead of queueing one per event."""
import bisect
from operator import itemgetter

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QStyle, QStyleOptionSlider, QWidget


THROTTLE_MS = 30
LABEL_MAX = 460  # pixels
TICK_GAP = 4  # pixels at least between two ticks: a long run's hundreds of marks thinned


class MarkedSlider(QSlider):
    """A horizontal slider with a tick under each of ``marks`` (positions), where QSlider only
    draws evenly spaced ones; ticks at least ``TICK_GAP`` pixels apart however many marks (a long
    run has tens of thousands)."""

    def __init__(self, parent=None):
        super().__init__(Qt.Horizontal, parent)
        self.marks = []
        self.forgotten = 0  # positions before this one are of forgotten iterations: drawn grey
        self._ordered = False  # marks in order of position (a timeline's): ticks found by bisection
        self._columns = None  # ((marks, range, span), the x of each pixel column with a tick)
        self.setMinimumHeight(28)

    def set_marks(self, marks, ordered=False):
        """``marks``: [(position, label)]; ``ordered``: in order of position, and a list that
        only grows (a timeline's own, ``Timeline.marks_so_far``): kept, not copied, and each
        paint costs a bisection per tick drawn, not a pass over every mark."""
        if marks is self.marks or marks != self.marks:
            self.marks = marks
            self._ordered = ordered
            self.update()

    def paintEvent(self, event):
        super().paintEvent(event)
        if self.maximum() <= self.minimum():
            return
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        groove = self.style().subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderGroove, self)
        handle = self.style().subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderHandle, self)
        span = groove.width() - handle.width()
        x0 = groove.x() + handle.width() // 2
        if self.forgotten > self.minimum() and span > 0:  # forgotten iterations: a grey band, no ticks
            painter = QPainter(self)
            width = (self.forgotten - self.minimum()) * span // (self.maximum() - self.minimum())
            painter.fillRect(x0, 2, max(width, 2), self.height() - 4, QColor(128, 128, 128, 110))
            painter.end()
        if not self.marks:
            return
        key = (len(self.marks), id(self.marks), self.marks[0][0], self.minimum(), self.maximum(), span)
        if self._columns is None or self._columns[0] != key:
            lo, size = self.minimum(), self.maximum() - self.minimum()
            kept, last = [], None
            marks = self.marks
            if self._ordered and span > 0:  # the same ticks, by jumping to the next column's first mark
                i, n = 0, len(marks)
                while i < n:
                    dx = (marks[i][0] - lo) * span // size
                    kept.append(dx)
                    # the first position p whose column (p - lo) * span // size is TICK_GAP further
                    i = bisect.bisect_left(marks, lo - (-(dx + TICK_GAP) * size // span), i + 1, n,
                                           key=itemgetter(0))
            else:
                for dx in sorted({(position - lo) * span // size for position, _ in marks}):
                    if last is None or dx - last >= TICK_GAP:  # ticks a few pixels apart, not a solid bar
                        kept.append(dx)
                        last = dx
            self._columns = (key, kept)
        painter = QPainter(self)
        painter.setPen(QPen(QColor("#8a6d00"), 1))
        for dx in self._columns[1]:
            painter.drawLine(x0 + dx, self.height() - 7, x0 + dx, self.height() - 1)
        painter.end()


class TimelineBar(QWidget):
    positionChanged = Signal(object)  # None: live; else k, the number of events shown

    def __init__(self, timeline=None, parent=None):
        super().__init__(parent)
        self.timeline = None
        self.slider = MarkedSlider()
        self.slider.setFocusPolicy(Qt.StrongFocus)
        self.slider.setPageStep(10)
        self.live = QCheckBox("Live")
        self.live.setChecked(True)
        self.live.setToolTip("Follow the program as it runs; uncheck or drag the slider to go back in time")
        self.label = QLabel()
        self.label.setMinimumWidth(320)
        self.label.setMaximumWidth(LABEL_MAX)  # the slider keeps the rest: long lines are elided
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box = QHBoxLayout(self)
        box.setContentsMargins(6, 2, 6, 2)
        box.addWidget(self.live)
        box.addWidget(self.slider, 1)
        box.addWidget(self.label)
        self.slider.valueChanged.connect(self._moved)
        self.live.toggled.connect(self._live_toggled)
        self._throttle = QTimer(self)
        self._throttle.setSingleShot(True)
        self._throttle.setInterval(THROTTLE_MS)
        self._throttle.timeout.connect(self._emit_pending)
        self._marked = None  # (timeline, mark count) the slider's marks were taken from
        self._refused = ""  # why the slider was stopped short of where it was dragged, said once
        if timeline is not None:
            self.refresh(timeline)

    @property
    def position(self):
        """None while live, else the position shown."""
        return None if self.live.isChecked() else self.slider.value()

    def refresh(self, timeline):
        """Take in events that arrived: the range grows; live follows the end, a position in the
        past stays where the user left it."""
        self.timeline = timeline
        n = len(timeline)
        self.slider.blockSignals(True)
        self.slider.setMaximum(n)
        if self.slider.forgotten != timeline.first():
            self.slider.forgotten = timeline.first()
            self.slider.update()
        if self.live.isChecked():
            self.slider.setValue(n)
        self.slider.blockSignals(False)
        if self._marked != (timeline, timeline.mark_count()):
            self._marked = (timeline, timeline.mark_count())
            self.slider.set_marks(timeline.marks_so_far(), ordered=True)
        self._show_label()

    def set_position(self, k):
        """Show position ``k`` (None: live), as if the user had moved there."""
        if k is None:
            self.live.setChecked(True)
        else:
            self.slider.blockSignals(True)
            self.slider.setValue(k)
            self.slider.blockSignals(False)
            self._moved(self.slider.value())
            self._emit_pending()  # asked for: now

    def _moved(self, k):
        tl = self.timeline
        if tl is not None and k < tl.first():  # not into forgotten iterations: their first kept moment
            self.slider.blockSignals(True)
            self.slider.setValue(tl.first())
            self.slider.blockSignals(False)
            self._refused = tl.forgotten_message()
        if self.live.isChecked():
            self.live.blockSignals(True)
            self.live.setChecked(False)
            self.live.blockSignals(False)
        self._show_label()
        if not self._throttle.isActive():
            self._throttle.start()

    def _emit_pending(self):
        self._throttle.stop()
        if not self.live.isChecked():
            self.positionChanged.emit(self.slider.value())

    def _live_toggled(self, on):
        self._throttle.stop()
        if on:
            self.slider.blockSignals(True)
            self.slider.setValue(self.slider.maximum())
            self.slider.blockSignals(False)
        self._show_label()
        self.positionChanged.emit(None if on else self.slider.value())

    def _show_label(self):
        tl = self.timeline
        if tl is None:
            self.label.setText("")
            return
        n = len(tl)
        k = n if self.live.isChecked() else min(self.slider.value(), n)
        where = "live" if self.live.isChecked() else f"{k} / {n}"
        text = f"{where} · {tl.describe(k)}"
        if self._refused:
            text, self._refused = f"{where} · {self._refused}", ""
        self.label.setToolTip(text)
        self.label.setText(self.label.fontMetrics().elidedText(text, Qt.ElideRight, LABEL_MAX - 8))
