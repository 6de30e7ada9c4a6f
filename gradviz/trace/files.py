"""Opening recordings: a ``.gvz`` trace file as a ``Trace`` (``load``), or whichever of a trace
file and a torchviz DOT drawing a path names (``load_any``)."""
from __future__ import annotations

import os

from gradviz.trace.dot import load_dot
from gradviz.trace.gvz import StreamDecoder, TraceFormatError, TraceHeaderError
from gradviz.trace.model import DEFAULT_BUDGET, EVENT_BUDGET, Trace


def load(path, partial=False, budget_bytes=None, event_budget=EVENT_BUDGET) -> Trace:
    """Open a trace file as a ``Trace``, streaming: it is decoded a chunk at a time and each event
    applied as it comes, so the arrays held are those within ``budget_bytes`` (the oldest dropped
    first, ``Trace.values`` counts them), never the whole file. With ``partial``, a cut or corrupt
    file gives the trace of its complete events before the first bad frame (a file that is not a
    gradviz trace of a format version this reads still raises ``TraceFormatError``). Past
    ``event_budget`` events, the oldest whole iterations are forgotten (``Trace``; None: never)."""
    trace = Trace(DEFAULT_BUDGET if budget_bytes is None else budget_bytes, event_budget=event_budget)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        dec = StreamDecoder(total_size=size, on_array=trace.values.add)
        left = size
        while True:
            chunk = f.read(min(CHUNK, left)) if left > 0 else b""
            left -= len(chunk)
            try:
                events = dec.feed(chunk) if chunk else []
                if not chunk:
                    dec.finish()
            except TraceHeaderError:
                raise  # not a trace of a format this reads: nothing to salvage, even with partial
            except TraceFormatError as exc:
                _notes(trace, dec)
                if _apply(trace, exc.events, partial) and not partial:
                    raise
                return trace
            _notes(trace, dec)
            if not _apply(trace, events, partial) or not chunk:
                return trace


CHUNK = 1 << 18  # bytes read at a time (the decoder holds a few times this at most, beside the frame it is on)


def _notes(trace, dec):
    for note in dec.notes:
        trace.file_notes.take(note)
    dec.notes.clear()


def _apply(trace, events, partial):
    """Apply events; False once they stop forming a consistent trace (with ``partial``: the trace
    keeps what came before, as for a corrupt frame)."""
    try:
        trace.extend(events)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if not partial:
            raise TraceFormatError(f"events do not form a consistent trace: {exc!r}") from None
        return False
    return True


def is_dot(path) -> bool:
    return os.path.splitext(path)[1].lower() in (".dot", ".gv")


def load_any(path, event_budget=EVENT_BUDGET) -> Trace:
    """A trace file (.gvz), or a torchviz DOT drawing (.dot, .gv) as a graph without values."""
    return load_dot(path) if is_dot(path) else load(path, event_budget=event_budget)
