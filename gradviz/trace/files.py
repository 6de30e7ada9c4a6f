"""Opening recordings: a ``.gvz`` trace file as a ``Trace`` (``load``), or whichever of a trace
file and a torchviz DOT drawing a path names (``load_any``)."""
from __future__ import annotations

import os

from gradviz.trace.dot import load_dot
from gradviz.trace.gvz import TraceFormatError, read_events
from gradviz.trace.model import DEFAULT_BUDGET, Trace


def load(path, partial=False, budget_bytes=None) -> Trace:
    """Open a trace file as a ``Trace``. With ``partial``, a cut or corrupt file gives the trace of
    its complete events before the first bad frame (a file that is not a gradviz trace of this
    format version still raises ``TraceFormatError``)."""
    events = read_events(path, partial=partial)
    trace = Trace(DEFAULT_BUDGET if budget_bytes is None else budget_bytes)
    try:
        trace.extend(events)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if not partial:
            raise TraceFormatError(f"events do not form a consistent trace: {exc!r}") from None
    return trace


def is_dot(path) -> bool:
    return os.path.splitext(path)[1].lower() in (".dot", ".gv")


def load_any(path) -> Trace:
    """A trace file (.gvz), or a torchviz DOT drawing (.dot, .gv) as a graph without values."""
    return load_dot(path) if is_dot(path) else load(path)
