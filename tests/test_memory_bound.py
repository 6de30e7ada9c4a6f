"""Issue 13, item 12: the parent's memory is bounded beyond the arrays' bytes: each kept array counts
its Python objects too, and older iterations' values keep slim summaries past ``detail_events``."""
import contextlib
import io
import math

import numpy as np

import gradviz
import gradviz.engine as torch
from gradviz.app.state import AppState
from gradviz.summary import HIST_BINS
from gradviz.trace.gvz import values_of
from gradviz.trace.model import ARRAY_OVERHEAD, Trace, is_slim


def _events(iterations):
    with contextlib.redirect_stdout(io.StringIO()), gradviz.record() as rec:
        w = torch.tensor([1., 2., 3.], requires_grad=True)
        b = torch.tensor([0.5], requires_grad=True)
        for _ in range(iterations):
            loss = ((w * 2 + b) ** 2).sum()
            loss.backward()
            w.grad = None
            b.grad = None
    return rec.trace.events


def _summaries(events):
    return [[None if v is None else v.summary for v in values_of(e)] for e in events]


def test_many_small_arrays_are_bounded_by_their_objects_too():
    events = _events(30)

    def with_arrays():
        return {id(v): v for e in events for v in values_of(e) if v is not None and v.array is not None}
    arrays = len(with_arrays())
    budget = 4096
    assert sum(v.array.nbytes for v in with_arrays().values()) < budget  # by their bytes alone, all fit
    t = Trace(budget)
    t.extend(events)
    kept = len(with_arrays())
    assert t.values.stored_bytes <= budget
    assert budget // (ARRAY_OVERHEAD + 12) <= kept <= budget // (ARRAY_OVERHEAD + 4)  # (3- and 1-element arrays)
    assert t.values.dropped == arrays - kept > 0
    assert t.dropped_brief() == f"{arrays - kept} oldest arrays dropped (memory budget)"


def test_older_iterations_keep_slim_summaries_past_the_detail_bound():
    events = _events(40)
    whole = [[None if s is None else (s.norm, s.min, s.max, s.nan, s.inf, s.shape, s.numel, s.mean, s.hist)
              for s in row] for row in _summaries(events)]
    per = len(events) // 40
    t = Trace(detail_events=10 * per)
    t.extend(events)
    first = t.slim_iterations()
    assert 20 <= first <= 40 - 10 and t.slim_before == next(
        k for k, e in enumerate(t.events) if type(e).__name__ == "IterationStarted" and e.index == first)
    for k, row in enumerate(_summaries(t.events)):
        for s, w in zip(row, whole[k]):
            if s is None:
                continue
            assert (s.norm, s.min, s.max, s.nan, s.inf, s.shape, s.numel) == w[:7]  # what plots and labels read
            if k < t.slim_before:
                assert is_slim(s) and math.isnan(s.mean) and s.hist == (0,) * HIST_BINS
                assert all(v.array is None for v in values_of(t.events[k]) if v is not None)
            else:
                assert not is_slim(s) and s.mean == w[7] and s.hist == w[8]
    assert t.values.discarded > 0 and t.values.dropped == 0  # (not the memory budget's doing)
    assert any(v.array is not None for e in t.events[t.slim_before:] for v in values_of(e) if v is not None)
    # the norm history of a parameter is whole from the first iteration
    hist = t.grad_history("w")
    assert len(hist) == 40 and all(np.isfinite(v.summary.norm) for _, v in hist)
    line = t.dropped_lines()[0]
    assert line.startswith(f"iterations before {first} keep slim summaries (shape, min, max, norm, NaN and Inf")
    assert line.endswith(f"whole ones for the latest {10 * per:,} events")
    assert t.dropped_brief() == f"slim summaries before iteration {first} (memory bound)"
    assert AppState(trace=t).status_text().endswith(" · " + t.dropped_brief())


def test_a_short_run_keeps_every_summary_whole():
    t = Trace()
    t.extend(_events(5))
    assert t.slim_before == 0 and t.dropped_lines() == []
    assert not any(is_slim(v.summary) for e in t.events for v in values_of(e) if v is not None)
