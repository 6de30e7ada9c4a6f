"""The one place a producer is wired to the frameworks a program uses: gradviz's engine through
its observer API at once, PyTorch through its hooks at once if it is imported, else as soon as it
is (``gradviz.record()`` and the debugger's child both attach through here)."""
from __future__ import annotations

from gradviz.adapters.engine import EngineRecording
from gradviz.adapters.torch import TorchAttachment


class Attachment:
    """A producer attached to the engine and to PyTorch; ``stop()`` detaches both (twice is harmless)."""

    def __init__(self, producer):
        self.producer = producer
        self._engine: EngineRecording | None = None
        self._torch: TorchAttachment | None = None

    def start(self) -> Attachment:
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


def attach(producer) -> Attachment:
    """Attach ``producer`` to every framework now (and PyTorch when it gets imported)."""
    return Attachment(producer).start()
