"""The event budget (issue 13, item 12): a bound on a trace's memory whatever the run's length. Past
``Trace.event_budget`` events held in detail, the oldest whole iterations are forgotten, one a
step (``forget_step``), at most ``STEPS_PER_ITERATION`` steps at each iteration's start, so that no
step is longer than one iteration's worth of work, whatever the budget (issue 13, item 13: no long
pause in the reader thread); with two a start, the events held come back under the budget even
when later iterations are longer than the first ones:

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
from array import array
from collections.abc import Mapping
from types import MappingProxyType

from gradviz.events import TensorDescribed, Value
from gradviz.summary import Summary


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
    after it (no contribution), whose slim summary the norm history reads (a ``SlimGrads``)."""

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


STEPS_PER_ITERATION = 2  # forgetting steps at most, at an iteration's start, while over the budget


class SlimGrads(Mapping):
    """A forgotten pass's ``accumulated``: tensor id -> (None, its ``.grad`` after the pass), read-
    only, in the order the pass gave them, held as two flat arrays rather than a dict of Values
    (about 64 bytes a tensor instead of 420: what stays of each forgotten iteration). Each lookup
    makes a new Value whose slim summary equals the one forgotten (shape, dtype, numel, min, max,
    norm, NaN and Inf counts)."""

    __slots__ = ("_ids", "_rows", "_kinds")
    _WIDTH = 7  # kind, numel, min, max, norm, nan, inf

    def __init__(self, grads, kinds, table):
        """``grads``: [(tensor id, slim summary)]; ``kinds``: the trace's list of template slim
        summaries, one per (shape, dtype, sampled), ``table`` its index."""
        self._ids = array("q")
        self._rows = array("d")
        self._kinds = kinds
        for tid, s in grads:
            key = (s.shape, s.dtype, s.sampled)
            kind = table.get(key)
            if kind is None:
                kind = table[key] = len(kinds)
                kinds.append(s)
            self._ids.append(tid)
            self._rows.extend((kind, s.numel, s.min, s.max, s.norm, s.nan, s.inf))

    def __len__(self):
        return len(self._ids)

    def __iter__(self):
        return iter(self._ids.tolist())

    def __contains__(self, tid):
        return tid in self._ids

    def __getitem__(self, tid):
        try:
            i = self._ids.index(tid) * self._WIDTH
        except ValueError:
            raise KeyError(tid) from None
        kind, numel, mn, mx, norm, nan, inf = self._rows[i:i + self._WIDTH]
        t = self._kinds[int(kind)]
        return None, Value(Summary(t.shape, t.dtype, int(numel), mn, mx, t.mean, t.std, norm, int(nan), int(inf),
                                   t.hist, t.hist_lo, t.hist_hi, t.sampled, t.mean_abs, t.zeros))

    def __repr__(self):
        return f"SlimGrads({len(self)} tensors)"


def forget_step(trace, values_of, slim, signature):
    """Forget the oldest iteration still held in detail (one, with what came before it), never the
    current one. ``values_of(event)`` gives an event's values, ``slim(summary)`` a summary's slim
    form, ``signature(node_created)`` a node's peer signature (gradviz.trace.model's). Returns
    how many events were forgotten (0: none could be).

    Its work is proportional to what it forgets (that iteration's events, nodes, tensors and
    passes) plus what older iterations left behind that is still kept (a parameter's
    AccumulateGrad, a tensor made before the loop), never to the iterations kept."""
    starts = trace._starts
    if len(starts) < 2:  # the current iteration is never forgotten
        return 0
    end, first_kept = starts[1]
    begin = trace.forgotten_before
    del starts[0]
    described = _forget_events(trace, begin, end, values_of)
    _forget_graph(trace, end, first_kept, described, signature)
    _forget_passes(trace, first_kept, slim)
    trace.forgotten_before = end
    trace.forgotten_iterations = max(trace.forgotten_iterations, first_kept)
    if trace.slim_before < end:  # (the slim summaries' bound: nothing left to make slim before end)
        trace.slim_before = end
        slim_starts = trace._iteration_starts
        del slim_starts[:bisect.bisect_left(slim_starts, end)]
    return end - begin


def _forget_events(trace, begin, end, values_of):
    """The events of [begin, end) become FORGOTTEN; returns the ids of the tensors they described."""
    events, values = trace.events, trace.values
    described = set()
    for k in range(begin, end):
        e = events[k]
        if type(e) is TensorDescribed:
            described.add(e.id)
        for v in values_of(e):
            if v is not None and v.array is not None:
                values.discard(v)
        events[k] = FORGOTTEN
    return described


def _forget_graph(trace, end, first_kept, described, signature):
    g, born = trace.graph, trace.born
    # The candidates: every graph key born before end (born is in the order of positions: those
    # an older forgetting kept come first, then the forgotten iteration's). What a node born from
    # end on reaches stays (edges go from a node to the next ones, towards the leaves).
    old = []
    for key, position in born.items():
        if position >= end:
            break
        if key in g:
            old.append(key)
    candidates = set(old)
    seen = [key for key in old if any(prev not in candidates for prev in g.predecessors(key))]
    reached = set(seen)
    while seen:
        key = seen.pop()
        for nxt in g.successors(key):
            if nxt in candidates and nxt not in reached:
                reached.add(nxt)
                seen.append(nxt)
    gone = [key for key in old if key not in reached]
    gone_nodes = [int(key[1:]) for key in gone if key[0] == "n"]
    gone_set = set(gone_nodes)
    nodes = trace.nodes
    by_signature: dict = {}
    for nid in gone_nodes:
        e = nodes.get(nid)
        if e is None:
            continue
        if trace._made_by.get(e.output) == nid:
            del trace._made_by[e.output]
        if e.kind == "grad_fn":
            sig = signature(e)
            by_signature[sig] = by_signature.get(sig, 0) + 1
    for sig, count in by_signature.items():
        _drop_ids(trace._peers, sig, gone_set, count)
    g.remove_nodes_from(gone)
    for key in gone:
        born.pop(key, None)
    for nid in gone_nodes:
        nodes.pop(nid, None)
        trace._entered_in.pop(nid, None)
    # The iterations before first_kept come first in iteration_nodes (an iteration's nodes are
    # listed when it runs); those an older forgetting kept some nodes of stay listed.
    its = trace.iteration_nodes
    older = []
    for it in its:
        if it >= first_kept:
            break
        older.append(it)
    for it in older:
        kept = [k for k in its[it] if k in g]
        if kept:
            its[it] = kept
        else:
            del its[it]
    tids = described | {int(key[1:]) for key in gone if key[0] == "t"}
    for tid in tids:
        position = trace._described_at.get(tid)
        if position is not None and position < end and f"t{tid}" not in g:
            del trace._described_at[tid]
            trace.tensors.pop(tid, None)
            trace._tensor_rank.pop(tid, None)
            trace._accumulated_in.pop(tid, None)


def _drop_ids(peers, sig, gone, count):
    """Take the ``count`` ids of ``gone`` out of ``peers[sig]`` (in creation order: the oldest,
    those forgotten, come first, unless an older kept one stands ahead of them)."""
    ids = peers.get(sig)
    if ids is None:
        return
    i = 0
    while i < len(ids) and ids[i] in gone:
        i += 1
    del ids[:i]
    if i < count:
        ids[:] = [m for m in ids if m not in gone]
    if not ids:
        del peers[sig]


def _forget_passes(trace, first_kept, slim):
    """The passes of the iterations before first_kept become ForgottenPass stubs: from the first
    one not yet forgotten (passes are in the order they started), up to the first kept one."""
    passes, tensors, values = trace.passes, trace.tensors, trace.values
    j = trace._passes_forgotten
    while j < len(passes) and (passes[j].forgotten or passes[j].iteration < first_kept):
        p = passes[j]
        if not p.forgotten:
            grads = []
            for tid, (_, grad) in p.accumulated.items():
                if tid in tensors and grad is not None:
                    if grad.array is not None:
                        values.discard(grad)
                    grads.append((tid, slim(grad.summary)))
            accumulated = SlimGrads(grads, trace._grad_kinds, trace._grad_kind_of)
            passes[j] = ForgottenPass(p.index, p.iteration, p.roots, p.finished, accumulated)
        j += 1
    trace._passes_forgotten = j
