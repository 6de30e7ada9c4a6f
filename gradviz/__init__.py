"""gradviz: a visualiser and debugger for autograd.

``with gradviz.record() as rec:`` records what gradviz's engine does; ``rec.trace`` holds the graph,
the backward passes and the gradients; ``trace.save(path)`` and ``gradviz.load(path)`` keep it.
"""
__version__ = "0.1.0"

from gradviz.debug.debugger import Debugger, Pause  # noqa: E402
from gradviz.record.recorder import Recorder, name, record  # noqa: E402
from gradviz.trace.model import Trace  # noqa: E402
from gradviz.trace.files import load  # noqa: E402
from gradviz.trace.gvz import TraceFormatError  # noqa: E402

__all__ = ["record", "Recorder", "Trace", "load", "TraceFormatError", "name", "Debugger", "Pause", "__version__"]
