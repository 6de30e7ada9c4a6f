"""``gradviz.record()``: listen to gradviz's engine while a block runs and build a ``Trace``."""
from __future__ import annotations

from gradviz.adapters.engine import EngineAdapter
from gradviz.adapters.weak import NAMES
from gradviz.recording.attach import attach
from gradviz.recording.producer import Producer
from gradviz.trace.gvz import TraceWriter
from gradviz.trace.model import DEFAULT_BUDGET, Trace

_active: list[Recorder] = []


class Recorder:
    """``with gradviz.record() as rec: ...`` then ``rec.trace``. ``values="full"`` keeps full arrays
    within ``budget_bytes`` (oldest dropped first); ``values="summaries"`` keeps summaries only.
    ``path`` streams every event to a trace file as it happens, so a crash loses nothing."""

    def __init__(self, values="full", budget_bytes=DEFAULT_BUDGET, path=None, sink=None):
        if values not in ("full", "summaries"):
            raise ValueError(f"values must be 'full' or 'summaries', got {values!r}")
        self.values = values
        self.trace = Trace(budget_bytes)
        self.path = path
        self._extra_sink = sink
        self._writer = None
        self._attachment = None

    def _on_event(self, e):
        self.trace.apply(e)
        if self._writer is not None:
            self._writer.write(e)
        if self._extra_sink is not None:
            self._extra_sink(e)

    def start(self):
        if _active:
            raise RuntimeError("gradviz is already recording: recordings cannot be nested")
        if self.path is not None:
            self._writer = TraceWriter(self.path)
        self.producer = Producer(EngineAdapter(), self._on_event, keep_arrays=self.values == "full")
        self._attachment = attach(self.producer)
        _active.append(self)
        return self

    def stop(self):
        if self._attachment is not None:
            self._attachment.stop()
            self._attachment = None
        if self in _active:
            _active.remove(self)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def record(values="full", budget_bytes=DEFAULT_BUDGET, path=None):
    return Recorder(values=values, budget_bytes=budget_bytes, path=path)


def name(tensor, label):
    """Give a tensor the name gradviz shows for it (parameters are named after their module path,
    other leaves after the variable that held them, unless named here). The name is kept beside the
    tensor, not in it, for as long as it lives."""
    if not NAMES.set(tensor, str(label)):
        raise TypeError(f"gradviz.name: a {type(tensor).__name__} cannot be named (it cannot be weakly referenced)")
    return tensor
