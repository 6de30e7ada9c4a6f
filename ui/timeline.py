"""``TimelineBar``: a slider over the recorded events, for time travel. Dragging it (or Left/Right
on it) shows the moment after that many events; "Live" snaps back to the end and follows new events.
It renders a ``gradviz.timeline.Timeline`` and says where the user is with ``positionChanged``:
None for live, else the position k."""
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QStyle, QStyleOptionSlider, QWidget


class MarkedSlider(QSlider):
    """A horizontal slider with a tick under each of ``marks`` (positions), where QSlider only
    draws evenly spaced ones."""

    def __init__(self, parent=None):
        super().__init__(Qt.Horizontal, parent)
        self.marks = []
        self.setMinimumHeight(28)

    def set_marks(self, marks):
        if marks != self.marks:
            self.marks = marks
            self.update()

    def paintEvent(self, event):
        super().paintEvent(event)
        if not self.marks or self.maximum() <= self.minimum():
            return
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        groove = self.style().subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderGroove, self)
        handle = self.style().subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderHandle, self)
        span = groove.width() - handle.width()
        x0 = groove.x() + handle.width() // 2
        painter = QPainter(self)
        painter.setPen(QPen(QColor("#8a6d00"), 1))
        for position, _ in self.marks:
            x = x0 + QStyle.sliderPositionFromValue(self.minimum(), self.maximum(), position, span)
            painter.drawLine(x, self.height() - 7, x, self.height() - 1)
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
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box = QHBoxLayout(self)
        box.setContentsMargins(6, 2, 6, 2)
        box.addWidget(self.live)
        box.addWidget(self.slider, 1)
        box.addWidget(self.label)
        self.slider.valueChanged.connect(self._moved)
        self.live.toggled.connect(self._live_toggled)
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
        if self.live.isChecked():
            self.slider.setValue(n)
        self.slider.blockSignals(False)
        self.slider.set_marks(timeline.marks())
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

    def _moved(self, k):
        if self.live.isChecked():
            self.live.blockSignals(True)
            self.live.setChecked(False)
            self.live.blockSignals(False)
        self._show_label()
        self.positionChanged.emit(k)

    def _live_toggled(self, on):
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
        self.label.setText(f"{where} · {tl.describe(k)}")
