"""gradviz: a visualiser and debugger for autograd.

``with gradviz.record() as rec:`` records what gradviz's engine does; ``rec.trace`` holds the graph,
the backward passes and the gradients; ``trace.save(path)`` and ``gradviz.load(path)`` keep it.

This package is the facade above every layer: its names are loaded on first use, so that
``import gradviz.engine`` (or any one layer) loads only what it needs, and the layer contracts in
pyproject.toml see each layer's own imports rather than everything through this module.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_WHERE = {
    "Debugger": "gradviz.debug.debugger", "Pause": "gradviz.debug.debugger",
    "Recorder": "gradviz.recording.recorder", "name": "gradviz.recording.recorder",
    "record": "gradviz.recording.recorder",
    "Trace": "gradviz.trace.model", "load": "gradviz.trace.files", "TraceFormatError": "gradviz.trace.gvz",
}

__all__ = ["record", "Recorder", "Trace", "load", "TraceFormatError", "name", "Debugger", "Pause", "__version__"]

if TYPE_CHECKING:
    from gradviz.debug.debugger import Debugger, Pause
    from gradviz.recording.recorder import Recorder, name, record
    from gradviz.trace.files import load
    from gradviz.trace.gvz import TraceFormatError
    from gradviz.trace.model import Trace


def __getattr__(attr: str):
    where = _WHERE.get(attr)
    if where is None:
        raise AttributeError(f"module 'gradviz' has no attribute {attr!r}")
    value = getattr(importlib.import_module(where), attr)
    globals()[attr] = value  # loaded once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
