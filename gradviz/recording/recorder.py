"""``gradviz.record()``: listen to gradviz's engine while a block runs and build a ``Trace``."""
from __future__ import annotations

from gradviz.adapters.engine import EngineAdapter
from gradviz.adapters.weak import NAMES
from gradviz.recording.attach import attach
from gradviz.recording.producer import Producer
from gradviz.trace.budget import DEFAULT_FILE_BUDGET, BudgetedTraceWriter, ValuePolicy, parse_iterations
from gradviz.trace.model import DEFAULT_BUDGET, Trace
from gradviz.trace.ranks import job_rank, rank_path

_active: list[Recorder] = []


class Recorder:
    """``with gradviz.record() as rec: ...`` then ``rec.trace``. ``values="full"`` keeps full arrays
    within ``budget_bytes`` (oldest dropped first); ``values="summaries"`` keeps summaries only.
    ``path`` streams every event to a trace file as it happens, so a crash loses no event; in a
    rank of a distributed job, to that rank's own file (``run.gvz`` -> ``run.rank1.gvz``, see
    ``path_written``). The file stays within ``file_budget`` bytes (None: unbounded) by a policy
    that keeps full arrays for the first and last iterations, those around an anomaly and those in
    ``keep_values`` (e.g. "0,10,100-120" or [(0, 0), (100, 120)]), summaries for the rest
    (docs/recording.md)."""

    def __init__(self, values="full", budget_bytes=DEFAULT_BUDGET, path=None, sink=None,
                 file_budget=DEFAULT_FILE_BUDGET, keep_values=()):
        if values not in ("full", "summaries"):
            raise ValueError(f"values must be 'full' or 'summaries', got {values!r}")
        keep = parse_iterations(keep_values) if isinstance(keep_values, str) else tuple(map(tuple, keep_values))
        self.policy = ValuePolicy(file_budget=file_budget, keep=keep)
        self.values = values
        self.trace = Trace(budget_bytes)
        self.path = path
        self._extra_sink = sink
        self._writer = None
        self._attachment = None
        self.path_written = None  # the file written: ``path``, or its rank's in a distributed job

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
            self.path_written = _rank_file(self.path)
            self._writer = BudgetedTraceWriter(self.path_written, self.policy)
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


def _rank_file(path):
    """``path``, or the file of this process's rank when it is one of a distributed job: known from
    torchrun's environment, or from torch.distributed's process group when the program made one."""
    import os
    import sys
    if not isinstance(path, (str, bytes, os.PathLike)):  # a file object: written as it is
        return path
    job = job_rank()
    if job is not None:
        return rank_path(path, job.rank)
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None)
    try:
        if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return rank_path(path, dist.get_rank())
    except (RuntimeError, ValueError):
        pass
    return os.fspath(path)


def record(values="full", budget_bytes=DEFAULT_BUDGET, path=None, file_budget=DEFAULT_FILE_BUDGET, keep_values=()):
    return Recorder(values=values, budget_bytes=budget_bytes, path=path, file_budget=file_budget,
                    keep_values=keep_values)


def name(tensor, label):
    """Give a tensor the name gradviz shows for it (parameters are named after their module path,
    other leaves after the variable that held them, unless named here). The name is kept beside the
    tensor, not in it, for as long as it lives."""
    if not NAMES.set(tensor, str(label)):
        raise TypeError(f"gradviz.name: a {type(tensor).__name__} cannot be named (it cannot be weakly referenced)")
    return tensor
