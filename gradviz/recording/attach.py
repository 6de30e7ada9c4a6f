"""The one place a producer is wired to the frameworks a program uses: gradviz's engine through
its observer API at once, PyTorch through its hooks at once if it is imported, else as soon as it
is (``gradviz.record()`` and the debugger's child both attach through here)."""
from __future__ import annotations

import gc

from gradviz.adapters.engine import EngineRecording
from gradviz.adapters.torch import TorchAttachment


class Attachment:
    """A producer attached to the engine and to PyTorch; ``stop()`` detaches both (twice is harmless)."""

    def __init__(self, producer):
        self.producer = producer
        self._engine: EngineRecording | None = None
        self._torch: TorchAttachment | None = None
        self._froze = False

    def start(self) -> Attachment:
        # What is alive now (the frameworks' modules, the program's model) is moved out of the
        # garbage collector's sight until recording stops: a recording makes ~5 objects an event,
        # whose collections otherwise scan all of it again and again (with torch imported, a full
        # collection is ~100 ms; a small-op program ran one every step). Only if nobody else froze.
        self._froze = gc.get_freeze_count() == 0
        if self._froze:
            gc.freeze()
        self._engine = EngineRecording(self.producer).attach()
        self._torch = TorchAttachment(self.producer).start()
        return self

    def stop(self) -> None:
        self.producer.flush()  # a program that never synchronises still gets its summaries
        if self._torch is not None:
            self._torch.stop()
            self._torch = None
        if self._engine is not None:
            self._engine.detach()
            self._engine = None
        if getattr(self, "_froze", False):
            self._froze = False
            gc.unfreeze()  # (cyclic garbage made meanwhile of what was frozen is collected again)


def attach(producer) -> Attachment:
    """Attach ``producer`` to every framework now (and PyTorch when it gets imported)."""
    return Attachment(producer).start()
