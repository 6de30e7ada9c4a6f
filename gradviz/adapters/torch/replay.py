"""Running a PyTorch node's forward again, in float64, for a gradient check (``replay``)."""
from __future__ import annotations

from gradviz.adapters.protocol import NotCheckable


def replay(torch, node):
    raise NotCheckable("PyTorch nodes cannot be checked yet")
