"""Trace files within a budget (``gradviz record --file-budget``, ``gradviz.record(file_budget=)``).

Which iterations keep their full arrays in the file, by a fixed policy (docs/recording.md):

- the first ``first`` iterations (default 1) and the last ``last`` (default 2);
- around each anomaly's onset (the first NaN or Inf in an iteration whose previous one had none),
  ``around`` iterations before it (default 2), its own, and ``around`` after it;
- the iterations a user asks for (``--keep-values 0,10,100-120``);
- summaries only for the rest. Full arrays take at most half of the budget (``ARRAY_SHARE``);
  an array that would go over it is written as its summary only, and counted.

The last iterations are not known until the end, so the most recent ``max(last - 1, around)``
iterations' arrays wait in a side file (one unlinked temporary file per iteration, beside the
trace), their events already in the trace with each value naming its array by a *ref* (format
version 2). An iteration that falls out of that window has its side file closed and a note says
its refs are gone; at an anomaly's onset, and at the end for the last ones, the side files' array
frames are appended to the trace. A program killed before the end loses only those waiting arrays,
never an event.

When even the events outgrow the budget, the oldest iterations go: the file is rewritten from an
iteration's start on (compacted to half the budget), behind a preamble that re-announces the
leaves' AccumulateGrad nodes and their tensors (created once, used in every iteration) and a note
saying how many events were dropped. A file object target (not a path) cannot be compacted.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass

from gradviz import events as ev
from gradviz.trace.gvz import (INLINE, SUMMARY_ONLY, encode_array, encode_event, encode_note, file_header,
                               values_of)

DEFAULT_FILE_BUDGET = 512 * 2**20
ARRAY_SHARE = 0.5  # of the file budget, the most full arrays may take: the rest is for the events
COMPACT_TO = 0.5  # of the file budget, what a compaction keeps
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text):
    """Bytes of '512M', '1.5G', '100k', '4096' (binary units, an optional 'B' or 'iB'); None for
    '0' or 'none' (no budget). Raises ValueError naming what is wrong."""
    t = str(text).strip().lower()
    if t in ("0", "none", "unbounded"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", t)
    if m is None:
        raise ValueError(f"not a size: {text!r} (say e.g. 512M, 2G, 100k, or none)")
    n = int(float(m.group(1)) * _UNITS[m.group(2)])
    return n if n > 0 else None


def parse_iterations(text):
    """Iterations '0,10,100-120' as inclusive (first, last) ranges. Raises ValueError."""
    ranges = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if m is None:
            raise ValueError(f"not an iteration or a range of them: {part!r} (say e.g. 0,10,100-120)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"an empty range of iterations: {part!r}")
        ranges.append((lo, hi))
    return tuple(ranges)


def ranges_text(ranges):
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def to_ranges(indexes):
    """Sorted inclusive [first, last] ranges of a set of integers."""
    out = []
    for i in sorted(indexes):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


@dataclass(frozen=True)
class ValuePolicy:
    """Which iterations keep full arrays in a trace file, within ``file_budget`` bytes (None: no
    budget, every array kept, as before version 2)."""

    file_budget: int | None = DEFAULT_FILE_BUDGET
    first: int = 1
    last: int = 2
    around: int = 2
    keep: tuple = ()  # inclusive (first, last) ranges a user asked for

    def __post_init__(self):
        if self.file_budget is not None and self.file_budget < 4096:
            raise ValueError(f"a file budget of {self.file_budget} bytes is too small (4096 at least)")
        if min(self.first, self.last, self.around) < 0:
            raise ValueError("first, last and around must be >= 0")

    def asked(self, i):
        return any(lo <= i <= hi for lo, hi in self.keep)

    def note(self):
        return {"note": "policy", "file_budget": self.file_budget, "first": self.first, "last": self.last,
                "around_anomaly": self.around, "keep": [list(r) for r in self.keep]}


class _Waiting:
    """One recent iteration's arrays, as array frames in an unlinked side file."""

    def __init__(self, folder):
        self.file = tempfile.TemporaryFile(dir=folder, prefix=".gradviz-arrays-")  # noqa: SIM115 (closed by drop)
        self.nbytes = 0
        self.first_ref = self.end_ref = None

    def add(self, ref, frame):
        self.file.write(frame)
        self.nbytes += len(frame)
        self.first_ref = ref if self.first_ref is None else self.first_ref
        self.end_ref = ref + 1

    def frames(self):
        self.file.seek(0)
        while True:
            chunk = self.file.read(1 << 20)
            if not chunk:
                return
            yield chunk

    def drop(self):
        self.file.close()


class BudgetedTraceWriter:
    """A ``TraceWriter`` that keeps a trace file within its budget by ``policy`` (see the module)."""

    def __init__(self, target, policy=None):
        self.policy = policy or ValuePolicy()
        self._path = os.fspath(target) if isinstance(target, (str, os.PathLike)) else None
        self._f = open(self._path, "wb") if self._path else target  # noqa: SIM115 (closed by close())
        self._folder = os.path.dirname(os.path.abspath(self._path)) if self._path else None
        self.size = 0
        self.iteration = -1
        self._seen = 0  # iterations started
        self._committed = True  # this iteration's arrays go straight into the file
        self._anomaly_until = -1
        self._nonfinite = self._prev_nonfinite = False
        self._waiting = {}  # iteration -> _Waiting, oldest first
        self._waiting_total = 0  # their bytes
        self._next_ref = 0
        self.array_bytes = 0  # full arrays' bytes in the file
        self._array_marks = []  # (offset, bytes) of arrays in the file, for compaction
        self.full_iterations = set()  # iterations with arrays in the file
        self.over_budget = 0  # arrays written as their summary only: the array share was full
        self.events = 0  # events given to write
        self.events_dropped = 0  # by compaction, the oldest first
        self.dropped_iterations = None  # [first, last] iterations compaction dropped
        self._starts = []  # (offset, iteration, events before it) of each IterationStarted in the file
        self._accumulators = {}  # node id -> NodeCreated of a leaf's AccumulateGrad (made once)
        self._described = {}  # tensor id -> its latest TensorDescribed, for the accumulators' leaves
        self._compact_floor = 0  # no compaction before the file is this large (one that could not help)
        self._closed = False
        self._pending_inline = 0  # bytes of arrays going inline into the frame being encoded
        self._iteration_bytes = self._largest = 0  # arrays' bytes in this iteration, in the largest before
        self._write(file_header())
        self._write(encode_note(self.policy.note()))
        self._f.flush()

    # -- the policy --------------------------------------------------------------------------
    @property
    def _budget(self):
        return self.policy.file_budget

    def _limit(self):  # the events' and arrays' bytes: the rest of the budget is for the notes
        return self._budget - min(self._budget // 16, 1 << 16)

    def _array_cap(self):
        return int(self._budget * ARRAY_SHARE)

    def _waiting_bytes(self):
        return self._waiting_total  # (kept as they come and go: this is asked three times an array)

    def _window(self):
        return max(self.policy.last - 1, self.policy.around)

    def _start_iteration(self, index):
        self._largest = max(self._largest, self._iteration_bytes)
        self._iteration_bytes = 0
        self._prev_nonfinite, self._nonfinite = self._nonfinite, False
        self.iteration = index
        self._seen += 1
        p = self.policy
        self._committed = self._seen <= p.first or p.asked(index) or index <= self._anomaly_until
        for i in [i for i in self._waiting if i < index - self._window()]:
            self._drop_waiting(i)

    def _drop_waiting(self, i):
        w = self._waiting.pop(i)
        self._waiting_total -= w.nbytes
        w.drop()
        if w.first_ref is not None:
            self._write(encode_note({"note": "arrays_dropped", "iteration": i, "refs": [w.first_ref, w.end_ref]}))

    def _flush_waiting(self, i):
        w = self._waiting.pop(i)
        self._waiting_total -= w.nbytes
        start = self.size
        for chunk in w.frames():
            self._write(chunk)
        w.drop()
        self._array_marks.append((start, w.nbytes))
        self.array_bytes += w.nbytes
        self.full_iterations.add(i)

    def _onset(self):
        """NaN or Inf first appear in this iteration, none in the last: keep what led here."""
        self._anomaly_until = self.iteration + self.policy.around
        for i in sorted(self._waiting):
            if i >= self.iteration - self.policy.around:
                self._flush_waiting(i)
        self._committed = True

    def _place(self, value):
        nbytes = value.array.nbytes
        self._iteration_bytes += nbytes
        if self._committed:
            # Room stays for the last iterations, which come at the end: as many of the largest yet.
            reserve = max(self._waiting_bytes(), self._largest * self.policy.last)
            if self.array_bytes + self._pending_inline + reserve + nbytes > self._array_cap():
                self.over_budget += 1
                return SUMMARY_ONLY
            self.full_iterations.add(self.iteration)
            self._pending_inline += nbytes
            return INLINE
        frame = encode_array(self._next_ref, value.array)
        if self.array_bytes + self._waiting_total + len(frame) > self._array_cap():
            for i in sorted(self._waiting):  # room for the newest: the oldest waiting iterations go
                if self.array_bytes + self._waiting_bytes() + len(frame) <= self._array_cap() or i == self.iteration:
                    break
                self._drop_waiting(i)
        if self.array_bytes + self._waiting_bytes() + len(frame) > self._array_cap():
            self.over_budget += 1
            return SUMMARY_ONLY
        w = self._waiting.get(self.iteration)
        if w is None:
            w = self._waiting[self.iteration] = _Waiting(self._folder)
        ref = self._next_ref
        self._next_ref += 1
        w.add(ref, frame)
        self._waiting_total += len(frame)
        return ref

    # -- writing -----------------------------------------------------------------------------
    def _write(self, data):
        self._f.write(data)
        self.size += len(data)

    def write(self, e):
        t = type(e)
        self.events += 1
        if t is ev.IterationStarted:
            self._start_iteration(e.index)
            self._starts.append((self.size, e.index, self.events - 1))
            leaves = {a.output for a in self._accumulators.values()}
            self._described = {tid: d for tid, d in self._described.items() if tid in leaves}
        elif t is ev.NodeCreated and e.kind == "accumulate_grad":
            self._accumulators[e.id] = e
        elif t is ev.TensorDescribed:
            self._described[e.id] = e
        arrays = False
        for v in values_of(e):
            if v is None:
                continue
            if not self._nonfinite and (v.summary.nan or v.summary.inf):
                self._nonfinite = True
                if not self._prev_nonfinite and self._budget is not None:
                    self._onset()
            if v.array is not None:
                arrays = True
        if self._budget is None or not arrays:
            frame = encode_event(e)
        else:
            self._pending_inline = 0
            start = self.size
            frame = encode_event(e, self._place)
            if self._pending_inline:
                self._array_marks.append((start, self._pending_inline))
                self.array_bytes += self._pending_inline
        self._write(frame)
        self._f.flush()
        if self._budget is not None and self.size + self._waiting_bytes() > max(self._limit(), self._compact_floor):
            self._compact()

    # -- compaction --------------------------------------------------------------------------
    def _preamble(self, cut_iteration, events_dropped):
        leaves = {a.output for a in self._accumulators.values()}
        parts = [file_header(), encode_note(self.policy.note()),
                 encode_note({"note": "events_dropped", "events": events_dropped,
                              "iterations": list(self.dropped_iterations)})]
        for tid, d in self._described.items():
            if tid in leaves:
                parts.append(encode_event(d, _summary_only))
        parts += [encode_event(a, _summary_only) for a in self._accumulators.values()]
        return b"".join(parts)

    def _compact(self):
        if self._path is None:
            self._compact_floor = math.inf  # a file object cannot be rewritten: the note at the end says so
            return
        keep = int(self._budget * COMPACT_TO)
        cut = None
        for offset, iteration, before in self._starts:
            if self.size - offset <= keep:
                cut = (offset, iteration, before)
                break
        if cut is None and self._starts and self._starts[-1][0] > self._starts[0][0]:
            cut = self._starts[-1]  # only the running iteration left to keep: keep it whole
        if cut is None or cut[0] == self._starts[0][0]:  # nothing but the first iteration's start would go
            self._compact_floor = self.size + self._budget // 4  # cannot help now: try again later
            return
        offset, iteration, before = cut
        first_dropped = self.dropped_iterations[0] if self.dropped_iterations else self._starts[0][1]
        self.dropped_iterations = (first_dropped, iteration - 1)
        self.events_dropped = before
        pre = self._preamble(iteration, before)
        self._f.flush()
        tmp = self._path + ".compacting"
        with open(self._path, "rb") as old, open(tmp, "wb") as new:
            new.write(pre)
            old.seek(offset)
            while True:
                chunk = old.read(1 << 20)
                if not chunk:
                    break
                new.write(chunk)
        self._f.close()
        os.replace(tmp, self._path)
        self._f = open(self._path, "ab")  # noqa: SIM115 (closed by close())
        shift = len(pre) - offset
        self.size += shift
        self._starts = [(o + shift, i, b) for o, i, b in self._starts if o >= offset]
        self._array_marks = [(o + shift, n) for o, n in self._array_marks if o >= offset]
        self.array_bytes = sum(n for _, n in self._array_marks)
        self.full_iterations = {i for i in self.full_iterations if i >= iteration}
        if self.size + self._waiting_bytes() > self._limit():
            self._compact_floor = self.size + self._budget // 4

    def flush(self):
        if not self._closed:
            self._f.flush()

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._budget is not None:
            for i in sorted(self._waiting):
                if i > self.iteration - self.policy.last:
                    self._flush_waiting(i)
                else:
                    self._drop_waiting(i)
        self._write(encode_note(self.end_note()))
        self._f.flush()
        if self._path is not None:
            self._f.close()

    def end_note(self):
        return {"note": "end", "full_iterations": to_ranges(self.full_iterations), "iterations": self._seen,
                "arrays_over_budget": self.over_budget, "events": self.events,
                "events_dropped": self.events_dropped, "file_bytes": self.size}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _summary_only(value):
    return SUMMARY_ONLY
