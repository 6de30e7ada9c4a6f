"""The one place a producer is wired to the frameworks a program uses: gradviz's engine through
its observer API at once, PyTorch through its hooks at once if it is imported, else as soon as it
is (``gradviz.record()`` and the debugger's child both attach through here)."""
from __future__ import annotations

import gc

from gradviz.adapters.engine import EngineRecording
from gradviz.adapters.torch import TorchAttachment
from gradviz.trace.ranks import job_rank


# A recording makes several objects an event, thousands a step: at CPython's default threshold
# (700) the garbage collector's young collections come every few nodes and promote the recording's
# objects into full collections, which scan everything alive (about a million objects once torch is
# imported): ~200 ms a step on a small-op program, ~20 ms with this. The trace keeps what it is
# told, so the objects alive grow by a quarter every few steps, and CPython then makes its next
# middle-generation collection a full one (its third threshold, 10, is past): ~100 ms a step of the
# same program, amortised. While recording, a full collection waits for 100 middle ones (about
# 10 million objects made) instead. Only the timing changes: every object stays visible to
# gc.get_objects(), and cyclic garbage is collected as before (the long-lived kind later).
GC_YOUNG_THRESHOLD = 10_000
GC_OLD_THRESHOLD = 100


def _recording_thresholds(before):
    return (max(before[0], GC_YOUNG_THRESHOLD), before[1], max(before[2], GC_OLD_THRESHOLD))


class Attachment:
    """A producer attached to the engine and to PyTorch; ``stop()`` detaches both (twice is harmless)."""

    def __init__(self, producer):
        self.producer = producer
        self._engine: EngineRecording | None = None
        self._torch: TorchAttachment | None = None
        self._gc_before: tuple[int, ...] | None = None

    def start(self) -> Attachment:
        job = job_rank()
        if job is not None:  # a rank of a job (torchrun's environment): said before anything else
            self.producer.rank_known(job.rank, job.world_size, job.local_rank)
        self._gc_before = before = gc.get_threshold()
        if before[0]:  # (0: the program turned collections off)
            gc.set_threshold(*_recording_thresholds(before))
        self._engine = EngineRecording(self.producer).attach()
        self._torch = TorchAttachment(self.producer).start()
        return self

    def stop(self) -> None:
        self.producer.flush()  # a program that never synchronises still gets its summaries
        before, self._gc_before = self._gc_before, None
        if before is not None and before[0] and gc.get_threshold() == _recording_thresholds(before):
            gc.set_threshold(*before)  # (unless the program set its own meanwhile)
        if self._torch is not None:
            self._torch.stop()
            self._torch = None
        if self._engine is not None:
            self._engine.detach()
            self._engine = None


def attach(producer) -> Attachment:
    """Attach ``producer`` to every framework now (and PyTorch when it gets imported)."""
    return Attachment(producer).start()
