"""The event budget (issue 13, item 12): a bound on a trace's memory whatever the run's length. Past
``Trace.event_budget`` events held in detail, the oldest whole iterations are forgotten, down to
three quarters of the budget (so it runs once every quarter of it, at an iteration's start):

- their events become ``FORGOTTEN`` (one shared object) in ``trace.events``: positions stay valid;
- their graph nodes go, with ``nodes``, ``born`` and the other indexes' entries, except those a
  kept node still reaches (a parameter's AccumulateGrad, a tensor made once before the loop);
- tensors last described in them that the graph no longer shows go from ``tensors``;
- their backward passes stay in ``passes`` (places stay valid) as ``ForgottenPass`` stubs: no
  order, no per-node gradients, only each tensor's ``.grad`` after the pass (a slim summary: its
  norm), which is what the norm-over-iterations plot and the zero-gradient streaks read;
- their full arrays leave the ValueStore.
"""
from __future__ import annotations

import bisect
from types import MappingProxyType

KEEP = 3 / 4  # of the budget, after forgetting


class Forgotten:
    """What stands in ``Trace.events`` for an event of a forgotten iteration (one shared object), so
    that every position stays what it was."""

    __slots__ = ()

    def __repr__(self):
        return "FORGOTTEN"


FORGOTTEN = Forgotten()


_EMPTY = MappingProxyType({})


class ForgottenPass:
    """A forgotten iteration's backward pass in ``Trace.passes``: what a ``Pass`` says, less its
    order and per-node gradients (empty, read-only); ``accumulated`` keeps each tensor's ``.grad``
    after it (no contribution), whose slim summary the norm history reads."""

    __slots__ = ("index", "iteration", "roots", "finished", "accumulated")
    order: tuple = ()
    grad_outputs = grad_inputs = synchronized = _EMPTY
    planned = None
    buckets: tuple = ()
    forgotten = True

    def __init__(self, index, iteration, roots, finished, accumulated):
        self.index, self.iteration, self.roots, self.finished = index, iteration, roots, finished
        self.accumulated = accumulated

    def __repr__(self):
        return f"ForgottenPass(index={self.index}, iteration={self.iteration})"


def forget_older(trace, values_of, slim):
    """Forget the oldest whole iterations so that at most ``KEEP`` of ``trace.event_budget`` events
    stay in detail (all but the current iteration if it alone is more). ``values_of(event)`` gives
    an event's values, ``slim(summary)`` a summary's slim form (gradviz.trace.model's)."""
    starts = trace._starts
    n = len(trace.events)
    i = bisect.bisect_left(starts, (n - int(trace.event_budget * KEEP), -1))
    i = min(i, len(starts) - 1)  # the current iteration is never forgotten
    if i <= 0 or starts[i][0] <= trace.forgotten_before:
        return
    end, first_kept = starts[i]
    del starts[:i]
    _forget_events(trace, end, values_of)
    _forget_graph(trace, end)
    _forget_passes(trace, first_kept, slim)
    trace.forgotten_before = end
    trace.forgotten_iterations = max(trace.forgotten_iterations, first_kept)
    if trace.slim_before < end:  # (the slim summaries' bound: nothing left to make slim before end)
        trace.slim_before = end
        slim_starts = trace._iteration_starts
        del slim_starts[:bisect.bisect_left(slim_starts, end)]


def _forget_events(trace, end, values_of):
    events, values = trace.events, trace.values
    for k in range(trace.forgotten_before, end):
        for v in values_of(events[k]):
            if v is not None and v.array is not None:
                values.discard(v)
        events[k] = FORGOTTEN


def _forget_graph(trace, end):
    g, born = trace.graph, trace.born
    # What a kept node reaches stays (edges go from a node to the next ones, towards the leaves).
    seen = [key for key, position in born.items() if position >= end and key in g]
    reached = set(seen)
    while seen:
        key = seen.pop()
        for nxt in g.successors(key):
            if nxt not in reached:
                reached.add(nxt)
                seen.append(nxt)
    gone = [key for key in g if key not in reached]
    g.remove_nodes_from(gone)
    gone_nodes = {int(key[1:]) for key in gone if key[0] == "n"}
    for key in gone:
        born.pop(key, None)
    for nid in gone_nodes:
        trace.nodes.pop(nid, None)
        trace._entered_in.pop(nid, None)
    for it in list(trace.iteration_nodes):
        kept = [k for k in trace.iteration_nodes[it] if k in g]
        if kept:
            trace.iteration_nodes[it] = kept
        else:
            del trace.iteration_nodes[it]
    for tid in [tid for tid, nid in trace._made_by.items() if nid in gone_nodes]:
        del trace._made_by[tid]
    for sig in list(trace._peers):
        ids = [m for m in trace._peers[sig] if m not in gone_nodes]
        if ids:
            trace._peers[sig] = ids
        else:
            del trace._peers[sig]
    for tid in [tid for tid, position in trace._described_at.items() if position < end and f"t{tid}" not in g]:
        del trace._described_at[tid]
        trace.tensors.pop(tid, None)
        trace._tensor_rank.pop(tid, None)
        trace._accumulated_in.pop(tid, None)


def _forget_passes(trace, first_kept, slim):
    passes, tensors, values = trace.passes, trace.tensors, trace.values
    for j, p in enumerate(passes):
        if p.iteration >= first_kept or p.forgotten:
            continue
        accumulated = {}
        for tid, (_, grad) in p.accumulated.items():
            if tid in tensors and grad is not None:
                if grad.array is not None:
                    values.discard(grad)
                grad.summary = slim(grad.summary)
                accumulated[tid] = (None, grad)
        passes[j] = ForgottenPass(p.index, p.iteration, p.roots, p.finished, accumulated)
